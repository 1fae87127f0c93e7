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
    ring_rewording float 0.0           chance, per hype phrase and post, that a ring member
                                       (fake_review_ring, and brushing rings' hype reviews) swaps
                                       a phrase of its ring's template for another of the same
                                       kind ("Amazing" -> "Superb"), in [0, 1]: rings that
                                       paraphrase; 0 leaves every output as it was
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

Layout (one random generator, drawn from in this order):

    params.py            the parameters, their defaults and checks
    world.py             World: time window, catalogue, users, devices, IPs, who the abusers
                         are, the event buffer and the helpers behaviours share; Scenario
    normal.py            normal shoppers (every user's background activity)
    scenarios/<type>.py  one module per abuse type, registered in scenarios/__init__.py
    world.signups()      a signup event before the first session of every new account
    output.py            the event buffer as the (events, labels) DataFrames

Adding an abuse scenario is one new module in scenarios/ plus one line in its registry
(`_MODULES` in pipelines/simulate/scenarios/__init__.py, which shows how).
"""
from __future__ import annotations

import pandas as pd

from pipelines.simulate import normal, output
from pipelines.simulate.params import DEFAULT_PARAMS, EVENTS_PER_USER_DAY, n_users_for_events, parse_params
from pipelines.simulate.scenarios import ABUSE_TYPES, SCENARIOS
from pipelines.simulate.world import Scenario, World

__all__ = ["simulate", "n_users_for_events", "ABUSE_TYPES", "DEFAULT_PARAMS", "EVENTS_PER_USER_DAY", "SCENARIOS",
           "Scenario"]


def simulate(params: dict | None = None, *, scenarios: tuple[Scenario, ...] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (events, labels) for `params` (see the module docstring); deterministic per seed.

    `scenarios` replaces the registered abuse scenarios (SCENARIOS) for this call, e.g. to try a
    new one before registering it; anomaly_mix then names these."""
    scenarios = SCENARIOS if scenarios is None else tuple(scenarios)
    from pipelines.progress import Progress

    w = World(parse_params(params, tuple(s.name for s in scenarios)), scenarios)
    # progress per part: the world, the normal shoppers, each abuse scenario, signups, the tables
    progress = Progress("simulated", len(w.scenarios) + 4, "parts")
    w.build_world()
    w.assign_abusers()
    progress.update(1, "world")
    normal.shoppers(w)
    progress.update(1, "normal shoppers")
    for s in w.scenarios:
        members = w.members[s.name]
        if len(members):
            s.generate(w, members)
        progress.update(1, s.name)
    w.signups()
    progress.update(1, "signups")
    events, labels = output.assemble(w)
    progress.update(1, "tables")
    progress.close()
    return events, labels
