"""Fake-review rings: rings of accounts sharing devices post 5-star reviews of the ring's
products, with no or very few purchases (a minority of members buy once).

Per member: 1 + Poisson(2.2 q) review sessions on the ring's day or up to two days after,
mostly on a ring device and often the ring's IP, each a view then a review, 88 % of them
5 stars, many with the ring's template texts.
"""
from __future__ import annotations

import numpy as np

from pipelines.simulate.world import CART, LOGIN, PURCHASE, REVIEW, VIEW, Scenario, World, expand, group_rank


def generate(w: World, m: np.ndarray) -> None:
    rng = w.rng
    ring = w.rings[SCENARIO.name]
    nd, devs, ring_ip, ring_ctry, npr, prods = w.ring_assets(ring, (1, 3), w.pool_mid, (2, 5))
    n_rev = 1 + rng.poisson(2.2 * w.q[m])
    o, _ = expand(n_rev)
    uo = m[o]
    ro = ring[o]
    n = len(o)
    # reviews spread over the ring's day and up to two days after
    day = np.minimum(w.day0[uo] + rng.integers(0, 3, n) * (rng.random(n) < 0.5), w.D - 1)
    start = w.local_start(day, w.country[uo], 0.0)
    use_ring = rng.random(n) < 0.8
    dev = np.where(use_ring, devs[ro, (rng.random(n) * nd[ro]).astype(np.int64)], w.dev_base[uo, 0])
    ip = np.where(rng.random(n) < 0.5, ring_ip[ro], w.ip_base[uo, 0])
    ctry = w.country[uo]
    prod = prods[ro, (rng.random(n) * npr[ro]).astype(np.int64)]
    sess = w.new_sessions(n)
    w.add_sessions(sess, uo, start, dev, ip, ctry)
    has_login = (rng.random(n) < 0.7).astype(np.int64)
    # a minority of members buy once (first review session only)
    buys = ((group_rank(o) == 0) & (rng.random(len(m)) < 0.3)[o]).astype(np.int64)
    one = np.ones(n, dtype=np.int64)
    (lp, lt), (vp, vt), (cp, ct), (pp, pt), (rp, rt) = w.script(
        start, [(has_login, 3.0, 0.5), (one, 10.0, 0.6), (buys, 15.0, 0.5), (buys, 40.0, 0.5), (one, 90.0, 0.7)]
    )
    w.add(lt, uo[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
    w.add(vt, uo[vp], VIEW, sess=sess[vp], prod=prod[vp], dev=dev[vp], ip=ip[vp], ctry=ctry[vp])
    w.add(ct, uo[cp], CART, sess=sess[cp], prod=prod[cp], qty=1, dev=dev[cp], ip=ip[cp], ctry=ctry[cp])
    w.add(pt, uo[pp], PURCHASE, sess=sess[pp], prod=prod[pp], qty=1, dev=dev[pp], ip=ip[pp], ctry=ctry[pp])
    rating = np.where(rng.random(len(rp)) < 0.88, 5, 4).astype(np.int8)
    w.add(rt, uo[rp], REVIEW, prod=prod[rp], dev=dev[rp], ip=ip[rp], ctry=ctry[rp], rating=rating,
          text=w.texts(rating, p_none=0.05, p_ring=0.6))


SCENARIO = Scenario("fake_review_ring", generate, p_new_account=0.5, ring_size=(4, 10))
