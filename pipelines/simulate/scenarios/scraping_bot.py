"""Scraping bots: metronome-regular views of many products at any hour, no purchases.

Each bot has its own device and one to three datacenter IPs, a period of about 8 s between
requests (lognormal per bot, 4 % jitter) and crawls the catalogue in a fixed order from a
random offset, 15-3000 views a run, one to four runs on each of one to three days. The
account's normal background activity is halved and never carts or buys.
"""
from __future__ import annotations

import numpy as np

from pipelines.simulate.world import LOGIN, VIEW, Scenario, World, expand, group_rank


def generate(w: World, m: np.ndarray) -> None:
    rng = w.rng
    nb = len(m)
    b_dev = w.new_devices(nb)
    b_ip = np.full((nb, 3), -1, dtype=np.int64)
    b_ctry = np.full((nb, 3), -1, dtype=np.int64)
    k = rng.integers(1, 4, nb)
    bp, bw = expand(k)
    b_ip[bp, bw], b_ctry[bp, bw] = w.new_ips(n=len(bp))
    period = w.lognormal_s(8.0, 0.6, nb)  # seconds between requests, per bot
    owner, day = w.abuse_days(w.day0[m], 3)
    n_runs = rng.integers(1, 5, len(owner))
    o, _ = expand(n_runs)
    b = owner[o]
    n = len(o)
    start = w.any_time(day[o])  # round the clock, not the local daily cycle
    slot = (rng.random(n) * k[b]).astype(np.int64)
    dev, ip, ctry = b_dev[b], b_ip[b, slot], b_ctry[b, slot]
    uo = m[b]
    sess = w.new_sessions(n)
    w.add_sessions(sess, uo, start, dev, ip, ctry)
    has_login = (rng.random(n) < 0.3).astype(np.int64)
    n_view = np.clip(np.round(w.q[uo] * w.lognormal_s(120.0, 0.7, n)), 15, 3000).astype(np.int64)

    def metronome(parent, within):
        return period[b[parent]] * (1.0 + rng.normal(0.0, 0.04, len(parent)))

    (lp, lt), (vp, vt) = w.script(start, [(has_login, 2.0, 0.3), (n_view, metronome, 0)])
    offset = rng.integers(0, len(w.crawl_order), n)
    prod = w.crawl_order[(offset[vp] + group_rank(vp)) % len(w.crawl_order)]
    w.add(lt, uo[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
    w.add(vt, uo[vp], VIEW, sess=sess[vp], prod=prod, dev=dev[vp], ip=ip[vp], ctry=ctry[vp])


SCENARIO = Scenario("scraping_bot", generate, p_new_account=0.3, background_rate=0.5, background_buys=False)
