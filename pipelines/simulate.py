"""Labelled, deterministic, vectorised simulator of e-commerce shopper behaviour.

    events, labels = simulate({"seed": 7, "n_users": 5000})

`events` follows the data contract (shared/contract/README.md section 1) with the dtypes of
`pipelines.schema.EVENT_DTYPES`, one row per event, sorted by `event_time`; `labels` has one row
per simulated user: `user_id`, `is_anomaly` (0/1), `anomaly_type` ("" for normal users).
The same params give byte-identical output; another seed gives another data set.

Parameters (every key is optional; unknown keys are an error, so a typo cannot pass silently):

    seed          int    42            random seed
    n_users       int    20000         simulated accounts, ids u0000000 .. (normal + abusers)
    days          int    28            length of the window in days
    end_date      str    "2026-11-21"  last simulated day (UTC, inclusive), YYYY-MM-DD; the
                                       window is [end_date - days + 1 00:00, end_date 23:59:59.999999]
    anomaly_rate  float  0.02          fraction of users who are abusers, in [0, 0.5]
    n_products    int    5000          catalogue size (>= 50)
    anomaly_mix   dict   equal         abuse type -> relative weight (types left out get 0);
                                       types: brushing, refund_abuse, account_takeover,
                                       card_testing, scraping_bot, fake_review_ring

Volume: a user produces about EVENTS_PER_USER_DAY (~2.75) events per day on average, so the
defaults give ~1.5 M events and 10 M events need ~130 000 users over 28 days;
`n_users_for_events(target, days)` gives the figure for a target. About 5 % of the users have
no event in the window (inactive accounts); they still get a labels row. A value of None for a
key means its default.

Columns: event_time is UTC with microseconds; session_id is null on refund and review events
(they happen outside a browsing session); price (the product's unit price) is set on view,
cart, remove_from_cart, purchase, payment_failed and refund; quantity on cart,
remove_from_cart, purchase, payment_failed and refund; rating and (mostly) review_text on
review. Ids are shuffled numbers (u0000123, p000042, d0012345, s00123456, e0000000001), so an
id says nothing about how or when it was made.

Normal shoppers are heterogeneous: lognormal activity (a few heavy users produce a large share
of the events), Zipf product popularity over categories with lognormal prices, a daily cycle in
local time and a weekly cycle, 14 countries, 1-3 devices and 1-4 IPs per user, sessions with
optional (rarely failed) login, views, carts, removals, purchases, rare failed payments, later
refunds and reviews, new accounts (signup inside the window) and old ones. Lookalikes of the
abuse signatures are normal: power users with very many views, households sharing a device and
IP, travellers abroad, users who switch to a new device, a failed-payment burst, heavy
refunders, heavy reviewers, VPN (datacenter) IPs.

Abuse types (each abuser also keeps normal background activity, intensity varies per abuser,
the abuse is concentrated on one to a few days, weighted towards the end of the window):

    brushing          rings sharing devices/IPs buy cheap ring products over and over, then
                      mostly post 5-star reviews
    refund_abuse      purchases of pricey items, most of them refunded within about a day
    account_takeover  old account; a burst of login_failed, a login from a new device in a new
                      country, high-value purchases within minutes
    card_testing      mostly new accounts; bursts of payment_failed on tiny amounts, a few tiny
                      purchases, seconds apart, often rotating proxy IPs
    scraping_bot      metronome-regular views of many products at any hour, no purchases
    fake_review_ring  rings sharing devices post 5-star reviews of the ring's products, with
                      no or very few purchases

Everything is generated as numpy arrays (sessions, then np.repeat into events; loops only over
abuse types and steps of a scripted session); string columns are built with pyarrow from
integer codes.
"""
from __future__ import annotations

import datetime as _dt
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import default_params
from pipelines.errors import UserError
from pipelines.schema import EVENT_DTYPES, EVENT_TYPES

__all__ = ["simulate", "n_users_for_events", "ABUSE_TYPES", "DEFAULT_PARAMS", "EVENTS_PER_USER_DAY"]

ABUSE_TYPES: tuple[str, ...] = (
    "brushing",
    "refund_abuse",
    "account_takeover",
    "card_testing",
    "scraping_bot",
    "fake_review_ring",
)

# params.yaml's simulate section, plus a knob only code uses (the mix of abuse types)
DEFAULT_PARAMS: dict[str, Any] = {**default_params()["simulate"], "anomaly_mix": None}

# Measured: events per user per day at the default params (see n_users_for_events).
EVENTS_PER_USER_DAY = 2.75

_S = 1_000_000  # microseconds
_MIN = 60 * _S
_H = 3600 * _S
_DAY = 24 * _H

_ET = {name: i for i, name in enumerate(EVENT_TYPES)}
SIGNUP, LOGIN, LOGIN_FAILED, VIEW, CART, REMOVE, PURCHASE, PAY_FAILED, REFUND, REVIEW = (
    _ET[n]
    for n in (
        "signup",
        "login",
        "login_failed",
        "view",
        "cart",
        "remove_from_cart",
        "purchase",
        "payment_failed",
        "refund",
        "review",
    )
)
_PRICED = np.zeros(len(EVENT_TYPES), dtype=bool)
_PRICED[[VIEW, CART, REMOVE, PURCHASE, PAY_FAILED, REFUND]] = True

# code, UTC offset (h), share of users, first IPv4 octets
_COUNTRIES: tuple[tuple[str, float, float, tuple[int, ...]], ...] = (
    ("US", -5.0, 0.30, (23, 50, 64, 73, 98, 174)),
    ("GB", 0.0, 0.10, (2, 31, 81, 86)),
    ("DE", 1.0, 0.09, (46, 79, 84, 91)),
    ("FR", 1.0, 0.07, (37, 78, 90)),
    ("ES", 1.0, 0.04, (83, 88)),
    ("IT", 1.0, 0.04, (87, 93)),
    ("NL", 1.0, 0.03, (77, 94)),
    ("PL", 1.0, 0.03, (89, 109)),
    ("CA", -5.0, 0.05, (24, 70, 142)),
    ("BR", -3.0, 0.06, (177, 179, 186)),
    ("MX", -6.0, 0.04, (189, 201)),
    ("IN", 5.5, 0.06, (49, 106, 117)),
    ("JP", 9.0, 0.05, (60, 126, 133)),
    ("AU", 10.0, 0.04, (1, 101, 203)),
)
_CC = np.array([c[0] for c in _COUNTRIES])
_OFFSET = np.array([c[1] for c in _COUNTRIES])
_CW = np.array([c[2] for c in _COUNTRIES])
_CW = _CW / _CW.sum()
_DC_OCTETS = np.array([34, 35, 45, 104, 138, 159, 185])  # "datacenter / proxy" ranges
_DC_COUNTRIES = np.array([0, 6, 2, 1])  # US, NL, DE, GB
_DC_CW = np.array([0.5, 0.2, 0.2, 0.1])

# category, share of catalogue, median price, lognormal sigma
_CATEGORIES: tuple[tuple[str, float, float, float], ...] = (
    ("electronics", 0.11, 120.0, 0.9),
    ("computers", 0.05, 450.0, 0.7),
    ("phones", 0.04, 350.0, 0.6),
    ("fashion", 0.16, 35.0, 0.6),
    ("shoes", 0.06, 60.0, 0.5),
    ("home", 0.12, 30.0, 0.8),
    ("beauty", 0.10, 15.0, 0.6),
    ("books", 0.09, 12.0, 0.4),
    ("toys", 0.07, 20.0, 0.7),
    ("grocery", 0.08, 5.0, 0.6),
    ("sports", 0.07, 40.0, 0.8),
    ("jewelry", 0.05, 80.0, 1.0),
)

# local-time hourly activity (hour 0..23) and weekday factors (Mon..Sun)
_HOURLY = np.array(
    [0.6, 0.35, 0.2, 0.15, 0.15, 0.2, 0.4, 0.8, 1.1, 1.3, 1.4, 1.5,
     1.7, 1.6, 1.4, 1.4, 1.5, 1.6, 1.8, 2.1, 2.3, 2.2, 1.7, 1.1]
)
_HOUR_CDF = np.cumsum(_HOURLY) / _HOURLY.sum()
_WEEKLY = np.array([0.95, 0.92, 0.95, 1.0, 1.05, 1.14, 1.2])

