"""Event logs for the sequence detector's tests: ordinary accounts whose sessions follow the
usual order (log in, sometimes after a failed try or two, sometimes on a new device; look at
products; add to cart; buy), and planted takeovers with the same kinds of events in another
order: failed logins, then a new device, then a burst of purchases before any browsing."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.schema import EVENT_DTYPES

END = pd.Timestamp("2026-11-21", tz="UTC")


def _session(rng, user, t, device, planted):
    rows = []

    def add(kind, gap, price=None, dev=None):
        nonlocal t
        t = t + pd.Timedelta(seconds=float(gap))
        rows.append({"event_time": t, "user_id": user, "event_type": kind, "price": price,
                     "device_id": dev or device, "ip": f"ip-{user}-{dev or device}", "country": "DE"})

    fails = 3 if planted else rng.choice([0, 0, 1, 2, 3], p=[0.4, 0.2, 0.2, 0.1, 0.1])
    for _ in range(fails):
        add("login_failed", rng.uniform(3, 8))
    add("login", rng.uniform(3, 8))
    n_buy = 3 if planted else int(rng.integers(0, 4))
    n_view = 3 if planted else int(rng.integers(2, 6))
    if planted:  # the takeover buys first, and only then looks around
        for _ in range(n_buy):
            add("purchase", rng.uniform(15, 40), price=float(rng.uniform(200, 900)))
        for _ in range(n_view):
            add("view", rng.uniform(20, 90))
        for _ in range(n_buy):
            add("cart", rng.uniform(20, 90), price=float(rng.uniform(200, 900)))
        return rows
    for _ in range(n_view):
        add("view", rng.uniform(20, 90))
    for _ in range(n_buy):
        price = float(rng.uniform(200, 900))
        add("cart", rng.uniform(20, 90), price=price)
        add("purchase", rng.uniform(15, 40), price=price)
    return rows


def event_log(seed: int, n_normal: int = 300, n_planted: int = 10, shuffled: bool = False
              ) -> tuple[pd.DataFrame, list[str]]:
    """(clean-shaped events, the planted users). `shuffled`: each user's events keep their
    times but get their contents in a random order (the same events, no order to learn)."""
    rng = np.random.default_rng(seed)
    rows, planted = [], []
    for u in range(n_normal + n_planted):
        user = f"u{u:04d}"
        is_planted = u >= n_normal
        n_sessions = int(rng.integers(3, 6))
        # half the accounts meet one new device; a takeover victim's one new device is the attacker's
        new_device_session = int(rng.integers(0, n_sessions)) if rng.random() < 0.5 and not is_planted else -1
        days = np.sort(rng.choice(np.arange(1, 20), n_sessions, replace=False))
        user_rows = []
        for s, day in enumerate(days):
            t = END - pd.Timedelta(days=int(day)) + pd.Timedelta(hours=float(rng.uniform(8, 20)))
            device = "d1" if s == new_device_session else "d0"
            user_rows += _session(rng, user, t, device, planted=False)
        if is_planted:
            planted.append(user)
            t = END - pd.Timedelta(hours=float(rng.uniform(2, 10)))
            user_rows += _session(rng, user, t, "attacker", planted=True)
        if shuffled:
            times = [r["event_time"] for r in user_rows]
            contents = [{k: v for k, v in r.items() if k != "event_time"} for r in user_rows]
            order = rng.permutation(len(contents))
            user_rows = [{"event_time": t, **contents[i]} for t, i in zip(times, order)]
        rows += user_rows
    events = pd.DataFrame(rows)
    events["event_id"] = [f"e{i}" for i in range(len(events))]
    # every column of the contract, typed as the clean step leaves them, so features build too
    return events.reindex(columns=list(EVENT_DTYPES)).astype(EVENT_DTYPES), planted
