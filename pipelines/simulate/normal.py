"""Normal shoppers: the everyday activity of every user, abusers included (their background).

Heterogeneous on purpose: lognormal activity (a few heavy users produce a large share of the
events), Zipf product popularity with a favourite category per user, a daily cycle in local
time and a weekly cycle, gamma-bursty days, sessions with optional (rarely failed) login,
views, carts, removals, purchases, rare failed payments, later refunds and reviews. Lookalikes
of the abuse signatures are normal too: power users with very many views, travellers abroad,
users who switch to a new device, heavy refunders, heavy reviewers, and (payment_trouble) a
session with a burst of declined cards.

A scenario can change its abusers' background through its Scenario fields background_rate,
min_background_rate and background_buys (see pipelines.simulate.world.Scenario).
"""
from __future__ import annotations

import math

import numpy as np

from pipelines.simulate.world import (
    CART, CATEGORIES, COUNTRIES, LOGIN, LOGIN_FAILED, PAY_FAILED, PURCHASE, REMOVE, REVIEW, SECOND, VIEW, WEEKLY,
    World, expand, group_rank, to_us,
)


def background(w: World) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user: the factor on the normal session rate, its floor, and whether the user's
    normal activity may cart and buy (1.0, 0.0 and True for normal users)."""
    idx = w.atype + 1
    factor = np.array([1.0] + [s.background_rate for s in w.scenarios])[idx]
    floor = np.array([0.0] + [s.min_background_rate for s in w.scenarios])[idx]
    buys = np.array([True] + [s.background_buys for s in w.scenarios])[idx]
    return factor, floor, buys


def shoppers(w: World) -> None:
    """The normal activity of every user (abusers included, as their background), then the
    normal lookalike of card testing (payment_trouble)."""
    rng, U, D = w.rng, w.U, w.D
    rate_factor, rate_floor, buys = background(w)
    rate = np.exp(rng.normal(math.log(0.2), 1.0, U))
    power = rng.random(U) < 0.02
    rate = rate * np.where(power, 3.0, 1.0) * rate_factor
    rate = np.maximum(rate, rate_floor)
    view_mean = np.exp(rng.normal(math.log(4.0), 0.55, U)) * np.where(power, 5.0, 1.0)
    p_cart = rng.beta(2.0, 26.0, U)
    p_cart[~buys] = 0.0
    p_buy = rng.beta(3.0, 4.0, U)
    p_login = rng.beta(2.0, 3.0, U)
    p_refund = rng.beta(1.2, 40.0, U)
    heavy_ref = rng.random(U) < 0.02
    p_refund[heavy_ref] = rng.uniform(0.15, 0.5, int(heavy_ref.sum()))
    p_review = rng.beta(1.0, 11.0, U)
    fav_cat = rng.integers(0, len(CATEGORIES), U)
    # travellers, device switchers, failed-payment bursts
    trip_start = np.where(rng.random(U) < 0.04, rng.integers(0, D, U), D + 1)
    trip_end = trip_start + rng.integers(2, 7, U)
    trip_ctry = (w.country + rng.integers(1, len(COUNTRIES), U)) % len(COUNTRIES)
    trav = np.flatnonzero(trip_start <= D)
    trip_ip = np.full(U, -1, dtype=np.int64)
    trip_ip[trav] = w.new_ips(trip_ctry[trav])[0]
    switch_day = np.where(rng.random(U) < 0.03, rng.integers(1, max(D, 2), U), D + 1)
    sw = np.flatnonzero(switch_day <= D)
    switch_dev = np.full(U, -1, dtype=np.int64)
    switch_dev[sw] = w.new_devices(len(sw))

    # sessions per user-day: Poisson with a gamma day effect (bursty days), after signup only
    lam = rng.gamma(0.8, 1.0 / 0.8, (U, D))
    lam *= rate[:, None]
    lam *= WEEKLY[w.dow][None, :]
    lam *= np.arange(D)[None, :] >= w.signup_day[:, None]
    counts = rng.poisson(lam).ravel()
    del lam
    nz = np.flatnonzero(counts)
    ud = np.repeat(nz, counts[nz])
    del counts, nz
    su = (ud // D).astype(np.int64)
    sd = (ud % D).astype(np.int64)
    del ud
    S = len(su)
    on_trip = (sd >= trip_start[su]) & (sd < trip_end[su])
    s_ctry = np.where(on_trip, trip_ctry[su], w.country[su])
    r = rng.random(S)
    slot = np.minimum((r > 0.62).astype(np.int64) + (r > 0.88), w.n_devices[su] - 1)
    s_dev = w.dev_base[su, slot]
    s_dev = np.where((sd >= switch_day[su]) & (slot == 0), switch_dev[su], s_dev)
    r = rng.random(S)
    islot = np.minimum((r * r * 4).astype(np.int64), w.n_ips[su] - 1)
    s_ip = np.where(on_trip, trip_ip[su], w.ip_base[su, islot])
    s_t = w.local_start(sd, s_ctry, w.chrono[su])
    s_id = w.new_sessions(S)
    w.add_sessions(s_id, su, s_t, s_dev, s_ip, s_ctry)

    # login (rarely preceded by failures)
    has_login = rng.random(S) < p_login[su]
    n_lf = np.where(has_login & (rng.random(S) < 0.035), rng.geometric(0.6, S), 0)
    li = np.flatnonzero(has_login)
    w.add(s_t[li], su[li], LOGIN, sess=s_id[li], dev=s_dev[li], ip=s_ip[li], ctry=s_ctry[li])
    par, within = expand(n_lf)
    t_lf = s_t[par] - to_us((within + 1) * w.lognormal_s(12.0, 0.6, len(par)))
    w.add(t_lf, su[par], LOGIN_FAILED, sess=s_id[par], dev=s_dev[par], ip=s_ip[par], ctry=s_ctry[par])
    del has_login, n_lf, li, par, within, t_lf

    # views
    n_view = 1 + rng.poisson(view_mean[su] * rng.gamma(2.0, 0.5, S))
    n_view = np.minimum(n_view, 400)
    v_sess = np.repeat(np.arange(S, dtype=np.int64), n_view)
    V = len(v_sess)
    gaps = to_us(np.clip(w.lognormal_s(22.0, 1.0, V), 1.0, 1800.0))
    cum = np.cumsum(gaps)
    del gaps
    first = np.cumsum(n_view) - n_view
    before = np.concatenate([[0], cum])[first]
    v_t = np.repeat(s_t - before, n_view) + cum
    del cum, before
    s_end = v_t[first + n_view - 1]
    vu = su[v_sess]
    in_fav = rng.random(V) < 0.45
    v_prod = w.popular_products(V)
    fi = np.flatnonzero(in_fav)
    v_prod[fi] = w.products_in_category(fav_cat[vu[fi]])
    del in_fav, fi
    w.add(v_t, vu, VIEW, sess=s_id[v_sess], prod=v_prod, dev=s_dev[v_sess], ip=s_ip[v_sess], ctry=s_ctry[v_sess])

    # carts, removals, purchases, failed payments
    ci = np.flatnonzero(rng.random(V) < p_cart[vu] * w.cart_mult[v_prod])
    del vu
    c_sess = v_sess[ci]
    c_prod = v_prod[ci]
    c_t = v_t[ci] + to_us(w.lognormal_s(15.0, 0.7, len(ci)))
    del v_sess, v_prod, v_t, ci
    C = len(c_sess)
    c_qty = w.qty(C)
    cu = su[c_sess]
    w.add(c_t, cu, CART, sess=s_id[c_sess], prod=c_prod, qty=c_qty, dev=s_dev[c_sess], ip=s_ip[c_sess], ctry=s_ctry[c_sess])
    rm = rng.random(C) < 0.15
    ri = np.flatnonzero(rm)
    rs = c_sess[ri]
    rm_t = c_t[ri] + (rng.random(len(ri)) * np.maximum(s_end[rs] - c_t[ri], 0)).astype(np.int64) + 5 * SECOND
    w.add(rm_t, cu[ri], REMOVE, sess=s_id[rs], prod=c_prod[ri], qty=c_qty[ri], dev=s_dev[rs], ip=s_ip[rs], ctry=s_ctry[rs])
    kept = ~rm
    has_kept = np.bincount(c_sess[kept], minlength=S) > 0
    buy = has_kept & (rng.random(S) < p_buy[su])
    last_cart = s_end.copy()
    np.maximum.at(last_cart, c_sess, c_t)
    checkout = np.maximum(last_cart, s_end) + 20 * SECOND + to_us(w.lognormal_s(60.0, 0.6, S))
    pi = np.flatnonzero(kept & buy[c_sess])
    p_sess = c_sess[pi]
    p_prod = c_prod[pi]
    p_qty = c_qty[pi]
    p_t = checkout[p_sess] + group_rank(p_sess) * 2 * SECOND + (rng.random(len(pi)) * SECOND).astype(np.int64)
    pu = su[p_sess]
    w.add(p_t, pu, PURCHASE, sess=s_id[p_sess], prod=p_prod, qty=p_qty, dev=s_dev[p_sess], ip=s_ip[p_sess], ctry=s_ctry[p_sess])
    ki = np.flatnonzero(kept)
    ks = c_sess[ki]
    fk = ki[np.r_[True, ks[1:] != ks[:-1]]] if len(ki) else ki
    first_prod = np.full(S, -1, dtype=np.int64)
    first_prod[c_sess[fk]] = c_prod[fk]
    n_pf = (buy & (rng.random(S) < 0.02)) | (has_kept & ~buy & (rng.random(S) < 0.012))
    n_pf = n_pf.astype(np.int64)
    par, within = expand(n_pf)
    t_pf = checkout[par] - to_us((within + 1) * w.lognormal_s(25.0, 0.5, len(par)))
    w.add(t_pf, su[par], PAY_FAILED, sess=s_id[par], prod=first_prod[par], qty=1, dev=s_dev[par], ip=s_ip[par], ctry=s_ctry[par])
    del c_sess, c_prod, c_t, c_qty, cu, rm, kept, par, within

    # refunds and reviews of those purchases (days later, outside a session)
    w.after_purchase(p_t, pu, p_prod, p_qty, p_refund[pu], 4 * 24 * 3600.0, 0.6, p_review[pu])

    # reviews of purchases made before the window (old accounts), heavy reviewers
    heavy_rev = rng.random(U) < 0.01
    rev_rate = np.where(w.signup_day < 0, 0.1, 0.0) * np.where(heavy_rev, 20.0, 1.0) * D / 28.0
    n_or = rng.poisson(rev_rate)
    par = np.repeat(np.arange(U), n_or)
    day = rng.integers(0, D, len(par))
    t = w.local_start(day, w.country[par], w.chrono[par])
    rating = np.where(heavy_rev[par], w.ratings(len(par), np.array([0.02, 0.02, 0.06, 0.25, 0.65])), w.ratings(len(par)))
    w.add(t, par, REVIEW, prod=w.popular_products(len(par)), dev=w.dev_base[par, 0], ip=w.ip_base[par, 0],
          ctry=w.country[par], rating=rating, text=w.texts(rating))
    payment_trouble(w)


def payment_trouble(w: World) -> None:
    """Normal lookalike of card testing: a few users have one session where their card is
    declined several times (retyped, another card) before a purchase goes through, or not."""
    rng, U, D = w.rng, w.U, w.D
    _, _, buys = background(w)  # accounts whose background never buys (bots) are left out
    u = np.flatnonzero((rng.random(U) < 0.02) & buys)
    if len(u) == 0:
        return
    n = len(u)
    day = np.maximum(rng.integers(0, D, n), w.signup_day[u])
    start = w.local_start(day, w.country[u], w.chrono[u])
    dev, ip, ctry = w.dev_base[u, 0], w.ip_base[u, 0], w.country[u]
    sess = w.new_sessions(n)
    w.add_sessions(sess, u, start, dev, ip, ctry)
    one = np.ones(n, dtype=np.int64)
    n_view = 1 + rng.poisson(3.0, n)
    n_pf = 1 + rng.poisson(np.exp(rng.normal(math.log(2.0), 0.8, n)))
    n_buy = (rng.random(n) < 0.6).astype(np.int64)
    (lp, lt), (vp, vt), (cp, ct), (fp, ft), (pp, pt) = w.script(
        start, [(one, 3.0, 0.5), (n_view, 25.0, 0.9), (one, 15.0, 0.6), (n_pf, 30.0, 0.7), (n_buy, 40.0, 0.6)]
    )
    prod = w.popular_products(n)
    v_prod = np.where(group_rank(vp) == n_view[vp] - 1, prod[vp], w.popular_products(len(vp)))
    w.add(lt, u[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
    w.add(vt, u[vp], VIEW, sess=sess[vp], prod=v_prod, dev=dev[vp], ip=ip[vp], ctry=ctry[vp])
    w.add(ct, u[cp], CART, sess=sess[cp], prod=prod[cp], qty=1, dev=dev[cp], ip=ip[cp], ctry=ctry[cp])
    w.add(ft, u[fp], PAY_FAILED, sess=sess[fp], prod=prod[fp], qty=1, dev=dev[fp], ip=ip[fp], ctry=ctry[fp])
    w.add(pt, u[pp], PURCHASE, sess=sess[pp], prod=prod[pp], qty=1, dev=dev[pp], ip=ip[pp], ctry=ctry[pp])