_TEXTS: dict[int, tuple[str, ...]] = {
    1: ("Broke after two days", "Terrible quality", "Not as described", "Waste of money",
        "Arrived damaged", "Do not buy"),
    2: ("Disappointed", "Poor fit", "Cheap materials", "Stopped working", "Expected better"),
    3: ("It's okay", "Average", "Does the job", "Fine for the price", "Mixed feelings"),
    4: ("Good value", "Works well", "Pretty good", "Nice quality", "Happy with it", "Fast delivery"),
    5: ("Love it!", "Excellent", "Perfect", "Great product", "Highly recommend", "Five stars",
        "Exactly as described", "Best purchase this year"),
    0: ("Amazing product highly recommend!!!", "Best seller 5 stars", "Super fast shipping great seller",
        "Excellent quality A+++", "Perfect, will buy again!!"),  # ring templates, also rare in normal reviews
}
_TEXT_LIST: list[str] = []
_TEXT_RANGE: dict[int, tuple[int, int]] = {}
for _r in (1, 2, 3, 4, 5, 0):
    _TEXT_RANGE[_r] = (len(_TEXT_LIST), len(_TEXT_LIST) + len(_TEXTS[_r]))
    _TEXT_LIST.extend(_TEXTS[_r])
_RATING_P = np.array([0.07, 0.05, 0.09, 0.26, 0.53])


# ----------------------------------------------------------------------------- params


def _as_int(params: dict, key: str, lo: int, hi: int) -> int:
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer, float, np.floating)):
        raise UserError(f"simulate: {key} must be an integer, got {v!r}")
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v) or not float(v).is_integer():
            raise UserError(f"simulate: {key} must be an integer, got {v!r}")
    v = int(v)
    if not lo <= v <= hi:
        raise UserError(f"simulate: {key} must be between {lo} and {hi}, got {v}")
    return v


def _parse_params(params: dict | None) -> dict[str, Any]:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise UserError(f"simulate: params must be a mapping, got {type(params).__name__}")
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise UserError(f"simulate: unknown parameter(s) {', '.join(map(str, unknown))}; known: {', '.join(DEFAULT_PARAMS)}")
    p = {**DEFAULT_PARAMS, **{k: v for k, v in params.items() if v is not None or k == "anomaly_mix"}}
    out: dict[str, Any] = {
        "seed": _as_int(p, "seed", 0, 2**63 - 1),
        "n_users": _as_int(p, "n_users", 1, 50_000_000),
        "days": _as_int(p, "days", 1, 3660),
        "n_products": _as_int(p, "n_products", 50, 50_000_000),
    }
    end = p["end_date"]
    if isinstance(end, _dt.datetime):
        end = end.date()
    if isinstance(end, _dt.date):
        end_date = end
    else:
        try:
            end_date = _dt.date.fromisoformat(str(end).strip())
        except ValueError:
            raise UserError(f"simulate: end_date must be YYYY-MM-DD, got {end!r}") from None
    out["end_date"] = end_date
    rate = p["anomaly_rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise UserError(f"simulate: anomaly_rate must be a number in [0, 0.5], got {rate!r}")
    rate = float(rate)
    if not (0.0 <= rate <= 0.5):
        raise UserError(f"simulate: anomaly_rate must be in [0, 0.5], got {rate}")
    out["anomaly_rate"] = rate
    mix = p["anomaly_mix"]
    if mix is None:
        weights = np.ones(len(ABUSE_TYPES))
    else:
        if not isinstance(mix, dict) or not mix:
            raise UserError(f"simulate: anomaly_mix must be a non-empty mapping abuse_type -> weight, got {mix!r}")
        bad = sorted(str(k) for k in mix if k not in ABUSE_TYPES)
        if bad:
            raise UserError(f"simulate: anomaly_mix has unknown type(s) {', '.join(bad)}; known: {', '.join(ABUSE_TYPES)}")
        weights = np.zeros(len(ABUSE_TYPES))
        for i, name in enumerate(ABUSE_TYPES):
            w = mix.get(name, 0.0)
            if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) or not math.isfinite(w) or w < 0:
                raise UserError(f"simulate: anomaly_mix weight for {name} must be a number >= 0, got {w!r}")
            weights[i] = float(w)
        if weights.sum() <= 0:
            raise UserError("simulate: anomaly_mix weights must not all be 0")
    out["anomaly_mix"] = weights / weights.sum()
    return out


def n_users_for_events(target_events: int, days: int = 28) -> int:
    """n_users that gives about `target_events` events over `days` days at the other defaults."""
    if target_events < 1 or days < 1:
        raise UserError("n_users_for_events: target_events and days must be >= 1")
    return max(1, int(round(target_events / (EVENTS_PER_USER_DAY * days))))


# ----------------------------------------------------------------------------- helpers


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For segment lengths `counts`: (parent index, index within segment) of every element."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    parent = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    within = np.arange(n, dtype=np.int64) - np.repeat(first, counts)
    return parent, within


