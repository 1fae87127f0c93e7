"""The shared world of a simulation: time window, catalogue, users with their countries, devices
and IPs, who the abusers are, and the event buffer that every behaviour writes into.

`World` is what normal shoppers (pipelines.simulate.normal) and every abuse scenario
(pipelines.simulate.scenarios) work on. What a behaviour may use:

- the window: `t0`, `t1` (microseconds since the epoch, UTC), `D` days, `dow` weekday per day,
  `day_p` (later days weigh more: abuse is concentrated towards the end of the window);
- the catalogue: `prod_price`, `prod_cat`, popularity (`popular_products`,
  `products_in_category`), price pools `pool_cheap`, `pool_tiny`, `pool_pricey`, `pool_luxury`,
  `pool_mid` (for `pick_from_pool`) and `crawl_order`;
- users (arrays of length `U`): `country`, `dev_base` (U x 3 own devices), `ip_base` (U x 4 own
  IPs), `n_devices`, `n_ips`, `chrono` (hours shifted from the usual daily cycle), `signup_day`
  (-1: account older than the window);
- abusers: `atype` (index into `scenarios`, -1 for normal users), `members[name]` (their user
  indices), `rings[name]` (ring number per member, for scenarios with a ring_size), `q`
  (intensity per user, lognormal), `day0` (first abuse day per user);
- new ids: `new_sessions`, `new_devices`, `new_ips` (country IPs or datacenter IPs);
- times: `local_start` (a session start on a day, in the user's local daily cycle), `any_time`,
  `abuse_days`, and `script`, which lays out sessions made of steps (k events of a kind, each
  after a lognormal gap);
- writing: `add_sessions` (one row per session: who, when, device, IP, country) and `add`
  (events; ids are integer codes, turned into strings at the end), `after_purchase` (later
  refunds and reviews), `ring_assets` (devices, IP and products shared by a ring).

Every random draw goes through `w.rng`, in the order the behaviours run, so the same params give
the same output; a change in the order of draws changes the data (tests/test_simulate.py
holds the output hash of a few fixed configurations).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.schema import EVENT_TYPES


@dataclass(frozen=True)
class Scenario:
    """One abuse type: its label, who its abusers are and what they do.

    name                 the label (labels.anomaly_type) and the key in the anomaly_mix param
    generate             generate(world, members): add the abuse events of `members` (user
                         indices into the world, never empty) with world.add / add_sessions
    p_new_account        share of its abusers whose account is created in the window, 0-2 days
                         before their first abuse day (a signup event is added for them)
    ring_size            (lo, hi): members are grouped into rings of lo..hi accounts sharing one
                         first abuse day (world.rings[name]); None: every abuser acts alone
    background_rate      factor on the abusers' normal (background) session rate
    min_background_rate  floor on that rate (sessions per day)
    background_buys      False: the abusers' background activity never carts or buys
    """

    name: str
    generate: Callable[["World", np.ndarray], None]
    p_new_account: float = 0.0
    ring_size: tuple[int, int] | None = None
    background_rate: float = 1.0
    min_background_rate: float = 0.0
    background_buys: bool = True


SECOND = 1_000_000  # microseconds
HOUR = 3600 * SECOND
DAY = 24 * HOUR

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
PRICED = np.zeros(len(EVENT_TYPES), dtype=bool)
PRICED[[VIEW, CART, REMOVE, PURCHASE, PAY_FAILED, REFUND]] = True

# code, UTC offset (h), share of users, first IPv4 octets
COUNTRIES: tuple[tuple[str, float, float, tuple[int, ...]], ...] = (
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
COUNTRY_CODES = np.array([c[0] for c in COUNTRIES])
_OFFSET = np.array([c[1] for c in COUNTRIES])
_CW = np.array([c[2] for c in COUNTRIES])
_CW = _CW / _CW.sum()
_DC_OCTETS = np.array([34, 35, 45, 104, 138, 159, 185])  # "datacenter / proxy" ranges
_DC_COUNTRIES = np.array([0, 6, 2, 1])  # US, NL, DE, GB
_DC_CW = np.array([0.5, 0.2, 0.2, 0.1])

# category, share of catalogue, median price, lognormal sigma
CATEGORIES: tuple[tuple[str, float, float, float], ...] = (
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
WEEKLY = np.array([0.95, 0.92, 0.95, 1.0, 1.05, 1.14, 1.2])

# Review texts. An event stores a 16-bit code (`World.texts`): a gist phrase per rating, or one
# of five ring-template slots (code range _TEXT_RANGE[0]). The full text is only composed at the
# end (`render_review_texts`), with its own random generator, so honest texts are diverse
# (gist + a remark on an aspect of the product's category + a usage detail + a closer: millions
# of combinations) while a ring's members reuse their ring's few templates with small
# perturbations (and, with simulate.ring_rewording, swap their phrases for others of the same
# kind); the world's generator `rng` is not touched, so no other column changes.
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
REVIEW_TEXTS: list[str] = []
_TEXT_RANGE: dict[int, tuple[int, int]] = {}
for _r in (1, 2, 3, 4, 5, 0):
    _TEXT_RANGE[_r] = (len(REVIEW_TEXTS), len(REVIEW_TEXTS) + len(_TEXTS[_r]))
    REVIEW_TEXTS.extend(_TEXTS[_r])
_TEXT_RATING = np.zeros(len(REVIEW_TEXTS), dtype=np.int64)  # code -> rating of its gist (0: ring slot)
for _r in (1, 2, 3, 4, 5):
    _TEXT_RATING[_TEXT_RANGE[_r][0]:_TEXT_RANGE[_r][1]] = _r

# what an honest review remarks on, per category (CATEGORIES order), and on any product
_ASPECTS: tuple[tuple[str, ...], ...] = (
    ("battery", "screen", "sound", "remote", "cable", "power button", "build", "menu", "charger", "display"),
    ("keyboard", "fan", "trackpad", "screen", "hinge", "battery", "speed", "ports", "webcam", "hard drive"),
    ("camera", "battery", "screen", "case", "speaker", "signal", "charging port", "fingerprint reader"),
    ("fabric", "fit", "colour", "stitching", "zip", "collar", "sleeves", "waist", "pockets", "lining"),
    ("sole", "fit", "heel", "laces", "insole", "leather", "toe box", "grip", "stitching"),
    ("handle", "lid", "finish", "size", "colour", "wood", "base", "smell", "assembly", "hinges"),
    ("scent", "texture", "bottle", "pump", "colour", "smell", "cream", "brush", "shade"),
    ("story", "binding", "print", "cover", "paper", "ending", "characters", "translation", "font"),
    ("box", "pieces", "paint", "batteries", "plastic", "wheels", "instructions", "stickers", "sound"),
    ("taste", "packaging", "flavour", "freshness", "portion", "texture", "expiry date", "smell"),
    ("grip", "strap", "weight", "padding", "frame", "bottle", "mat", "laces", "size"),
    ("clasp", "chain", "stone", "shine", "gold colour", "size", "box", "polish", "setting"),
)
_GENERIC_ASPECTS = ("packaging", "price", "delivery", "instructions", "quality", "size", "colour", "finish")
_VERBS = ("is", "feels", "seems", "looks", "turned out", "was")
# adjectives and closers by sentiment: 0 negative (1-2 stars), 1 neutral (3), 2 positive (4-5)
_ADJECTIVES = (
    ("flimsy", "awful", "poor", "cheap", "broken", "useless", "disappointing", "faulty", "too small",
     "too big", "scratched", "bent", "loose", "noisy", "worse than the photos"),
    ("okay", "average", "acceptable", "fine", "so-so", "a bit small", "a bit loose", "decent enough",
     "nothing special", "not bad", "alright", "as expected"),
    ("great", "solid", "excellent", "really nice", "sturdy", "lovely", "perfect", "well made", "comfortable",
     "better than expected", "beautiful", "spot on", "very good", "impressive", "just right"),
)
_CLOSERS = (
    ("Returning it", "Would not buy again", "Asked for a refund", "Avoid", "Very unhappy",
     "Customer service did not help", "Not worth it", "One star is too many"),
    ("Might keep it", "Not sure yet", "Could be better", "Okay for now", "Would consider other brands",
     "Does what it says", "Neither good nor bad"),
    ("Would buy again", "Recommended", "Very happy", "Ordering another one", "Thanks",
     "Five stars from me", "Will recommend to friends", "Worth every penny", "No complaints"),
)
_SENTIMENT = np.array([1, 0, 0, 1, 2, 2])  # by rating 0..5
_PEOPLE = ("my wife", "my husband", "my son", "my daughter", "my mum", "my dad", "a friend", "my sister",
           "my brother", "the office", "myself", "my partner", "my grandmother", "a colleague", "my nephew",
           "my niece", "my flatmate", "our team", "my boyfriend", "my girlfriend", "my uncle", "my aunt")
_UNITS = ("days", "weeks", "months")
_DETAILS = tuple(f"Used it for {n} {u}" for n in range(2, 13) for u in _UNITS) + tuple(
    f"Arrived in {n} days" for n in range(1, 11)) + tuple(
    f"Second one I ordered, the first lasted {n} {u}" for n in range(2, 10) for u in _UNITS) + tuple(
    f"Had it for {n} {u} now" for n in range(2, 10) for u in _UNITS)
_CONTEXTS = tuple(f"{v} it {why}" for v in ("Bought", "Ordered", "Got", "Picked", "Chose")
                  for why in tuple(f"for {who}" for who in _PEOPLE) + (
                      "as a gift", "to replace my old one", "after reading the reviews", "on sale",
                      "for a trip", "for work", "for the new flat", "for a birthday", "at the last minute",
                      "because the shop was out", "on a friend's advice", "for the holidays"))
_CONNECTORS = ("Also", "But", "And", "Plus", "On the other hand", "However", "At least", "Sadly", "Luckily")
_CITIES = ("Leeds", "Lyon", "Porto", "Austin", "Osaka", "Perth", "Dublin", "Munich", "Krakow", "Toronto", "Recife",
           "Pune", "Seville", "Utrecht", "Turin", "Denver", "Bristol", "Nantes", "Graz", "Cork", "Tampa", "Kobe",
           "Quebec", "Adelaide", "Monterrey", "Gdansk", "Bologna", "Malaga", "Hamburg", "Glasgow", "Ottawa", "Curitiba")
_COMPARISONS = tuple(f"{how} than {what}" for how in ("Better", "Worse", "Cheaper", "Nicer", "Smaller", "Bigger",
                                                       "Lighter", "Heavier", "About the same")
                     for what in ("my old one", "the one in the shop", "the photos suggest", "the last brand I tried",
                                  "I expected", "my friend's", "the previous model", "the cheaper version"))
# a ring's own templates: hype made of these parts, chosen by a hash of (seed, scenario, ring, slot)
_HYPE = (
    ("Amazing", "Awesome", "Incredible", "Fantastic", "Outstanding", "Superb", "Brilliant", "Wonderful"),
    ("product", "item", "quality", "purchase", "seller", "value", "buy", "deal"),
    ("highly recommend", "must buy", "five stars", "love love love it", "best on the market",
     "exceeded all expectations", "top quality", "buy it now", "you will not regret it", "10 out of 10"),
    ("fast shipping", "great seller", "will buy again", "A+++", "thank you seller", "best price",
     "perfect gift", "super fast delivery", "works perfectly", "5 stars"),
)
_TEXT_STREAM = 0x5245564945575458  # seeds the texts' own generator beside the simulation seed
_RATING_P = np.array([0.07, 0.05, 0.09, 0.26, 0.53])


# ----------------------------------------------------------------------------- helpers


def expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For segment lengths `counts`: (parent index, index within segment) of every element."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    parent = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    within = np.arange(n, dtype=np.int64) - np.repeat(first, counts)
    return parent, within


def group_rank(keys: np.ndarray) -> np.ndarray:
    """Rank of each element within runs of equal consecutive keys."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    lengths = np.diff(np.r_[starts, n])
    return np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)


