"""The abuse scenarios, one module each, and the registry that decides which ones run.

Each module defines `generate(w, m)` and `SCENARIO = Scenario(name, generate, ...)` (see
pipelines.simulate.world.Scenario for the fields). Scenarios run in the order of `_MODULES`,
after the normal shoppers, each drawing from the same random generator; that order is also the
order of ABUSE_TYPES and of the abusers' assignment, so it is part of what a seed means.

Adding a scenario (say "coupon_abuse"; tests/test_simulate.py runs this example):

1. write pipelines/simulate/scenarios/coupon_abuse.py (refund_abuse.py is a longer example):

       # Coupon abuse: mostly new accounts, each buying one cheap item on its abuse day.
       from __future__ import annotations

       import numpy as np

       from pipelines.simulate.world import CART, PURCHASE, Scenario, World


       def generate(w: World, m: np.ndarray) -> None:
           n = len(m)  # m: the user indices of this scenario's abusers
           start = w.local_start(w.day0[m], w.country[m], w.chrono[m])
           dev, ip, ctry = w.dev_base[m, 0], w.ip_base[m, 0], w.country[m]
           sess = w.new_sessions(n)
           w.add_sessions(sess, m, start, dev, ip, ctry)
           one = np.ones(n, dtype=np.int64)
           (cp, ct), (pp, pt) = w.script(start, [(one, 10.0, 0.5), (one, 30.0, 0.5)])
           prod = w.pick_from_pool(w.pool_cheap, n)
           w.add(ct, m[cp], CART, sess=sess[cp], prod=prod[cp], qty=1, dev=dev[cp], ip=ip[cp], ctry=ctry[cp])
           w.add(pt, m[pp], PURCHASE, sess=sess[pp], prod=prod[pp], qty=1, dev=dev[pp], ip=ip[pp], ctry=ctry[pp])


       SCENARIO = Scenario("coupon_abuse", generate, p_new_account=0.9)

2. register it: add "coupon_abuse" as the last entry of `_MODULES` below.

That is all: the type appears in ABUSE_TYPES, in the labels and in the anomaly_mix param
(equal weight by default). Before registering, `simulate(params, scenarios=SCENARIOS +
(SCENARIO,))` runs it. Appending it changes the data of every seed (the abusers are drawn over
one more type), so update FROZEN_OUTPUT in tests/test_simulate.py in the same commit and give
the new type its signature test there.
"""
from __future__ import annotations

from importlib import import_module

from pipelines.simulate.world import Scenario

_MODULES: tuple[str, ...] = (
    "brushing",
    "refund_abuse",
    "account_takeover",
    "card_testing",
    "scraping_bot",
    "fake_review_ring",
)

SCENARIOS: tuple[Scenario, ...] = tuple(import_module(f"{__name__}.{name}").SCENARIO for name in _MODULES)
ABUSE_TYPES: tuple[str, ...] = tuple(s.name for s in SCENARIOS)

__all__ = ["SCENARIOS", "ABUSE_TYPES", "Scenario"]
