"""Brushing: rings of accounts that share devices and IPs buy the ring's cheap products over
and over, a few minutes apart, and then mostly post 5-star reviews of them (fake orders that
push a seller's sales and ratings up).

Per member: one to three abuse days from the ring's day on, 1 + Poisson(3 q) orders a day
(q: the abuser's intensity); each order is a short scripted session (optional login, view,
cart, purchase) on a ring device (with a per-member probability) and often the ring's IP;
about three orders in four get a review some hours later.
"""
from __future__ import annotations

import numpy as np

from pipelines.simulate.world import CART, LOGIN, PURCHASE, REVIEW, VIEW, Scenario, World, expand, to_us


def generate(w: World, m: np.ndarray) -> None:
    rng = w.rng
    ring = w.rings[SCENARIO.name]
    nd, devs, ring_ip, ring_ctry, npr, prods = w.ring_assets(ring, (1, 2), w.pool_cheap, (1, 3))
    owner, day = w.abuse_days(w.day0[m], 3)
    u = m[owner]
    n_orders = 1 + rng.poisson(3.0 * w.q[u])
    o, j = expand(n_orders)  # o indexes member-days
    uo = u[o]
    ro = ring[owner[o]]
    # orders of one member-day follow each other a few minutes apart
    base_md = w.local_start(day, w.country[u], 0.0)
    start = base_md[o] + to_us(j * w.lognormal_s(300.0, 0.5, len(o)))
    n = len(o)
    use_ring = rng.random(n) < rng.uniform(0.3, 1.0, len(m))[owner[o]]
    dev = np.where(use_ring, devs[ro, (rng.random(n) * nd[ro]).astype(np.int64)], w.dev_base[uo, 0])
    ip = np.where(rng.random(n) < 0.6, ring_ip[ro], w.ip_base[uo, 0])
    ctry = w.country[uo]
    prod = prods[ro, (rng.random(n) * npr[ro]).astype(np.int64)]
    sess = w.new_sessions(n)
    w.add_sessions(sess, uo, start, dev, ip, ctry)
    has_login = (rng.random(n) < 0.6).astype(np.int64)
    one = np.ones(n, dtype=np.int64)
    steps = w.script(start, [(has_login, 3.0, 0.5), (one, 8.0, 0.6), (one, 12.0, 0.6), (one, 25.0, 0.5)])
    (lp, lt), (vp, vt), (cp, ct), (pp, pt) = steps
    qty = np.where(rng.random(n) < 0.85, 1, 2).astype(np.int16)
    w.add(lt, uo[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
    w.add(vt, uo[vp], VIEW, sess=sess[vp], prod=prod[vp], dev=dev[vp], ip=ip[vp], ctry=ctry[vp])
    w.add(ct, uo[cp], CART, sess=sess[cp], prod=prod[cp], qty=qty[cp], dev=dev[cp], ip=ip[cp], ctry=ctry[cp])
    w.add(pt, uo[pp], PURCHASE, sess=sess[pp], prod=prod[pp], qty=qty[pp], dev=dev[pp], ip=ip[pp], ctry=ctry[pp])
    rating = np.where(rng.random(n) < 0.9, 5, 4).astype(np.int8)
    rng_ = rng.random(n)
    vi = np.flatnonzero(rng_ < 0.75)
    t = pt[vi] + to_us(w.lognormal_s(20 * 3600.0, 0.8, len(vi)))
    w.add(t, uo[vi], REVIEW, prod=prod[vi], dev=dev[vi], ip=ip[vi], ctry=ctry[vi], rating=rating[vi],
          text=w.texts(rating[vi], p_none=0.05, p_ring=0.4))


SCENARIO = Scenario("brushing", generate, p_new_account=0.4, ring_size=(3, 8))