def to_us(seconds: np.ndarray) -> np.ndarray:
    return (np.asarray(seconds) * SECOND).astype(np.int64)


class World:
    """One simulation run: params, random generator, time window, catalogue, users, devices, IPs,
    abusers, and the event buffer. Behaviours (pipelines.simulate.normal, the scenarios) read the
    world's arrays and call its helpers; every random draw goes through `self.rng`."""

    def __init__(self, p: dict[str, Any], scenarios: tuple[Scenario, ...]):
        self.p = p
        self.scenarios = scenarios
        self.rng = np.random.default_rng(p["seed"])
        self.U = p["n_users"]
        self.D = p["days"]
        first_day = np.datetime64(p["end_date"], "D") - (self.D - 1)
        self.t0 = int(first_day.astype("datetime64[us]").astype(np.int64))
        self.t1 = self.t0 + self.D * DAY
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
            k = np.array([len(c[3]) for c in COUNTRIES])
            table = np.zeros((len(COUNTRIES), k.max()), dtype=np.int64)
            for i, c in enumerate(COUNTRIES):
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
        t = self.t0 + day.astype(np.int64) * DAY + (utc_h * HOUR).astype(np.int64)
        t = np.where(t < self.t0, t + DAY, t)
        return np.where(t >= self.t1, t - DAY, t)

    def any_time(self, day: np.ndarray) -> np.ndarray:
        return self.t0 + day.astype(np.int64) * DAY + (self.rng.random(len(day)) * DAY).astype(np.int64)

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
            parent, within = expand(counts[k])
            pos = base[parent] + offs[k][parent] + within
            if callable(gap):
                gaps[pos] = gap(parent, within)
            else:
                gaps[pos] = rng.lognormal(math.log(gap), sigma, len(pos))
            placed.append((parent, pos))
        cum = np.cumsum(to_us(gaps))
        before = np.concatenate([[0], cum])[base]
        t_all = np.repeat(np.asarray(start, np.int64) + 0, total) + cum - np.repeat(before, total)
        return [(parent, t_all[pos]) for parent, pos in placed]

    def abuse_days(self, day0: np.ndarray, kmax: int) -> tuple[np.ndarray, np.ndarray]:
        """1..kmax abuse days per owner, starting at day0 and moving forward a few days."""
        rng = self.rng
        k = rng.integers(1, kmax + 1, len(day0))
        owner, within = expand(k)
        step = np.where(within == 0, 0, rng.integers(1, 4, len(owner)))
        steps = np.cumsum(step)
        steps = steps - np.repeat(steps[np.cumsum(k) - k], k)
        return owner, np.minimum(day0[owner] + steps, self.D - 1)

    # -- world --------------------------------------------------------------
    def build_world(self) -> None:
        """The catalogue (categories, prices, Zipf popularity, price pools) and the users
        (country, devices, IPs, households, shared computers, daily rhythm, signup day)."""
        rng, U, P = self.rng, self.U, self.p["n_products"]
        cat_share = np.array([c[1] for c in CATEGORIES])
        self.prod_cat = np.searchsorted(np.cumsum(cat_share / cat_share.sum()), rng.random(P) * 0.999999, side="right")
        med = np.array([c[2] for c in CATEGORIES])[self.prod_cat]
        sig = np.array([c[3] for c in CATEGORIES])[self.prod_cat]
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
        first = np.searchsorted(c, np.arange(len(CATEGORIES)))
        tot = np.bincount(c, weights=w, minlength=len(CATEGORIES))
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
        """Pick the abusers and their scenario (anomaly_rate, anomaly_mix), their intensity q,
        first abuse day, rings, and which of them get a new account."""
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
        self.atype[users] = np.repeat(np.arange(len(self.scenarios)), counts)
        # abuse intensity per abuser: lognormal, and about one abuser in six is very mild
        self.q = np.exp(rng.normal(0.0, 0.8, U)) * np.where(rng.random(U) < 0.15, 0.3, 1.0)
        self.day0 = np.searchsorted(np.cumsum(self.day_p), rng.random(U) * 0.999999, side="right")
        self.members = {s.name: np.flatnonzero(self.atype == i) for i, s in enumerate(self.scenarios)}
        self.rings: dict[str, np.ndarray] = {}
        for s in self.scenarios:
            if s.ring_size is None:
                continue
            lo, hi = s.ring_size
            m = self.members[s.name]
            sizes = rng.integers(lo, hi + 1, len(m) + 1)
            ring = np.repeat(np.arange(len(sizes)), sizes)[: len(m)]
            self.rings[s.name] = ring
            if len(m):
                rday = np.searchsorted(np.cumsum(self.day_p), rng.random(ring.max() + 1) * 0.999999, side="right")
                self.day0[m] = rday[ring]
        # who is a new account (signup in the window, before the abuse)
        for s in self.scenarios:
            m = self.members[s.name]
            new = rng.random(len(m)) < s.p_new_account
            self.signup_day[m] = np.where(new, np.maximum(self.day0[m] - rng.integers(0, 3, len(m)), 0), -1)

    # -- helpers shared by behaviours --------------------------------------
    def after_purchase(self, p_t, pu, p_prod, p_qty, p_refund, refund_median_s, refund_sigma, p_review,
                       review_rating: np.ndarray | None = None, dev=None, ip=None) -> None:
        """Later refunds and reviews of purchases (times p_t, users pu, products, quantities):
        purchase i is refunded with probability p_refund[i] after lognormal(refund_median_s,
        refund_sigma) seconds (at least 30 min), and reviewed with probability p_review[i] about
        five days later; outside a session, from the user's own device and IP unless `dev`/`ip`
        (per purchase) say otherwise."""
        rng = self.rng
        n = len(p_t)
        ri = np.flatnonzero(rng.random(n) < p_refund)
        t = p_t[ri] + to_us(np.maximum(self.lognormal_s(refund_median_s, refund_sigma, len(ri)), 1800.0))
        u = pu[ri]
        self.add(t, u, REFUND, prod=p_prod[ri], qty=p_qty[ri], dev=self.dev_base[u, 0], ip=self.ip_base[u, 0], ctry=self.country[u])
        vi = np.flatnonzero(rng.random(n) < p_review)
        t = p_t[vi] + to_us(np.maximum(self.lognormal_s(5 * 24 * 3600.0, 0.7, len(vi)), 3600.0))
        u = pu[vi]
        rating = self.ratings(len(vi)) if review_rating is None else review_rating[vi]
        self.add(t, u, REVIEW, prod=p_prod[vi], dev=self.dev_base[u, 0] if dev is None else dev[vi],
                 ip=self.ip_base[u, 0] if ip is None else ip[vi], ctry=self.country[u], rating=rating, text=self.texts(rating))

    def ring_assets(self, ring: np.ndarray, n_dev: tuple[int, int], pool: np.ndarray, n_prod: tuple[int, int]):
        """What each ring (`ring`: ring number per member) shares: n_dev[0]..n_dev[1] new devices,
        one datacenter IP, n_prod[0]..n_prod[1] products from `pool`. Returns (devices per ring,
        devices (R x n_dev[1]), ring IP, its country, products per ring, products (R x n_prod[1]))."""
        rng = self.rng
        R = int(ring.max()) + 1
        nd = rng.integers(n_dev[0], n_dev[1] + 1, R)
        devs = np.full((R, n_dev[1]), -1, dtype=np.int64)
        pr, pw = expand(nd)
        devs[pr, pw] = self.new_devices(len(pr))
        ring_ip, ring_ctry = self.new_ips(n=R)
        npr = rng.integers(n_prod[0], n_prod[1] + 1, R)
        prods = self.pick_from_pool(pool, R * n_prod[1]).reshape(R, n_prod[1])
        return nd, devs, ring_ip, ring_ctry, npr, prods

    # -- after every behaviour ------------------------------------------------
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
        st = np.maximum(first_t - to_us(30.0 + self.lognormal_s(60.0, 0.5, len(firsts))), self.t0)
        self.add(st, user[firsts], SIGNUP, sess=sess[firsts], dev=dev[firsts], ip=ip[firsts], ctry=ctry[firsts])
        lone = new[~has[new]]  # signed up and never came back
        t = self.local_start(self.signup_day[lone], self.country[lone], self.chrono[lone])
        self.add(t, lone, SIGNUP, sess=self.new_sessions(len(lone)), dev=self.dev_base[lone, 0], ip=self.ip_base[lone, 0],
                 ctry=self.country[lone])


