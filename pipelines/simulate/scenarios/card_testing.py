"""Card testing: mostly new accounts; bursts of payment_failed on tiny amounts and a few tiny
purchases, seconds apart, half of the testers rotating through proxy (datacenter) IPs.
"""
from __future__ import annotations

import numpy as np

from pipelines.simulate.world import CART, LOGIN, PAY_FAILED, PURCHASE, VIEW, Scenario, World, expand


def generate(w: World, m: np.ndarray) -> None:
    rng = w.rng
    proxy_ip, proxy_ctry = w.new_ips(n=max(50, len(m) * 4))
    rotate = rng.random(len(m)) < 0.5
    owner, day = w.abuse_days(w.day0[m], 2)
    u = m[owner]
    n_burst = 1 + (rng.random(len(owner)) < 0.4)
    o, _ = expand(n_burst)
    uo = u[o]
    n = len(o)
    start = w.any_time(day[o])
    dev, ip, ctry = w.dev_base[uo, 0], w.ip_base[uo, 0], w.country[uo]
    sess = w.new_sessions(n)
    w.add_sessions(sess, uo, start, dev, ip, ctry)
    q = w.q[uo]
    one = np.ones(n, dtype=np.int64)
    n_f1 = 1 + rng.poisson(4.0 * q)
    n_ok = rng.integers(0, 3, n)
    n_f2 = rng.poisson(3.0 * q)

    def fast(parent, within):
        return w.lognormal_s(5.0, 0.4, len(parent))

    (lp, lt), (vp, vt), (cp, ct), (f1p, f1t), (okp, okt), (f2p, f2t) = w.script(
        start, [(one, 3.0, 0.5), (one, 4.0, 0.5), (one, 4.0, 0.5), (n_f1, fast, 0), (n_ok, fast, 0), (n_f2, fast, 0)]
    )
    target = w.pick_from_pool(w.pool_tiny, n)
    rot = rotate[owner[o]]

    def net(par):
        k = len(par)
        pick = rng.integers(0, len(proxy_ip), k)
        r = rot[par]
        return np.where(r, proxy_ip[pick], ip[par]), np.where(r, proxy_ctry[pick], ctry[par])

    def prod_of(par):
        return np.where(rng.random(len(par)) < 0.3, w.pick_from_pool(w.pool_tiny, len(par)), target[par])

    w.add(lt, uo[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
    w.add(vt, uo[vp], VIEW, sess=sess[vp], prod=target[vp], dev=dev[vp], ip=ip[vp], ctry=ctry[vp])
    w.add(ct, uo[cp], CART, sess=sess[cp], prod=target[cp], qty=1, dev=dev[cp], ip=ip[cp], ctry=ctry[cp])
    for par, t, et in ((f1p, f1t, PAY_FAILED), (okp, okt, PURCHASE), (f2p, f2t, PAY_FAILED)):
        e_ip, e_ctry = net(par)
        w.add(t, uo[par], et, sess=sess[par], prod=prod_of(par), qty=1, dev=dev[par], ip=e_ip, ctry=e_ctry)


SCENARIO = Scenario("card_testing", generate, p_new_account=0.75)