def _group_rank(keys: np.ndarray) -> np.ndarray:
    """Rank of each element within runs of equal consecutive keys."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    lengths = np.diff(np.r_[starts, n])
    return np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)


def _us(seconds: np.ndarray) -> np.ndarray:
    return (np.asarray(seconds) * _S).astype(np.int64)


class _Sim:
    def __init__(self, p: dict[str, Any]):
        self.p = p
        self.rng = np.random.default_rng(p["seed"])
        self.U = p["n_users"]
        self.D = p["days"]
        first_day = np.datetime64(p["end_date"], "D") - (self.D - 1)
        self.t0 = int(first_day.astype("datetime64[us]").astype(np.int64))
        self.t1 = self.t0 + self.D * _DAY
        self.dow = ((first_day.astype(np.int64) + np.arange(self.D)) + 3) % 7  # 1970-01-01 was a Thursday
        d = np.arange(self.D)
        w = 1.0 + 2.0 * (d / max(self.D - 1, 1)) ** 2
        self.day_p = w / w.sum()
        self.blocks: list[dict[str, np.ndarray]] = []
        self.sess_meta: list[tuple[np.ndarray, ...]] = []
        self.n_sess = 0
        self.n_dev = 3 * self.U  # devices 3u..3u+2 belong to user u; more are allocated later
        self.ip_parts: list[np.ndarray] = []
        self.n_ip = 0

    # -- allocation ---------------------------------------------------------
    def new_sessions(self, n: int) -> np.ndarray:
        ids = np.arange(self.n_sess, self.n_sess + n, dtype=np.int64)
        self.n_sess += n
        return ids

    def new_devices(self, n: int) -> np.ndarray:
        ids = np.arange(self.n_dev, self.n_dev + n, dtype=np.int64)
        self.n_dev += n
        return ids

    def new_ips(self, country: np.ndarray | None = None, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Allocate IPs in `country` (array of country indices), or datacenter IPs (`n` of them).

        Returns (ip index, country index)."""
        rng = self.rng
        if country is None:
            assert n is not None
            first = _DC_OCTETS[rng.integers(0, len(_DC_OCTETS), n)]
            country = _DC_COUNTRIES[np.searchsorted(np.cumsum(_DC_CW), rng.random(n) * 0.999999)]
        else:
            n = len(country)
            k = np.array([len(c[3]) for c in _COUNTRIES])
            table = np.zeros((len(_COUNTRIES), k.max()), dtype=np.int64)
            for i, c in enumerate(_COUNTRIES):
                table[i, : k[i]] = c[3]
            first = table[country, (rng.random(n) * k[country]).astype(np.int64)]
        ip = (
            (first.astype(np.uint32) << 24)
            | (rng.integers(0, 256, n).astype(np.uint32) << 16)
            | (rng.integers(0, 256, n).astype(np.uint32) << 8)
            | rng.integers(1, 255, n).astype(np.uint32)
        )
        ids = np.arange(self.n_ip, self.n_ip + n, dtype=np.int64)
        self.n_ip += n
        self.ip_parts.append(ip)
        return ids, np.asarray(country, dtype=np.int64)

    def add(self, t, user, etype, *, sess=-1, prod=-1, qty=0, dev=-1, ip=-1, ctry=-1, rating=0, text=-1) -> None:
        """Append events. Columns are packed into four int64 words so that the final sort moves
        four arrays instead of ten: (user, prod+1), (dev+1, ip+1), sess+1, and the small fields
        etype | ctry+1 << 8 | rating << 16 | qty << 24 | text+1 << 40."""
        t = np.asarray(t, dtype=np.int64)
        n = len(t)
        if n == 0:
            return

        def col(v):
            a = np.asarray(v, dtype=np.int64)
            return np.full(n, a, dtype=np.int64) if a.ndim == 0 else a

        small = (
            col(etype)
            | ((col(ctry) + 1) << 8)
            | (col(rating) << 16)
            | (col(qty) << 24)
            | ((col(text) + 1) << 40)
        )
        self.blocks.append(
            {
                "t": t,
                "up": (col(user) << 32) | (col(prod) + 1),
                "di": ((col(dev) + 1) << 32) | (col(ip) + 1),
                "sess": col(sess) + 1,
                "small": small,
            }
        )

    def add_sessions(self, sess, user, t, dev, ip, ctry) -> None:
        self.sess_meta.append(
            (np.asarray(sess, np.int64), np.asarray(user, np.int64), np.asarray(t, np.int64),
             np.asarray(dev, np.int64), np.asarray(ip, np.int64), np.asarray(ctry, np.int64))
        )

    # -- sampling helpers ---------------------------------------------------
    def lognormal_s(self, median: float, sigma: float, n: int) -> np.ndarray:
        return self.rng.lognormal(math.log(median), sigma, n)

    def qty(self, n: int) -> np.ndarray:
        r = self.rng.random(n)
        return (1 + (r > 0.86) + (r > 0.96) + (r > 0.99)).astype(np.int16)

    def popular_products(self, n: int) -> np.ndarray:
        i = np.searchsorted(self.g_cdf, self.rng.random(n), side="right")
        return self.g_order[np.minimum(i, len(self.g_order) - 1)]

    def products_in_category(self, cat: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.c_cdf, cat + self.rng.random(len(cat)) * 0.999999, side="right")
        return self.c_order[np.minimum(i, len(self.c_order) - 1)]

    def pick_from_pool(self, pool: np.ndarray, n: int) -> np.ndarray:
        return pool[self.rng.integers(0, len(pool), n)]

    def ratings(self, n: int, p: np.ndarray = _RATING_P) -> np.ndarray:
        return (np.searchsorted(np.cumsum(p), self.rng.random(n) * 0.999999, side="right") + 1).astype(np.int8)

    def texts(self, rating: np.ndarray, p_none: float = 0.15, p_ring: float = 0.02) -> np.ndarray:
        rng = self.rng
        n = len(rating)
        lo = np.array([0] + [_TEXT_RANGE[r][0] for r in (1, 2, 3, 4, 5)])
        hi = np.array([0] + [_TEXT_RANGE[r][1] for r in (1, 2, 3, 4, 5)])
        r = rating.astype(np.int64)
        out = lo[r] + (rng.random(n) * (hi[r] - lo[r])).astype(np.int64)
        ring_lo, ring_hi = _TEXT_RANGE[0]
        ring = (rating == 5) & (rng.random(n) < p_ring)
        out[ring] = rng.integers(ring_lo, ring_hi, int(ring.sum()))
        out[rng.random(n) < p_none] = -1
        return out

    def local_start(self, day: np.ndarray, ctry: np.ndarray, shift_h: np.ndarray | float = 0.0) -> np.ndarray:
        """Session start times (us, UTC) on window day `day` following the local daily cycle."""
        rng = self.rng
        n = len(day)
        h = np.searchsorted(_HOUR_CDF, rng.random(n), side="right") + rng.random(n) + shift_h
        utc_h = h - _OFFSET[ctry]
        t = self.t0 + day.astype(np.int64) * _DAY + (utc_h * _H).astype(np.int64)
        t = np.where(t < self.t0, t + _DAY, t)
        return np.where(t >= self.t1, t - _DAY, t)

    def any_time(self, day: np.ndarray) -> np.ndarray:
        return self.t0 + day.astype(np.int64) * _DAY + (self.rng.random(len(day)) * _DAY).astype(np.int64)

    def script(self, start: np.ndarray, steps: list[tuple[np.ndarray, Any, float]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Scripted sessions: each step k puts counts_k[s] events into session s, in step order,
        each after a gap (seconds) drawn lognormal(median, sigma) or from gap(parent, within).
        Returns (parent session, time) per step."""
        rng = self.rng
        counts = np.stack([np.asarray(c, dtype=np.int64) for c, _, _ in steps])
        total = counts.sum(0)
        offs = np.cumsum(counts, 0) - counts
        base = np.cumsum(total) - total
        n_all = int(total.sum())
        gaps = np.empty(n_all)
        placed = []
        for k, (c, gap, sigma) in enumerate(steps):
            parent, within = _expand(counts[k])
            pos = base[parent] + offs[k][parent] + within
            if callable(gap):
                gaps[pos] = gap(parent, within)
            else:
                gaps[pos] = rng.lognormal(math.log(gap), sigma, len(pos))
            placed.append((parent, pos))
        cum = np.cumsum(_us(gaps))
        before = np.concatenate([[0], cum])[base]
        t_all = np.repeat(np.asarray(start, np.int64) + 0, total) + cum - np.repeat(before, total)
        return [(parent, t_all[pos]) for parent, pos in placed]

    def abuse_days(self, day0: np.ndarray, kmax: int) -> tuple[np.ndarray, np.ndarray]:
        """1..kmax abuse days per owner, starting at day0 and moving forward a few days."""
        rng = self.rng
        k = rng.integers(1, kmax + 1, len(day0))
        owner, within = _expand(k)
        step = np.where(within == 0, 0, rng.integers(1, 4, len(owner)))
        steps = np.cumsum(step)
        steps = steps - np.repeat(steps[np.cumsum(k) - k], k)
        return owner, np.minimum(day0[owner] + steps, self.D - 1)

    # -- world --------------------------------------------------------------
    def build_world(self) -> None:
        rng, U, P = self.rng, self.U, self.p["n_products"]
        cat_share = np.array([c[1] for c in _CATEGORIES])
        self.prod_cat = np.searchsorted(np.cumsum(cat_share / cat_share.sum()), rng.random(P) * 0.999999, side="right")
        med = np.array([c[2] for c in _CATEGORIES])[self.prod_cat]
        sig = np.array([c[3] for c in _CATEGORIES])[self.prod_cat]
        raw = np.exp(rng.normal(np.log(med), sig))
        self.prod_price = np.maximum(np.floor(raw) + 0.99, 0.49)
        self.prod_price[raw < 1] = 0.99
        # pricey items are viewed as much but put in the cart less often
        self.cart_mult = np.clip((self.prod_price / 40.0) ** -0.3, 0.35, 1.8)
        pop = 1.0 / np.arange(1, P + 1) ** 1.05  # Zipf over a random order of products
        weight = np.empty(P)
        self.pop_rank = rng.permutation(P)
        weight[self.pop_rank] = pop
        self.g_order = np.argsort(-weight, kind="stable")
        self.g_cdf = np.cumsum(weight[self.g_order]) / weight.sum()
        c_order = np.lexsort((-weight, self.prod_cat))
        w = weight[c_order]
        c = self.prod_cat[c_order]
        cs = np.cumsum(w)
        first = np.searchsorted(c, np.arange(len(_CATEGORIES)))
        tot = np.bincount(c, weights=w, minlength=len(_CATEGORIES))
        before = np.concatenate([[0.0], cs])[first]
        self.c_order = c_order
        self.c_cdf = c + (cs - before[c]) / np.where(tot[c] > 0, tot[c], 1.0)
        rank = np.empty(P, dtype=np.int64)
        rank[self.g_order] = np.arange(P)
        price_q = np.argsort(np.argsort(self.prod_price, kind="stable"), kind="stable") / P
        self.pool_cheap = np.flatnonzero((price_q < 0.3) & (rank > min(100, P // 10)))
        self.pool_tiny = np.flatnonzero(price_q < 0.04)
        self.pool_pricey = np.flatnonzero(price_q > 0.75)
        self.pool_luxury = np.flatnonzero(price_q > 0.88)
        self.pool_mid = np.flatnonzero((rank > P // 50) & (rank < P // 2))
        for name in ("pool_cheap", "pool_tiny", "pool_pricey", "pool_luxury", "pool_mid"):
            if len(getattr(self, name)) == 0:
                setattr(self, name, np.arange(P))
        self.crawl_order = rng.permutation(P)

        # users
        self.country = np.searchsorted(np.cumsum(_CW), rng.random(U) * 0.999999, side="right")
        self.n_devices = 1 + (rng.random(U) > 0.55) + (rng.random(U) > 0.75)
        self.n_ips = 1 + rng.binomial(3, 0.35, U)
        self.dev_base = 3 * np.arange(U, dtype=np.int64)[:, None] + np.arange(3)
        ip_ids, _ = self.new_ips(np.repeat(self.country, 4))
        self.ip_base = ip_ids.reshape(U, 4)
        vpn = rng.random(U) < 0.03  # some normal users browse through a datacenter VPN
        if vpn.any():
            self.ip_base[vpn, 1] = self.new_ips(n=int(vpn.sum()))[0]
            self.n_ips[vpn] = np.maximum(self.n_ips[vpn], 2)
        # households of 2-4 share the main device and the home IP (and country)
        hh = np.flatnonzero(rng.random(U) < 0.06)
        if len(hh) >= 2:
            size = rng.integers(2, 5, len(hh))
            group = np.repeat(np.arange(len(size)), size)[: len(hh)]
            lead = hh[np.searchsorted(group, group)]  # first member of each group
            b = hh[hh != lead]
            a = lead[hh != lead]
            self.country[b] = self.country[a]
            self.ip_base[b, 1:] = self.new_ips(np.repeat(self.country[b], 3))[0].reshape(-1, 3)
            self.dev_base[b, 0] = self.dev_base[a, 0]
            self.ip_base[b, 0] = self.ip_base[a, 0]
        # shared public / office computers: groups of 3-12 users have one as an occasional device
        kiosk = np.flatnonzero(rng.random(U) < 0.012)
        if len(kiosk):
            size = rng.integers(3, 13, len(kiosk))
            group = np.repeat(np.arange(len(size)), size)[: len(kiosk)]
            kdev = self.new_devices(int(group.max()) + 1)
            self.dev_base[kiosk, 2] = kdev[group]
            self.n_devices[kiosk] = 3
        self.chrono = np.clip(rng.normal(0.0, 1.3, U), -3.5, 3.5)
        self.signup_day = np.where(rng.random(U) < 0.12, rng.integers(0, self.D, U), -1)

    def assign_abusers(self) -> None:
        rng, U = self.rng, self.U
        n_ab = int(round(self.p["anomaly_rate"] * U))
        mix = self.p["anomaly_mix"]
        exact = n_ab * mix
        counts = np.floor(exact).astype(np.int64)
        rest = n_ab - counts.sum()
        if rest > 0:
            counts[np.lexsort((rng.random(len(counts)), -(exact - counts)))[:rest]] += 1  # random tie-break
        users = rng.permutation(U)[:n_ab]
        self.atype = np.full(U, -1, dtype=np.int64)
        self.atype[users] = np.repeat(np.arange(len(ABUSE_TYPES)), counts)
        # abuse intensity per abuser: lognormal, and about one abuser in six is very mild
        self.q = np.exp(rng.normal(0.0, 0.8, U)) * np.where(rng.random(U) < 0.15, 0.3, 1.0)
        self.day0 = np.searchsorted(np.cumsum(self.day_p), rng.random(U) * 0.999999, side="right")
        self.members = {name: np.flatnonzero(self.atype == i) for i, name in enumerate(ABUSE_TYPES)}
        self.rings: dict[str, np.ndarray] = {}
        for name, lo, hi in (("brushing", 3, 8), ("fake_review_ring", 4, 10)):
            m = self.members[name]
            sizes = rng.integers(lo, hi + 1, len(m) + 1)
            ring = np.repeat(np.arange(len(sizes)), sizes)[: len(m)]
            self.rings[name] = ring
            if len(m):
                rday = np.searchsorted(np.cumsum(self.day_p), rng.random(ring.max() + 1) * 0.999999, side="right")
                self.day0[m] = rday[ring]
        # who is a new account (signup in the window, before the abuse)
        p_new = {"brushing": 0.4, "refund_abuse": 0.15, "account_takeover": 0.0, "card_testing": 0.75,
                 "scraping_bot": 0.3, "fake_review_ring": 0.5}
        for name, m in self.members.items():
            new = rng.random(len(m)) < p_new[name]
            self.signup_day[m] = np.where(new, np.maximum(self.day0[m] - rng.integers(0, 3, len(m)), 0), -1)

    # -- normal behaviour -----------------------------------------------------
    def normal(self) -> None:
        rng, U, D = self.rng, self.U, self.D
        bot = self.atype == ABUSE_TYPES.index("scraping_bot")
        ato = self.atype == ABUSE_TYPES.index("account_takeover")
        rate = np.exp(rng.normal(math.log(0.2), 1.0, U))
        power = rng.random(U) < 0.02
        rate = rate * np.where(power, 3.0, 1.0) * np.where(bot, 0.5, 1.0)
        rate[ato] = np.maximum(rate[ato], 0.15)
        view_mean = np.exp(rng.normal(math.log(4.0), 0.55, U)) * np.where(power, 5.0, 1.0)
        p_cart = rng.beta(2.0, 26.0, U)
        p_cart[bot] = 0.0
        p_buy = rng.beta(3.0, 4.0, U)
        p_login = rng.beta(2.0, 3.0, U)
        p_refund = rng.beta(1.2, 40.0, U)
        heavy_ref = rng.random(U) < 0.02
        p_refund[heavy_ref] = rng.uniform(0.15, 0.5, int(heavy_ref.sum()))
        p_review = rng.beta(1.0, 11.0, U)
        fav_cat = rng.integers(0, len(_CATEGORIES), U)
        # travellers, device switchers, failed-payment bursts
        trip_start = np.where(rng.random(U) < 0.04, rng.integers(0, D, U), D + 1)
        trip_end = trip_start + rng.integers(2, 7, U)
        trip_ctry = (self.country + rng.integers(1, len(_COUNTRIES), U)) % len(_COUNTRIES)
        trav = np.flatnonzero(trip_start <= D)
        trip_ip = np.full(U, -1, dtype=np.int64)
        trip_ip[trav] = self.new_ips(trip_ctry[trav])[0]
        switch_day = np.where(rng.random(U) < 0.03, rng.integers(1, max(D, 2), U), D + 1)
        sw = np.flatnonzero(switch_day <= D)
        switch_dev = np.full(U, -1, dtype=np.int64)
        switch_dev[sw] = self.new_devices(len(sw))

        # sessions per user-day: Poisson with a gamma day effect (bursty days), after signup only
        lam = rng.gamma(0.8, 1.0 / 0.8, (U, D))
        lam *= rate[:, None]
        lam *= _WEEKLY[self.dow][None, :]
        lam *= np.arange(D)[None, :] >= self.signup_day[:, None]
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
        s_ctry = np.where(on_trip, trip_ctry[su], self.country[su])
        r = rng.random(S)
        slot = np.minimum((r > 0.62).astype(np.int64) + (r > 0.88), self.n_devices[su] - 1)
        s_dev = self.dev_base[su, slot]
        s_dev = np.where((sd >= switch_day[su]) & (slot == 0), switch_dev[su], s_dev)
        r = rng.random(S)
        islot = np.minimum((r * r * 4).astype(np.int64), self.n_ips[su] - 1)
        s_ip = np.where(on_trip, trip_ip[su], self.ip_base[su, islot])
        s_t = self.local_start(sd, s_ctry, self.chrono[su])
        s_id = self.new_sessions(S)
        self.add_sessions(s_id, su, s_t, s_dev, s_ip, s_ctry)

        # login (rarely preceded by failures)
        has_login = rng.random(S) < p_login[su]
        n_lf = np.where(has_login & (rng.random(S) < 0.035), rng.geometric(0.6, S), 0)
        li = np.flatnonzero(has_login)
        self.add(s_t[li], su[li], LOGIN, sess=s_id[li], dev=s_dev[li], ip=s_ip[li], ctry=s_ctry[li])
        par, within = _expand(n_lf)
        t_lf = s_t[par] - _us((within + 1) * self.lognormal_s(12.0, 0.6, len(par)))
        self.add(t_lf, su[par], LOGIN_FAILED, sess=s_id[par], dev=s_dev[par], ip=s_ip[par], ctry=s_ctry[par])
        del has_login, n_lf, li, par, within, t_lf

        # views
        n_view = 1 + rng.poisson(view_mean[su] * rng.gamma(2.0, 0.5, S))
        n_view = np.minimum(n_view, 400)
        v_sess = np.repeat(np.arange(S, dtype=np.int64), n_view)
        V = len(v_sess)
        gaps = _us(np.clip(self.lognormal_s(22.0, 1.0, V), 1.0, 1800.0))
        cum = np.cumsum(gaps)
        del gaps
        first = np.cumsum(n_view) - n_view
        before = np.concatenate([[0], cum])[first]
        v_t = np.repeat(s_t - before, n_view) + cum
        del cum, before
        s_end = v_t[first + n_view - 1]
        vu = su[v_sess]
        in_fav = rng.random(V) < 0.45
        v_prod = self.popular_products(V)
        fi = np.flatnonzero(in_fav)
        v_prod[fi] = self.products_in_category(fav_cat[vu[fi]])
        del in_fav, fi
        self.add(v_t, vu, VIEW, sess=s_id[v_sess], prod=v_prod, dev=s_dev[v_sess], ip=s_ip[v_sess], ctry=s_ctry[v_sess])

        # carts, removals, purchases, failed payments
        ci = np.flatnonzero(rng.random(V) < p_cart[vu] * self.cart_mult[v_prod])
        del vu
        c_sess = v_sess[ci]
        c_prod = v_prod[ci]
        c_t = v_t[ci] + _us(self.lognormal_s(15.0, 0.7, len(ci)))
        del v_sess, v_prod, v_t, ci
        C = len(c_sess)
        c_qty = self.qty(C)
        cu = su[c_sess]
        self.add(c_t, cu, CART, sess=s_id[c_sess], prod=c_prod, qty=c_qty, dev=s_dev[c_sess], ip=s_ip[c_sess], ctry=s_ctry[c_sess])
        rm = rng.random(C) < 0.15
        ri = np.flatnonzero(rm)
        rs = c_sess[ri]
        rm_t = c_t[ri] + (rng.random(len(ri)) * np.maximum(s_end[rs] - c_t[ri], 0)).astype(np.int64) + 5 * _S
        self.add(rm_t, cu[ri], REMOVE, sess=s_id[rs], prod=c_prod[ri], qty=c_qty[ri], dev=s_dev[rs], ip=s_ip[rs], ctry=s_ctry[rs])
        kept = ~rm
        has_kept = np.bincount(c_sess[kept], minlength=S) > 0
        buy = has_kept & (rng.random(S) < p_buy[su])
        last_cart = s_end.copy()
        np.maximum.at(last_cart, c_sess, c_t)
        checkout = np.maximum(last_cart, s_end) + 20 * _S + _us(self.lognormal_s(60.0, 0.6, S))
        pi = np.flatnonzero(kept & buy[c_sess])
        p_sess = c_sess[pi]
        p_prod = c_prod[pi]
        p_qty = c_qty[pi]
        p_t = checkout[p_sess] + _group_rank(p_sess) * 2 * _S + (rng.random(len(pi)) * _S).astype(np.int64)
        pu = su[p_sess]
        self.add(p_t, pu, PURCHASE, sess=s_id[p_sess], prod=p_prod, qty=p_qty, dev=s_dev[p_sess], ip=s_ip[p_sess], ctry=s_ctry[p_sess])
        ki = np.flatnonzero(kept)
        ks = c_sess[ki]
        fk = ki[np.r_[True, ks[1:] != ks[:-1]]] if len(ki) else ki
        first_prod = np.full(S, -1, dtype=np.int64)
        first_prod[c_sess[fk]] = c_prod[fk]
        n_pf = (buy & (rng.random(S) < 0.02)) | (has_kept & ~buy & (rng.random(S) < 0.012))
        n_pf = n_pf.astype(np.int64)
        par, within = _expand(n_pf)
        t_pf = checkout[par] - _us((within + 1) * self.lognormal_s(25.0, 0.5, len(par)))
        self.add(t_pf, su[par], PAY_FAILED, sess=s_id[par], prod=first_prod[par], qty=1, dev=s_dev[par], ip=s_ip[par], ctry=s_ctry[par])
        del c_sess, c_prod, c_t, c_qty, cu, rm, kept, par, within

        # refunds and reviews of those purchases (days later, outside a session)
        self.after_purchase(p_t, pu, p_prod, p_qty, p_refund[pu], 4 * 24 * 3600.0, 0.6, p_review[pu])

        # reviews of purchases made before the window (old accounts), heavy reviewers
        heavy_rev = rng.random(U) < 0.01
        rev_rate = np.where(self.signup_day < 0, 0.1, 0.0) * np.where(heavy_rev, 20.0, 1.0) * D / 28.0
        n_or = rng.poisson(rev_rate)
        par = np.repeat(np.arange(U), n_or)
        day = rng.integers(0, D, len(par))
        t = self.local_start(day, self.country[par], self.chrono[par])
        rating = np.where(heavy_rev[par], self.ratings(len(par), np.array([0.02, 0.02, 0.06, 0.25, 0.65])), self.ratings(len(par)))
        self.add(t, par, REVIEW, prod=self.popular_products(len(par)), dev=self.dev_base[par, 0], ip=self.ip_base[par, 0],
                 ctry=self.country[par], rating=rating, text=self.texts(rating))
        self.payment_trouble()

    def payment_trouble(self) -> None:
        """Normal lookalike of card testing: a few users have one session where their card is
        declined several times (retyped, another card) before a purchase goes through, or not."""
        rng, U, D = self.rng, self.U, self.D
        bot = self.atype == ABUSE_TYPES.index("scraping_bot")  # bot accounts never buy
        u = np.flatnonzero((rng.random(U) < 0.02) & ~bot)
        if len(u) == 0:
            return
        n = len(u)
        day = np.maximum(rng.integers(0, D, n), self.signup_day[u])
        start = self.local_start(day, self.country[u], self.chrono[u])
        dev, ip, ctry = self.dev_base[u, 0], self.ip_base[u, 0], self.country[u]
        sess = self.new_sessions(n)
        self.add_sessions(sess, u, start, dev, ip, ctry)
        one = np.ones(n, dtype=np.int64)
        n_view = 1 + rng.poisson(3.0, n)
        n_pf = 1 + rng.poisson(np.exp(rng.normal(math.log(2.0), 0.8, n)))
        n_buy = (rng.random(n) < 0.6).astype(np.int64)
        (lp, lt), (vp, vt), (cp, ct), (fp, ft), (pp, pt) = self.script(
            start, [(one, 3.0, 0.5), (n_view, 25.0, 0.9), (one, 15.0, 0.6), (n_pf, 30.0, 0.7), (n_buy, 40.0, 0.6)]
        )
        prod = self.popular_products(n)
        v_prod = np.where(_group_rank(vp) == n_view[vp] - 1, prod[vp], self.popular_products(len(vp)))
        self.add(lt, u[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
        self.add(vt, u[vp], VIEW, sess=sess[vp], prod=v_prod, dev=dev[vp], ip=ip[vp], ctry=ctry[vp])
        self.add(ct, u[cp], CART, sess=sess[cp], prod=prod[cp], qty=1, dev=dev[cp], ip=ip[cp], ctry=ctry[cp])
        self.add(ft, u[fp], PAY_FAILED, sess=sess[fp], prod=prod[fp], qty=1, dev=dev[fp], ip=ip[fp], ctry=ctry[fp])
        self.add(pt, u[pp], PURCHASE, sess=sess[pp], prod=prod[pp], qty=1, dev=dev[pp], ip=ip[pp], ctry=ctry[pp])

    def after_purchase(self, p_t, pu, p_prod, p_qty, p_refund, refund_median_s, refund_sigma, p_review,
                       review_rating: np.ndarray | None = None, dev=None, ip=None) -> None:
        rng = self.rng
        n = len(p_t)
        ri = np.flatnonzero(rng.random(n) < p_refund)
        t = p_t[ri] + _us(np.maximum(self.lognormal_s(refund_median_s, refund_sigma, len(ri)), 1800.0))
        u = pu[ri]
        self.add(t, u, REFUND, prod=p_prod[ri], qty=p_qty[ri], dev=self.dev_base[u, 0], ip=self.ip_base[u, 0], ctry=self.country[u])
        vi = np.flatnonzero(rng.random(n) < p_review)
        t = p_t[vi] + _us(np.maximum(self.lognormal_s(5 * 24 * 3600.0, 0.7, len(vi)), 3600.0))
        u = pu[vi]
        rating = self.ratings(len(vi)) if review_rating is None else review_rating[vi]
        self.add(t, u, REVIEW, prod=p_prod[vi], dev=self.dev_base[u, 0] if dev is None else dev[vi],
                 ip=self.ip_base[u, 0] if ip is None else ip[vi], ctry=self.country[u], rating=rating, text=self.texts(rating))

    # -- abuse ----------------------------------------------------------------
    def ring_assets(self, ring: np.ndarray, n_dev: tuple[int, int], pool: np.ndarray, n_prod: tuple[int, int]):
        rng = self.rng
        R = int(ring.max()) + 1
        nd = rng.integers(n_dev[0], n_dev[1] + 1, R)
        devs = np.full((R, n_dev[1]), -1, dtype=np.int64)
        pr, pw = _expand(nd)
        devs[pr, pw] = self.new_devices(len(pr))
        ring_ip, ring_ctry = self.new_ips(n=R)
        npr = rng.integers(n_prod[0], n_prod[1] + 1, R)
        prods = self.pick_from_pool(pool, R * n_prod[1]).reshape(R, n_prod[1])
        return nd, devs, ring_ip, ring_ctry, npr, prods

    def brushing(self) -> None:
        rng = self.rng
        m = self.members["brushing"]
        if len(m) == 0:
            return
        ring = self.rings["brushing"]
        nd, devs, ring_ip, ring_ctry, npr, prods = self.ring_assets(ring, (1, 2), self.pool_cheap, (1, 3))
        owner, day = self.abuse_days(self.day0[m], 3)
        u = m[owner]
        n_orders = 1 + rng.poisson(3.0 * self.q[u])
        o, j = _expand(n_orders)  # o indexes member-days
        uo = u[o]
        ro = ring[owner[o]]
        # orders of one member-day follow each other a few minutes apart
        base_md = self.local_start(day, self.country[u], 0.0)
        start = base_md[o] + _us(j * self.lognormal_s(300.0, 0.5, len(o)))
        n = len(o)
        use_ring = rng.random(n) < rng.uniform(0.3, 1.0, len(m))[owner[o]]
        dev = np.where(use_ring, devs[ro, (rng.random(n) * nd[ro]).astype(np.int64)], self.dev_base[uo, 0])
        ip = np.where(rng.random(n) < 0.6, ring_ip[ro], self.ip_base[uo, 0])
        ctry = self.country[uo]
        prod = prods[ro, (rng.random(n) * npr[ro]).astype(np.int64)]
        sess = self.new_sessions(n)
        self.add_sessions(sess, uo, start, dev, ip, ctry)
        has_login = (rng.random(n) < 0.6).astype(np.int64)
        one = np.ones(n, dtype=np.int64)
        steps = self.script(start, [(has_login, 3.0, 0.5), (one, 8.0, 0.6), (one, 12.0, 0.6), (one, 25.0, 0.5)])
        (lp, lt), (vp, vt), (cp, ct), (pp, pt) = steps
        qty = np.where(rng.random(n) < 0.85, 1, 2).astype(np.int16)
        self.add(lt, uo[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
        self.add(vt, uo[vp], VIEW, sess=sess[vp], prod=prod[vp], dev=dev[vp], ip=ip[vp], ctry=ctry[vp])
        self.add(ct, uo[cp], CART, sess=sess[cp], prod=prod[cp], qty=qty[cp], dev=dev[cp], ip=ip[cp], ctry=ctry[cp])
        self.add(pt, uo[pp], PURCHASE, sess=sess[pp], prod=prod[pp], qty=qty[pp], dev=dev[pp], ip=ip[pp], ctry=ctry[pp])
        rating = np.where(rng.random(n) < 0.9, 5, 4).astype(np.int8)
        rng_ = rng.random(n)
        vi = np.flatnonzero(rng_ < 0.75)
        t = pt[vi] + _us(self.lognormal_s(20 * 3600.0, 0.8, len(vi)))
        self.add(t, uo[vi], REVIEW, prod=prod[vi], dev=dev[vi], ip=ip[vi], ctry=ctry[vi], rating=rating[vi],
                 text=self.texts(rating[vi], p_none=0.05, p_ring=0.4))

    def refund_abuse(self) -> None:
        rng = self.rng
        m = self.members["refund_abuse"]
        if len(m) == 0:
            return
        owner, day = self.abuse_days(self.day0[m], 3)
        u = m[owner]
        n_orders = 1 + rng.poisson(1.5 * self.q[u])
        o, _ = _expand(n_orders)
        uo = u[o]
        n = len(o)
        start = self.local_start(day[o], self.country[uo], self.chrono[uo])
        dev, ip, ctry = self.dev_base[uo, 0], self.ip_base[uo, 0], self.country[uo]
        sess = self.new_sessions(n)
        self.add_sessions(sess, uo, start, dev, ip, ctry)
        has_login = (rng.random(n) < 0.5).astype(np.int64)
        n_view = 1 + rng.poisson(2.0, n)
        one = np.ones(n, dtype=np.int64)
        (lp, lt), (vp, vt), (cp, ct), (pp, pt) = self.script(
            start, [(has_login, 3.0, 0.5), (n_view, 25.0, 0.8), (one, 15.0, 0.6), (one, 60.0, 0.5)]
        )
        prod = self.pick_from_pool(self.pool_pricey, n)
        v_prod = np.where(_group_rank(vp) == n_view[vp] - 1, prod[vp], self.popular_products(len(vp)))
        qty = np.where(rng.random(n) < 0.85, 1, 2).astype(np.int16)
        self.add(lt, uo[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
        self.add(vt, uo[vp], VIEW, sess=sess[vp], prod=v_prod, dev=dev[vp], ip=ip[vp], ctry=ctry[vp])
        self.add(ct, uo[cp], CART, sess=sess[cp], prod=prod[cp], qty=qty[cp], dev=dev[cp], ip=ip[cp], ctry=ctry[cp])
        self.add(pt, uo[pp], PURCHASE, sess=sess[pp], prod=prod[pp], qty=qty[pp], dev=dev[pp], ip=ip[pp], ctry=ctry[pp])
        p_ref = np.clip(0.55 + 0.2 * self.q[uo], 0.45, 0.97)
        self.after_purchase(pt, uo, prod, qty, p_ref, 20 * 3600.0, 0.7, np.full(n, 0.05))

    def account_takeover(self) -> None:
        rng = self.rng
        m = self.members["account_takeover"]
        if len(m) == 0:
            return
        n = len(m)
        C = len(_COUNTRIES)
        a_ctry = (self.country[m] + rng.integers(1, C, n)) % C
        a_dev = self.new_devices(n)
        a_ip, _ = self.new_ips(a_ctry)
        dc = np.flatnonzero(rng.random(n) < 0.3)  # some attackers come through a datacenter proxy abroad
        if len(dc):
            dc_ip, dc_ctry = self.new_ips(n=len(dc))
            abroad = dc_ctry != self.country[m[dc]]
            a_ip[dc[abroad]], a_ctry[dc[abroad]] = dc_ip[abroad], dc_ctry[abroad]
        q = self.q[m]
        # first attacker session on the takeover day, an optional second one hours later
        second = rng.random(n) < 0.35
        who = np.concatenate([np.arange(n), np.flatnonzero(second)])
        is2 = np.r_[np.zeros(n, bool), np.ones(int(second.sum()), bool)]
        t_first = self.any_time(self.day0[m])
        start = t_first[who] + np.where(is2, _us(self.lognormal_s(3 * 3600.0, 0.6, len(who))), 0)
        k = len(who)
        u, dev, ip, ctry = m[who], a_dev[who], a_ip[who], a_ctry[who]
        sess = self.new_sessions(k)
        self.add_sessions(sess, u, start, dev, ip, ctry)
        n_lf = np.where(is2, 0, 1 + rng.poisson(4.0 * q[who]))
        one = np.ones(k, dtype=np.int64)
        n_view = rng.poisson(1.5, k)
        n_buy = np.where(is2, 1 + rng.poisson(q[who]), 1 + rng.poisson(1.5 * q[who]))
        (fp, ft), (lp, lt), (vp, vt), (pp, pt) = self.script(
            start, [(n_lf, 4.0, 0.5), (one, 6.0, 0.5), (n_view, 15.0, 0.7), (n_buy, 50.0, 0.6)]
        )
        self.add(ft, u[fp], LOGIN_FAILED, sess=sess[fp], dev=dev[fp], ip=ip[fp], ctry=ctry[fp])
        self.add(lt, u[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
        self.add(vt, u[vp], VIEW, sess=sess[vp], prod=self.pick_from_pool(self.pool_pricey, len(vp)), dev=dev[vp], ip=ip[vp], ctry=ctry[vp])
        prod = self.pick_from_pool(self.pool_luxury, len(pp))
        qty = np.where(rng.random(len(pp)) < 0.7, 1, 2 + (rng.random(len(pp)) < 0.3)).astype(np.int16)
        self.add(pt - _us(self.lognormal_s(10.0, 0.4, len(pp))), u[pp], CART, sess=sess[pp], prod=prod, qty=qty,
                 dev=dev[pp], ip=ip[pp], ctry=ctry[pp])
        self.add(pt, u[pp], PURCHASE, sess=sess[pp], prod=prod, qty=qty, dev=dev[pp], ip=ip[pp], ctry=ctry[pp])
        # the owner's own visit a few days earlier, so every victim has its usual device and country
        day = np.maximum(self.day0[m] - rng.integers(1, 6, n), 0)
        start = self.local_start(day, self.country[m], self.chrono[m])
        dev, ip, ctry = self.dev_base[m, 0], self.ip_base[m, 0], self.country[m]
        sess = self.new_sessions(n)
        self.add_sessions(sess, m, start, dev, ip, ctry)
        (lp, lt), (vp, vt) = self.script(start, [(np.ones(n, np.int64), 3.0, 0.5), (1 + rng.poisson(4.0, n), 25.0, 0.9)])
        self.add(lt, m[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
        self.add(vt, m[vp], VIEW, sess=sess[vp], prod=self.popular_products(len(vp)), dev=dev[vp], ip=ip[vp], ctry=ctry[vp])

    def card_testing(self) -> None:
        rng = self.rng
        m = self.members["card_testing"]
        if len(m) == 0:
            return
        proxy_ip, proxy_ctry = self.new_ips(n=max(50, len(m) * 4))
        rotate = rng.random(len(m)) < 0.5
        owner, day = self.abuse_days(self.day0[m], 2)
        u = m[owner]
        n_burst = 1 + (rng.random(len(owner)) < 0.4)
        o, _ = _expand(n_burst)
        uo = u[o]
        n = len(o)
        start = self.any_time(day[o])
        dev, ip, ctry = self.dev_base[uo, 0], self.ip_base[uo, 0], self.country[uo]
        sess = self.new_sessions(n)
        self.add_sessions(sess, uo, start, dev, ip, ctry)
        q = self.q[uo]
        one = np.ones(n, dtype=np.int64)
        n_f1 = 1 + rng.poisson(4.0 * q)
        n_ok = rng.integers(0, 3, n)
        n_f2 = rng.poisson(3.0 * q)

        def fast(parent, within):
            return self.lognormal_s(5.0, 0.4, len(parent))

        (lp, lt), (vp, vt), (cp, ct), (f1p, f1t), (okp, okt), (f2p, f2t) = self.script(
            start, [(one, 3.0, 0.5), (one, 4.0, 0.5), (one, 4.0, 0.5), (n_f1, fast, 0), (n_ok, fast, 0), (n_f2, fast, 0)]
        )
        target = self.pick_from_pool(self.pool_tiny, n)
        rot = rotate[owner[o]]

        def net(par):
            k = len(par)
            pick = rng.integers(0, len(proxy_ip), k)
            r = rot[par]
            return np.where(r, proxy_ip[pick], ip[par]), np.where(r, proxy_ctry[pick], ctry[par])

        def prod_of(par):
            return np.where(rng.random(len(par)) < 0.3, self.pick_from_pool(self.pool_tiny, len(par)), target[par])

        self.add(lt, uo[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
        self.add(vt, uo[vp], VIEW, sess=sess[vp], prod=target[vp], dev=dev[vp], ip=ip[vp], ctry=ctry[vp])
        self.add(ct, uo[cp], CART, sess=sess[cp], prod=target[cp], qty=1, dev=dev[cp], ip=ip[cp], ctry=ctry[cp])
        for par, t, et in ((f1p, f1t, PAY_FAILED), (okp, okt, PURCHASE), (f2p, f2t, PAY_FAILED)):
            e_ip, e_ctry = net(par)
            self.add(t, uo[par], et, sess=sess[par], prod=prod_of(par), qty=1, dev=dev[par], ip=e_ip, ctry=e_ctry)

    def scraping_bot(self) -> None:
        rng = self.rng
        m = self.members["scraping_bot"]
        if len(m) == 0:
            return
        nb = len(m)
        b_dev = self.new_devices(nb)
        b_ip = np.full((nb, 3), -1, dtype=np.int64)
        b_ctry = np.full((nb, 3), -1, dtype=np.int64)
        k = rng.integers(1, 4, nb)
        bp, bw = _expand(k)
        b_ip[bp, bw], b_ctry[bp, bw] = self.new_ips(n=len(bp))
        period = self.lognormal_s(8.0, 0.6, nb)  # seconds between requests, per bot
        owner, day = self.abuse_days(self.day0[m], 3)
        n_runs = rng.integers(1, 5, len(owner))
        o, _ = _expand(n_runs)
        b = owner[o]
        n = len(o)
        start = self.any_time(day[o])  # round the clock, not the local daily cycle
        slot = (rng.random(n) * k[b]).astype(np.int64)
        dev, ip, ctry = b_dev[b], b_ip[b, slot], b_ctry[b, slot]
        uo = m[b]
        sess = self.new_sessions(n)
        self.add_sessions(sess, uo, start, dev, ip, ctry)
        has_login = (rng.random(n) < 0.3).astype(np.int64)
        n_view = np.clip(np.round(self.q[uo] * self.lognormal_s(120.0, 0.7, n)), 15, 3000).astype(np.int64)

        def metronome(parent, within):
            return period[b[parent]] * (1.0 + rng.normal(0.0, 0.04, len(parent)))

        (lp, lt), (vp, vt) = self.script(start, [(has_login, 2.0, 0.3), (n_view, metronome, 0)])
        offset = rng.integers(0, len(self.crawl_order), n)
        prod = self.crawl_order[(offset[vp] + _group_rank(vp)) % len(self.crawl_order)]
        self.add(lt, uo[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
        self.add(vt, uo[vp], VIEW, sess=sess[vp], prod=prod, dev=dev[vp], ip=ip[vp], ctry=ctry[vp])

    def fake_review_ring(self) -> None:
        rng = self.rng
        m = self.members["fake_review_ring"]
        if len(m) == 0:
            return
        ring = self.rings["fake_review_ring"]
        nd, devs, ring_ip, ring_ctry, npr, prods = self.ring_assets(ring, (1, 3), self.pool_mid, (2, 5))
        n_rev = 1 + rng.poisson(2.2 * self.q[m])
        o, _ = _expand(n_rev)
        uo = m[o]
        ro = ring[o]
        n = len(o)
        # reviews spread over the ring's day and up to two days after
        day = np.minimum(self.day0[uo] + rng.integers(0, 3, n) * (rng.random(n) < 0.5), self.D - 1)
        start = self.local_start(day, self.country[uo], 0.0)
        use_ring = rng.random(n) < 0.8
        dev = np.where(use_ring, devs[ro, (rng.random(n) * nd[ro]).astype(np.int64)], self.dev_base[uo, 0])
        ip = np.where(rng.random(n) < 0.5, ring_ip[ro], self.ip_base[uo, 0])
        ctry = self.country[uo]
        prod = prods[ro, (rng.random(n) * npr[ro]).astype(np.int64)]
        sess = self.new_sessions(n)
        self.add_sessions(sess, uo, start, dev, ip, ctry)
        has_login = (rng.random(n) < 0.7).astype(np.int64)
        # a minority of members buy once (first review session only)
        buys = ((_group_rank(o) == 0) & (rng.random(len(m)) < 0.3)[o]).astype(np.int64)
        one = np.ones(n, dtype=np.int64)
        (lp, lt), (vp, vt), (cp, ct), (pp, pt), (rp, rt) = self.script(
            start, [(has_login, 3.0, 0.5), (one, 10.0, 0.6), (buys, 15.0, 0.5), (buys, 40.0, 0.5), (one, 90.0, 0.7)]
        )
        self.add(lt, uo[lp], LOGIN, sess=sess[lp], dev=dev[lp], ip=ip[lp], ctry=ctry[lp])
        self.add(vt, uo[vp], VIEW, sess=sess[vp], prod=prod[vp], dev=dev[vp], ip=ip[vp], ctry=ctry[vp])
        self.add(ct, uo[cp], CART, sess=sess[cp], prod=prod[cp], qty=1, dev=dev[cp], ip=ip[cp], ctry=ctry[cp])
        self.add(pt, uo[pp], PURCHASE, sess=sess[pp], prod=prod[pp], qty=1, dev=dev[pp], ip=ip[pp], ctry=ctry[pp])
        rating = np.where(rng.random(len(rp)) < 0.88, 5, 4).astype(np.int8)
        self.add(rt, uo[rp], REVIEW, prod=prod[rp], dev=dev[rp], ip=ip[rp], ctry=ctry[rp], rating=rating,
                 text=self.texts(rating, p_none=0.05, p_ring=0.6))

    def signups(self) -> None:
        """A signup event just before the first session of every new account."""
        new = np.flatnonzero(self.signup_day >= 0)
        if len(new) == 0:
            return
        if not self.sess_meta:
            self.add_sessions(*(np.zeros(0, np.int64),) * 6)
        cols = [np.concatenate(c) for c in zip(*self.sess_meta)]
        sess, user, t, dev, ip, ctry = cols
        sel = np.flatnonzero(self.signup_day[user] >= 0)
        order = sel[np.lexsort((t[sel], user[sel]))]
        us = user[order]
        firsts = order[np.r_[True, us[1:] != us[:-1]]] if len(order) else order
        has = np.zeros(self.U, dtype=bool)
        has[user[firsts]] = True
        first_event = np.full(self.U, np.iinfo(np.int64).max, dtype=np.int64)
        for blk in self.blocks:
            np.minimum.at(first_event, blk["up"] >> 32, blk["t"])
        first_t = np.minimum(t[firsts], first_event[user[firsts]])
        st = np.maximum(first_t - _us(30.0 + self.lognormal_s(60.0, 0.5, len(firsts))), self.t0)
        self.add(st, user[firsts], SIGNUP, sess=sess[firsts], dev=dev[firsts], ip=ip[firsts], ctry=ctry[firsts])
        lone = new[~has[new]]  # signed up and never came back
        t = self.local_start(self.signup_day[lone], self.country[lone], self.chrono[lone])
        self.add(t, lone, SIGNUP, sess=self.new_sessions(len(lone)), dev=self.dev_base[lone, 0], ip=self.ip_base[lone, 0],
                 ctry=self.country[lone])

    # -- output ---------------------------------------------------------------
    def assemble(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        rng = self.rng
        if not self.blocks:  # nobody did anything
            empty = np.zeros(0, dtype=np.int64)
            self.blocks.append({"t": empty, "up": empty, "di": empty, "sess": empty, "small": empty})
        t = np.concatenate([b["t"] for b in self.blocks])
        keep = np.flatnonzero((t >= self.t0) & (t < self.t1))
        order = keep[np.argsort(t[keep], kind="stable")]
        del keep
        t = t[order]
        N = len(t)
        packed = {}
        for name in ("up", "di", "sess", "small"):
            packed[name] = np.concatenate([b[name] for b in self.blocks])[order]
        self.blocks = []
        del order
        lo32 = np.int64(0xFFFFFFFF)
        cols: dict[str, np.ndarray] = {
            "user": (packed["up"] >> 32).astype(np.int32),
            "prod": ((packed["up"] & lo32) - 1).astype(np.int32),
            "dev": ((packed["di"] >> 32) - 1).astype(np.int32),
            "ip": ((packed["di"] & lo32) - 1).astype(np.int32),
            "sess": (packed["sess"] - 1).astype(np.int32),
        }
        small = packed["small"]
        del packed
        cols["etype"] = (small & 0xFF).astype(np.int8)
        cols["ctry"] = (((small >> 8) & 0xFF) - 1).astype(np.int8)
        cols["rating"] = ((small >> 16) & 0xFF).astype(np.int8)
        cols["qty"] = ((small >> 24) & 0xFFFF).astype(np.int16)
        cols["text"] = (((small >> 40) & 0xFFFF) - 1).astype(np.int16)
        del small

        # display numbers are shuffled so that ids carry no information about how they were made
        sess_no = rng.permutation(self.n_sess)
        dev_no = rng.permutation(self.n_dev)
        ip_table = np.concatenate(self.ip_parts) if self.ip_parts else np.zeros(0, np.uint32)

        def ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
            width = max(width, len(str(max(int(numbers.max()) if len(numbers) else 0, 1))))
            s = pc.cast(pa.array(numbers.astype(np.int64) + 10**width), pa.large_string())
            return pc.utf8_replace_slice(s, 0, 1, prefix)

        def take(dictionary: pa.Array, idx: np.ndarray) -> pa.Array:
            """dictionary[idx] as a large_string array, null where idx < 0 (a dictionary cast is
            about twice as fast as pc.take here)."""
            mask = idx < 0
            arr = pa.array(idx, mask=mask) if mask.any() else pa.array(idx)
            return pa.DictionaryArray.from_arrays(arr, dictionary).cast(pa.large_string())

        def ip_strings() -> pa.Array:
            parts = [pc.cast(pa.array(((ip_table >> s) & 255).astype(np.int16)), pa.large_string()) for s in (24, 16, 8, 0)]
            return pc.binary_join_element_wise(*parts, pa.scalar(".", pa.large_string()))

        cat_names = pa.array([c[0] for c in _CATEGORIES], pa.large_string())
        prod = cols["prod"]
        jobs = {
            "user_id": lambda: take(ids("u", np.arange(self.U), 7), cols["user"]),
            "event_type": lambda: take(pa.array(list(EVENT_TYPES), pa.large_string()), cols["etype"]),
            "event_id": lambda: ids("e", np.arange(N), 10),
            "session_id": lambda: take(ids("s", sess_no, 8), cols["sess"]),
            "product_id": lambda: take(ids("p", np.arange(self.p["n_products"]), 6), prod),
            "category": lambda: take(cat_names, np.where(prod >= 0, self.prod_cat[np.maximum(prod, 0)], -1)),
            "device_id": lambda: take(ids("d", dev_no, 7), cols["dev"]),
            "ip": lambda: take(ip_strings(), cols["ip"]),
            "country": lambda: take(pa.array(list(_CC), pa.large_string()), cols["ctry"]),
            "review_text": lambda: take(pa.array(_TEXT_LIST, pa.large_string()), cols["text"]),
        }
        with ThreadPoolExecutor(2) as ex:
            futures = {k: ex.submit(f) for k, f in jobs.items()}
            strings = {k: f.result() for k, f in futures.items()}

        priced = _PRICED[cols["etype"]] & (prod >= 0)
        price = np.where(priced, self.prod_price[np.maximum(prod, 0)], np.nan)
        qty = cols["qty"]
        rating = cols["rating"]
        data: dict[str, Any] = {}
        for name, dtype in EVENT_DTYPES.items():
            if name == "event_time":
                data[name] = pd.arrays.DatetimeArray._from_sequence(t.view("datetime64[us]"), dtype=pd.DatetimeTZDtype("us", "UTC"))
            elif name == "price":
                data[name] = price
            elif name == "quantity":
                data[name] = pd.arrays.IntegerArray(qty.astype(np.int64), qty <= 0)
            elif name == "rating":
                data[name] = pd.arrays.IntegerArray(rating.astype(np.int64), rating <= 0)
            else:
                data[name] = pd.array(strings[name], dtype="str")
        events = pd.DataFrame(data, copy=False)

        uid = pd.array(ids("u", np.arange(self.U), 7), dtype="str")
        names = np.array([""] + list(ABUSE_TYPES), dtype=object)
        labels = pd.DataFrame(
            {
                "user_id": uid,
                "is_anomaly": (self.atype >= 0).astype(np.int64),
                "anomaly_type": pd.array(names[self.atype + 1], dtype="str"),
            }
        )
        return events, labels

    def run(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        self.build_world()
        self.assign_abusers()
        self.normal()
        self.brushing()
        self.refund_abuse()
        self.account_takeover()
        self.card_testing()
        self.scraping_bot()
        self.fake_review_ring()
        self.signups()
        return self.assemble()


def simulate(params: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (events, labels) for `params` (see the module docstring); deterministic per seed."""
    return _Sim(_parse_params(params)).run()