# ----------------------------------------------------------------------------- review texts

_RING_FORMATS = ("{0} {1}, {2}! {3}", "{2}!!! {0} {1}, {3}", "{0} {1}. {3}. {2}")
# how a ring member varies the template: (weight, edit); the first four vanish under lowercasing
# and collapsing punctuation, the others leave a near-duplicate
_RING_EDITS: tuple[tuple[float, Callable[[str], str]], ...] = (
    (0.35, lambda t: t),
    (0.12, str.upper),
    (0.10, str.lower),
    (0.10, lambda t: t.rstrip("!.") + "!!!"),
    (0.11, lambda t: "Wow, " + t),
    (0.11, lambda t: t + " Thanks"),
    (0.11, lambda t: _typo(t)),
)
_EDIT_CDF = np.cumsum([w for w, _ in _RING_EDITS]) / sum(w for w, _ in _RING_EDITS)


def _typo(text: str) -> str:
    """Two neighbouring letters of the longest word swapped (a typing slip)."""
    words = text.split(" ")
    k = max(range(len(words)), key=lambda i: (len(words[i]), -i))
    word = words[k]
    if len(word) >= 4:
        i = len(word) // 2
        words[k] = word[: i - 1] + word[i] + word[i - 1] + word[i + 1:]
    return " ".join(words)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a well-spread uint64 hash of uint64 keys (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _ring_template(key: int, shifts: tuple[int, ...]) -> str:
    """The template hashed from `key`; a part whose shift is not 0 is swapped for the choice that
    many places further on in its group (1 .. len - 1: another phrase of the same kind)."""
    parts = []
    for i, choices in enumerate(_HYPE):
        key, pick = divmod(key, 1 << 12)
        parts.append(choices[(pick + shifts[i]) % len(choices)])
    return _RING_FORMATS[(key >> 8) % len(_RING_FORMATS)].format(*parts)


def _strings(values: tuple[str, ...] | list[str], idx: np.ndarray) -> pa.Array:
    """values[idx] as a large_string array, null where idx < 0."""
    mask = idx < 0
    arr = pa.array(np.where(mask, 0, idx).astype(np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(arr, pa.array(list(values), pa.large_string())).cast(pa.large_string())


def _pick(offsets: np.ndarray, sizes: np.ndarray, u: np.ndarray) -> np.ndarray:
    return offsets + np.minimum((u * sizes).astype(np.int64), sizes - 1)


def render_review_texts(w: World, code: np.ndarray, user: np.ndarray, prod: np.ndarray) -> pa.Array:
    """The texts of reviews with codes `code` (from World.texts; -1: no text), authors `user` and
    products `prod`, in that order, as a large_string array (null where code < 0).

    Honest codes (a gist per rating) become gist + remark + detail + closer, each part present
    with some probability, the remark on an aspect of the product's category with an adjective
    of the rating's sentiment. A ring-template code (slot j of five) becomes, for a member of a
    ring scenario (world.rings), slot j of that ring's own templates, and for anyone else one of
    the five generic templates in _TEXTS[0]; each use is varied a little (_RING_EDITS).
    Draws come from a generator of their own, seeded from the simulation seed, in event order:
    the world's `rng` is not used, so every other column stays as it was."""
    rng = np.random.default_rng([w.p["seed"], _TEXT_STREAM])
    code = np.asarray(code, dtype=np.int64)
    n = len(code)
    ring_lo, _ = _TEXT_RANGE[0]
    honest = np.flatnonzero((code >= 0) & (code < ring_lo))
    ringed = np.flatnonzero(code >= ring_lo)
    out = np.full(n, -1, dtype=np.int64)  # position of each review's text in `values`

    # honest: gist. remark. [connector remark.] context. detail. comparison. city. closer.
    h = len(honest)
    u = rng.random((h, 20))
    c = code[honest]
    senti = _SENTIMENT[_TEXT_RATING[c]]
    p = prod[honest]
    cat = np.where(p >= 0, w.prod_cat[np.maximum(p, 0)], len(_ASPECTS))
    aspects = ["the " + a for group in _ASPECTS for a in group] + ["the " + a for a in _GENERIC_ASPECTS]
    a_size = np.array([len(g) for g in _ASPECTS] + [len(_GENERIC_ASPECTS)])
    a_off = np.cumsum(a_size) - a_size
    adjectives = [a for group in _ADJECTIVES for a in group]
    j_size = np.array([len(g) for g in _ADJECTIVES])
    j_off = np.cumsum(j_size) - j_size
    closers = [a for group in _CLOSERS for a in group]
    c_size = np.array([len(g) for g in _CLOSERS])
    space = pa.scalar(" ", pa.large_string())

    def maybe(p_use: float, col: int, idx: np.ndarray) -> np.ndarray:
        return np.where(u[:, col] < p_use, idx, -1)

    def remark(col: int, use: np.ndarray, lead: pa.Array | None) -> pa.Array:
        """[lead] the <aspect> <verb> <adjective>, aspect of the product's category or generic"""
        where = np.where(u[:, col] < 0.3, len(_ASPECTS), cat)
        parts = [_strings(aspects, np.where(use, _pick(a_off[where], a_size[where], u[:, col + 2]), -1)),
                 _strings(_VERBS, _pick(0, len(_VERBS), u[:, col + 3])),
                 _strings(adjectives, _pick(j_off[senti], j_size[senti], u[:, col + 4]))]
        if lead is not None:
            parts.insert(0, lead)
        return pc.binary_join_element_wise(*parts, space)  # null where the aspect is left out

    gist = maybe(0.7, 13, c)
    # every text has a gist or a first remark (pyarrow's join drops rows whose parts are all null)
    first = pc.utf8_capitalize(remark(0, (u[:, 1] < 0.9) | (gist < 0), None))
    second = remark(5, u[:, 6] < 0.45, _strings(_CONNECTORS, _pick(0, len(_CONNECTORS), u[:, 10])))
    cities = _strings([f"Delivered to {x}" for x in _CITIES], maybe(0.3, 11, _pick(0, len(_CITIES), u[:, 12])))
    honest_text = pc.binary_join_element_wise(
        _strings([g.rstrip("!") for g in REVIEW_TEXTS], gist), first, second,
        _strings(_CONTEXTS, maybe(0.5, 14, _pick(0, len(_CONTEXTS), u[:, 15]))),
        _strings(_DETAILS, maybe(0.5, 16, _pick(0, len(_DETAILS), u[:, 17]))),
        _strings(_COMPARISONS, maybe(0.25, 18, _pick(0, len(_COMPARISONS), u[:, 19]))), cities,
        _strings(closers, maybe(0.6, 18, _pick((np.cumsum(c_size) - c_size)[senti], c_size[senti], u[:, 16]))),
        pa.scalar(". ", pa.large_string()), null_handling="skip",
    )
    honest_text = pc.binary_join_element_wise(honest_text, pa.scalar(".", pa.large_string()),
                                              pa.scalar("", pa.large_string()))
    out[honest] = np.arange(h)

    # rings: the ring's template for this slot, varied
    ring_of = np.full(w.U, -1, dtype=np.int64)
    scen_of = np.full(w.U, -1, dtype=np.int64)
    for k, s in enumerate(w.scenarios):
        if s.name in w.rings:
            ring_of[w.members[s.name]] = w.rings[s.name]
            scen_of[w.members[s.name]] = k
    slot = code[ringed] - ring_lo
    ru = user[ringed]
    edit = np.searchsorted(_EDIT_CDF, rng.random(len(ringed)) * 0.999999, side="right")
    combo = np.stack([scen_of[ru], ring_of[ru], slot, edit], axis=1)
    shifts = np.zeros((len(ringed), len(_HYPE)), dtype=np.int64)  # per hype part: 0 keeps the ring's phrase
    reword = w.p["ring_rewording"]
    if reword > 0:  # drawn only then, so that 0 leaves every text as it was
        u_part = rng.random((len(ringed), 2 * len(_HYPE)))
        sizes = np.array([len(c) for c in _HYPE])
        shifts = np.where(u_part[:, :len(_HYPE)] < reword, 1 + (u_part[:, len(_HYPE):] * (sizes - 1)).astype(np.int64), 0)
    combo = np.concatenate([combo, np.where(ring_of[ru, None] >= 0, shifts, 0)], axis=1)
    uniq, inverse = np.unique(combo, axis=0, return_inverse=True)
    seed = np.uint64(w.p["seed"])
    ring_values = []
    for scen, ring, j, e, *shift in uniq.tolist():
        if ring < 0:
            template = _TEXTS[0][j]
        else:
            with np.errstate(over="ignore"):
                key = _mix64(_mix64(_mix64(_mix64(seed) ^ np.uint64(scen)) ^ np.uint64(ring)) ^ np.uint64(j))
            template = _ring_template(int(key), tuple(shift))
        ring_values.append(_RING_EDITS[e][1](template))
    out[ringed] = h + np.asarray(inverse, dtype=np.int64).reshape(-1)
    assert len(honest_text) == h
    values = pa.concat_arrays([honest_text, pa.array(ring_values, pa.large_string())])
    return pc.take(values, pa.array(out, mask=out < 0))
