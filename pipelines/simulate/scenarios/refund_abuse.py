"""Refund abuse: purchases of pricey items, most of them refunded within about a day.

Per abuser: one to three abuse days, 1 + Poisson(1.5 q) orders a day on the abuser's own
device and home IP, each a browsing session ending in a purchase of a pricey product; each
purchase is refunded with probability 0.45-0.97 (rising with q) after a median of 20 hours.
"""
from __future__ import annotations

import numpy as np

from pipelines.simulate.world import CART, LOGIN, PURCHASE, VIEW, Scenario, World, expand, group_rank


def generate(w: World, m: np.ndarray) -> None:
    rng = w.rng
    owner, day = w.abuse_days(w.day0[m], 3)
    u = m[owner]
    n_orders = 1 + rng.poisson(1.5 * w.q[u])
    o, _ = expand(n_orders)
    uo = u[o]
    n = len(o)
    start = w.local_start(day[o], w.country[uo], w.chrono[uo])
    dev, ip, ctry = w.dev_base[uo, 0], w.ip_base[uo, 0], w.country[uo]
    sess = w.new_sessions(n)
    w.add_sessions(sess, uo, start, dev, ip, ctry)
    has_login = (rng.random(n) < 0.5).astype(np.int64)
    n_view = 1 + rng.poisson(2.0, n)
    one = np.ones(n, dtype=np.int64)
    (lp, lt), (vp, vt), (cp, ct), (pp, pt) = w.script(
        start, [(has_login, 3.0, 0.5), (n_view, 25.0, 0.8), (one, 15.0, 0.6), (one, 60.0, 0.5)]
    )
    prod = w.pick_from_pool(w.pool_pricey, n)
    v_prod = np.where(group_rank(vp) == n_view[vp] - 1, prod[vp], w.popular_products(len(vp)))
    qty = np.where(rng.random(n) < 0.85, 1, 2).astype(np.int16)
    w.add(lt, uo[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
    w.add(vt, uo[vp], VIEW, sess=sess[vp], prod=v_prod, dev=dev[vp], ip=ip[vp], ctry=ctry[vp])
    w.add(ct, uo[cp], CART, sess=sess[cp], prod=prod[cp], qty=qty[cp], dev=dev[cp], ip=ip[cp], ctry=ctry[cp])
    w.add(pt, uo[pp], PURCHASE, sess=sess[pp], prod=prod[pp], qty=qty[pp], dev=dev[pp], ip=ip[pp], ctry=ctry[pp])
    p_ref = np.clip(0.55 + 0.2 * w.q[uo], 0.45, 0.97)
    w.after_purchase(pt, uo, prod, qty, p_ref, 20 * 3600.0, 0.7, np.full(n, 0.05))


SCENARIO = Scenario("refund_abuse", generate, p_new_account=0.15)
