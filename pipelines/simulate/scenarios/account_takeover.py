"""Account takeover: an old account; a burst of failed logins, then a login from a new device
in another country (sometimes through a datacenter proxy), and high-value purchases within
minutes; a third of the attackers come back a few hours later to buy again.

The owner's own visit a few days earlier is added too, so that every victim has a usual device
and country to differ from. Victims are never new accounts and keep a minimum of normal
activity (an account worth taking over is in use).
"""
from __future__ import annotations

import numpy as np

from pipelines.simulate.world import CART, COUNTRIES, LOGIN, LOGIN_FAILED, PURCHASE, VIEW, Scenario, World, to_us


def generate(w: World, m: np.ndarray) -> None:
    rng = w.rng
    n = len(m)
    C = len(COUNTRIES)
    a_ctry = (w.country[m] + rng.integers(1, C, n)) % C
    a_dev = w.new_devices(n)
    a_ip, _ = w.new_ips(a_ctry)
    dc = np.flatnonzero(rng.random(n) < 0.3)  # some attackers come through a datacenter proxy abroad
    if len(dc):
        dc_ip, dc_ctry = w.new_ips(n=len(dc))
        abroad = dc_ctry != w.country[m[dc]]
        a_ip[dc[abroad]], a_ctry[dc[abroad]] = dc_ip[abroad], dc_ctry[abroad]
    q = w.q[m]
    # first attacker session on the takeover day, an optional second one hours later
    second = rng.random(n) < 0.35
    who = np.concatenate([np.arange(n), np.flatnonzero(second)])
    is2 = np.r_[np.zeros(n, bool), np.ones(int(second.sum()), bool)]
    t_first = w.any_time(w.day0[m])
    start = t_first[who] + np.where(is2, to_us(w.lognormal_s(3 * 3600.0, 0.6, len(who))), 0)
    k = len(who)
    u, dev, ip, ctry = m[who], a_dev[who], a_ip[who], a_ctry[who]
    sess = w.new_sessions(k)
    w.add_sessions(sess, u, start, dev, ip, ctry)
    n_lf = np.where(is2, 0, 1 + rng.poisson(4.0 * q[who]))
    one = np.ones(k, dtype=np.int64)
    n_view = rng.poisson(1.5, k)
    n_buy = np.where(is2, 1 + rng.poisson(q[who]), 1 + rng.poisson(1.5 * q[who]))
    (fp, ft), (lp, lt), (vp, vt), (pp, pt) = w.script(
        start, [(n_lf, 4.0, 0.5), (one, 6.0, 0.5), (n_view, 15.0, 0.7), (n_buy, 50.0, 0.6)]
    )
    w.add(ft, u[fp], LOGIN_FAILED, sess=sess[fp], dev=dev[fp], ip=ip[fp], ctry=ctry[fp])
    w.add(lt, u[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
    w.add(vt, u[vp], VIEW, sess=sess[vp], prod=w.pick_from_pool(w.pool_pricey, len(vp)), dev=dev[vp], ip=ip[vp], ctry=ctry[vp])
    prod = w.pick_from_pool(w.pool_luxury, len(pp))
    qty = np.where(rng.random(len(pp)) < 0.7, 1, 2 + (rng.random(len(pp)) < 0.3)).astype(np.int16)
    w.add(pt - to_us(w.lognormal_s(10.0, 0.4, len(pp))), u[pp], CART, sess=sess[pp], prod=prod, qty=qty,
          dev=dev[pp], ip=ip[pp], ctry=ctry[pp])
    w.add(pt, u[pp], PURCHASE, sess=sess[pp], prod=prod, qty=qty, dev=dev[pp], ip=ip[pp], ctry=ctry[pp])
    # the owner's own visit a few days earlier, so every victim has its usual device and country
    day = np.maximum(w.day0[m] - rng.integers(1, 6, n), 0)
    start = w.local_start(day, w.country[m], w.chrono[m])
    dev, ip, ctry = w.dev_base[m, 0], w.ip_base[m, 0], w.country[m]
    sess = w.new_sessions(n)
    w.add_sessions(sess, m, start, dev, ip, ctry)
    (lp, lt), (vp, vt) = w.script(start, [(np.ones(n, np.int64), 3.0, 0.5), (1 + rng.poisson(4.0, n), 25.0, 0.9)])
    w.add(lt, m[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
    w.add(vt, m[vp], VIEW, sess=sess[vp], prod=w.popular_products(len(vp)), dev=dev[vp], ip=ip[vp], ctry=ctry[vp])


SCENARIO = Scenario("account_takeover", generate, p_new_account=0.0, min_background_rate=0.15)
