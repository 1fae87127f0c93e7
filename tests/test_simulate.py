"""The event simulator: contract, determinism, realism of normal users, abuse signatures."""
from __future__ import annotations

import datetime
import hashlib
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.errors import UserError
from pipelines.schema import EVENT_DTYPES, EVENT_TYPES, LABEL_COLUMNS
from pipelines.simulate import ABUSE_TYPES, n_users_for_events, simulate

SMALL = {"seed": 11, "n_users": 600, "days": 7, "end_date": "2026-03-31", "anomaly_rate": 0.1}
MID = {"seed": 5, "n_users": 2000, "days": 14, "anomaly_rate": 0.12}


@pytest.fixture(scope="module")
def small():
    return simulate(SMALL)


@pytest.fixture(scope="module")
def mid():
    return simulate(MID)


def per_user(events: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """A handful of simple per-user counts and ratios, indexed like labels."""
    idx = pd.Index(labels["user_id"], name="user_id")
    counts = pd.crosstab(events["user_id"], events["event_type"]).reindex(idx).fillna(0)
    f = pd.DataFrame(index=idx)
    for t in EVENT_TYPES:
        f[t] = counts[t] if t in counts else 0.0
    g = events.groupby("user_id")
    f["events"] = g.size().reindex(idx).fillna(0)
    f["refund_ratio"] = f["refund"] / f["purchase"].clip(lower=1)
    f["reviews_per_purchase"] = f["review"] / f["purchase"].clip(lower=1)
    f["devices"] = g["device_id"].nunique().reindex(idx).fillna(0)
    f["countries"] = g["country"].nunique().reindex(idx).fillna(0)
    f["ips"] = g["ip"].nunique().reindex(idx).fillna(0)
    f["products"] = g["product_id"].nunique().reindex(idx).fillna(0)
    buys = events[events["event_type"] == "purchase"]
    f["mean_purchase_price"] = buys.groupby("user_id")["price"].mean().reindex(idx).fillna(0)
    f["max_purchase_price"] = buys.groupby("user_id")["price"].max().reindex(idx).fillna(0)
    f["purchases_per_product"] = f["purchase"] / buys.groupby("user_id")["product_id"].nunique().reindex(idx).fillna(0).clip(lower=1)
    users_per_device = events.groupby("device_id")["user_id"].nunique()
    f["max_users_per_device"] = events["device_id"].map(users_per_device).groupby(events["user_id"]).max().reindex(idx).fillna(0)
    reviews = events[events["event_type"] == "review"]
    f["five_star"] = reviews[reviews["rating"] == 5].groupby("user_id").size().reindex(idx).fillna(0)
    return f


def groups(labels: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {t: (labels["anomaly_type"] == t).to_numpy() for t in ABUSE_TYPES}
    out["normal"] = (labels["is_anomaly"] == 0).to_numpy()
    return out


# ------------------------------------------------------------------ contract and determinism


def test_same_seed_same_output_and_other_seed_differs(small):
    events, labels = small
    again_events, again_labels = simulate(dict(SMALL))
    pd.testing.assert_frame_equal(events, again_events)
    pd.testing.assert_frame_equal(labels, again_labels)
    other_events, other_labels = simulate({**SMALL, "seed": 12})
    assert len(other_events) != len(events) or not other_events["event_time"].equals(events["event_time"])
    assert not other_labels["anomaly_type"].equals(labels["anomaly_type"])


def test_columns_and_dtypes_follow_the_schema(small):
    events, labels = small
    assert list(events.columns) == list(EVENT_DTYPES)
    assert {c: str(t) for c, t in events.dtypes.items()} == EVENT_DTYPES
    assert list(labels.columns) == list(LABEL_COLUMNS)
    assert str(labels["user_id"].dtype) == "str"
    assert str(labels["anomaly_type"].dtype) == "str"
    assert labels["is_anomaly"].dtype.kind == "i"
    assert events.index.equals(pd.RangeIndex(len(events)))


def test_times_inside_window_sorted_ids_unique(small):
    events, _ = small
    start = pd.Timestamp("2026-03-25", tz="UTC")
    end = pd.Timestamp("2026-04-01", tz="UTC")
    assert events["event_time"].min() >= start
    assert events["event_time"].max() < end
    assert events["event_time"].is_monotonic_increasing
    assert events["event_id"].notna().all() and events["event_id"].is_unique
    for col in ("event_time", "user_id", "event_type", "event_id", "device_id", "ip", "country"):
        assert events[col].notna().all(), col
    # every day of the window has events
    assert events["event_time"].dt.floor("D").nunique() == 7


def test_id_and_value_formats(small):
    events, labels = small
    assert labels["user_id"].str.fullmatch(r"u\d{7}").all()
    assert events["user_id"].isin(set(labels["user_id"])).all()
    assert events["product_id"].dropna().str.fullmatch(r"p\d{6}").all()
    assert events["device_id"].str.fullmatch(r"d\d{7,}").all()
    assert events["session_id"].dropna().str.fullmatch(r"s\d{8,}").all()
    assert events["event_id"].str.fullmatch(r"e\d{10,}").all()
    assert events["country"].str.fullmatch(r"[A-Z]{2}").all()
    octets = events["ip"].str.split(".", expand=True)
    assert octets.shape[1] == 4
    values = octets.astype(int)
    assert ((values >= 0) & (values <= 255)).all().all()
    assert set(events["event_type"].unique()) == set(EVENT_TYPES)


def test_field_rules_per_event_type(small):
    events, _ = small
    et = events["event_type"]
    product_events = et.isin(["view", "cart", "remove_from_cart", "purchase", "refund", "payment_failed", "review"])
    assert events.loc[product_events, "product_id"].notna().all()
    assert events.loc[~product_events, "product_id"].isna().all()
    assert (events["category"].notna() == events["product_id"].notna()).all()
    priced = et.isin(["purchase", "refund", "payment_failed"])
    assert events.loc[priced, "price"].notna().all()
    assert (events["price"].dropna() > 0).all()
    assert events.loc[et.isin(["login", "login_failed", "signup", "review"]), "price"].isna().all()
    qty_events = et.isin(["cart", "remove_from_cart", "purchase", "refund", "payment_failed"])
    assert events.loc[qty_events, "quantity"].notna().all()
    assert events.loc[~qty_events, "quantity"].isna().all()
    assert (events["quantity"].dropna() >= 1).all()
    reviews = et == "review"
    assert events.loc[reviews, "rating"].between(1, 5).all()
    assert events.loc[~reviews, "rating"].isna().all()
    assert events.loc[~reviews, "review_text"].isna().all()
    assert events.loc[reviews, "review_text"].notna().mean() > 0.7
    # sessions never span users
    assert (events.dropna(subset=["session_id"]).groupby("session_id")["user_id"].nunique() == 1).all()


def test_signup_is_the_first_event_of_new_accounts(mid):
    events, labels = mid
    signups = events[events["event_type"] == "signup"]
    assert signups["user_id"].is_unique
    assert 0.05 < len(signups) / len(labels) < 0.4  # new and old accounts
    first = events.groupby("user_id")["event_time"].min()
    assert (signups.set_index("user_id")["event_time"] <= first.reindex(signups["user_id"])).all()


def test_purchases_follow_a_cart_in_the_same_session(mid):
    events, labels = mid
    normal = set(labels.loc[labels["is_anomaly"] == 0, "user_id"])
    ev = events[events["user_id"].isin(normal) & events["session_id"].notna()]
    carts = ev[ev["event_type"] == "cart"].groupby(["session_id", "product_id"])["event_time"].min()
    buys = ev[ev["event_type"] == "purchase"].set_index(["session_id", "product_id"])["event_time"]
    cart_time = carts.reindex(buys.index)
    assert cart_time.notna().all()
    assert (cart_time <= buys).all()


def test_labels_rates_and_mix(mid):
    _, labels = mid
    assert len(labels) == MID["n_users"] and labels["user_id"].is_unique
    assert ((labels["anomaly_type"] != "") == (labels["is_anomaly"] == 1)).all()
    counts = labels["anomaly_type"].value_counts()
    n_ab = round(MID["anomaly_rate"] * MID["n_users"])
    assert labels["is_anomaly"].sum() == n_ab
    for t in ABUSE_TYPES:
        assert abs(counts[t] - n_ab / len(ABUSE_TYPES)) <= 1, t
    _, mixed = simulate({"seed": 1, "n_users": 1000, "days": 3, "anomaly_rate": 0.2,
                         "anomaly_mix": {"card_testing": 3, "brushing": 1}})
    c = mixed["anomaly_type"].value_counts()
    assert set(c.index) == {"", "card_testing", "brushing"}
    assert c["card_testing"] == 150 and c["brushing"] == 50
    _, none = simulate({"seed": 1, "n_users": 300, "days": 3, "anomaly_rate": 0.0})
    assert none["is_anomaly"].sum() == 0 and (none["anomaly_type"] == "").all()


# ------------------------------------------------------------------ normal users are heterogeneous


def test_normal_users_are_heterogeneous(mid):
    events, labels = mid
    f = per_user(events, labels)
    normal = f[groups(labels)["normal"]]
    ev = normal["events"].sort_values(ascending=False)
    top_share = ev.iloc[: len(ev) // 10].sum() / ev.sum()
    assert top_share > 0.35, top_share
    assert normal["view"].quantile(0.9) > 4 * max(normal["view"].median(), 1)
    assert events["country"].nunique() >= 8
    assert (normal["devices"] >= 2).mean() > 0.2 and (normal["devices"] == 1).mean() > 0.2
    assert (normal["countries"] >= 2).sum() > 0  # travellers
    assert (normal["max_users_per_device"] >= 2).sum() > 0  # households / shared computers
    views = events.loc[events["event_type"] == "view", "product_id"].value_counts()
    assert views.iloc[: max(len(views) // 100, 1)].sum() / views.sum() > 0.2  # Zipf-like popularity
    assert events["category"].nunique() >= 10
    buys = events[events["event_type"] == "purchase"]
    assert buys["price"].quantile(0.9) > 5 * buys["price"].quantile(0.1)
    n_view = (events["event_type"] == "view").sum()
    assert 0.005 < len(buys) / n_view < 0.08  # view -> purchase conversion
    normal_ids = set(labels.loc[labels["is_anomaly"] == 0, "user_id"])
    reviews = events.loc[(events["event_type"] == "review") & events["user_id"].isin(normal_ids), "rating"]
    assert (reviews >= 4).mean() > 0.6 and (reviews <= 2).mean() > 0.04
    refunds = (events["event_type"] == "refund").sum()
    assert 0.01 < refunds / len(buys) < 0.15


def test_daily_and_weekly_cycles():
    events, labels = simulate({"seed": 3, "n_users": 3000, "days": 28, "anomaly_rate": 0.0})
    us = events[events["country"] == "US"]
    hours = us["event_time"].dt.hour.value_counts()
    # 00-02 UTC is evening in the US, 08-10 UTC the middle of the night
    assert hours.reindex([8, 9, 10]).sum() < 0.5 * hours.reindex([0, 1, 2]).sum()
    dow = events["event_time"].dt.day_of_week.value_counts()
    assert dow.reindex([5, 6]).mean() > dow.reindex([0, 1, 2]).mean()


# ------------------------------------------------------------------ abuse signatures


def test_each_abuse_type_shows_its_signature(mid):
    events, labels = mid
    f = per_user(events, labels)
    g = groups(labels)
    normal = f[g["normal"]]

    bots = f[g["scraping_bot"]]
    assert (bots["purchase"] == 0).all() and (bots["cart"] == 0).all()
    assert bots["view"].median() > 5 * normal["view"].median()
    assert bots["products"].median() > normal["products"].quantile(0.9)

    testers = f[g["card_testing"]]
    assert testers["payment_failed"].median() > normal["payment_failed"].quantile(0.98)
    assert testers["mean_purchase_price"].median() < normal.loc[normal["purchase"] > 0, "mean_purchase_price"].median()
    assert (testers["signup"] > 0).mean() > 0.5  # mostly new accounts

    ato = f[g["account_takeover"]]
    assert (ato["login_failed"] > 0).all()
    assert (ato["countries"] >= 2).mean() > 0.8 and (ato["devices"] >= 2).all()
    assert (ato["signup"] == 0).all()  # old accounts
    assert ato["max_purchase_price"].median() > normal.loc[normal["purchase"] > 0, "max_purchase_price"].quantile(0.8)

    refunders = f[g["refund_abuse"]]
    assert refunders["refund_ratio"].median() > 0.3 > normal["refund_ratio"].quantile(0.95)
    assert refunders["mean_purchase_price"].median() > normal.loc[normal["purchase"] > 0, "mean_purchase_price"].median()

    brushers = f[g["brushing"]]
    assert brushers["purchases_per_product"].median() >= 2
    assert brushers["max_users_per_device"].median() >= 3
    assert brushers["five_star"].median() >= 2 > normal["five_star"].quantile(0.95)

    ring = f[g["fake_review_ring"]]
    assert ring["review"].median() >= 2 and ring["five_star"].median() >= 2
    assert ring["max_users_per_device"].median() >= 3
    assert ring["reviews_per_purchase"].median() > normal["reviews_per_purchase"].quantile(0.95)


def test_scraping_bots_tick_like_a_metronome(mid):
    events, labels = mid
    bots = set(labels.loc[labels["anomaly_type"] == "scraping_bot", "user_id"])
    views = events[(events["event_type"] == "view") & events["session_id"].notna()]
    gap = views.groupby("session_id")["event_time"].diff().dt.total_seconds()
    stats = gap.groupby(views["session_id"]).agg(["std", "mean", "count"])
    stats = stats[stats["count"] >= 10]
    owner = views.drop_duplicates("session_id").set_index("session_id")["user_id"]
    is_bot = owner.reindex(stats.index).isin(bots)
    cv = stats["std"] / stats["mean"]
    assert cv[is_bot].median() < 0.15 < cv[~is_bot].quantile(0.05)
    # bots run round the clock, not on the local daily cycle
    hours = views.loc[views["user_id"].isin(bots), "event_time"].dt.hour.nunique()
    assert hours >= 20


def test_abuse_is_concentrated_on_few_days(mid):
    events, labels = mid
    testers = set(labels.loc[labels["anomaly_type"] == "card_testing", "user_id"])
    pf = events[(events["event_type"] == "payment_failed") & events["user_id"].isin(testers)]
    days = pf.groupby("user_id")["event_time"].agg(lambda s: s.dt.floor("D").nunique())
    assert days.max() <= 4 and days.median() <= 2
    ato = set(labels.loc[labels["anomaly_type"] == "account_takeover", "user_id"])
    lf = events[(events["event_type"] == "login_failed") & events["user_id"].isin(ato)]
    burst_day = lf.groupby("user_id")["event_time"].agg(lambda s: s.dt.floor("D").value_counts().iloc[0] / len(s))
    assert burst_day.median() > 0.6
    # abuse days spread over the window, more of them at the end
    first_day = pf.groupby("user_id")["event_time"].min().dt.floor("D")
    assert first_day.nunique() >= 3


def test_intensity_varies_and_no_simple_feature_separates_perfectly(mid):
    events, labels = mid
    f = per_user(events, labels)
    g = groups(labels)
    features = ["events", "view", "purchase", "login_failed", "payment_failed", "refund", "review", "refund_ratio",
                "reviews_per_purchase", "devices", "countries", "ips", "products", "mean_purchase_price",
                "max_purchase_price", "purchases_per_product", "max_users_per_device", "five_star"]
    signature = {"scraping_bot": "view", "card_testing": "payment_failed", "account_takeover": "login_failed",
                 "refund_abuse": "refund_ratio", "brushing": "purchases_per_product", "fake_review_ring": "review"}
    for t in ABUSE_TYPES:
        sel = g[t] | g["normal"]
        y = g[t][sel]
        aucs = {c: roc_auc_score(y, f[c].to_numpy()[sel]) for c in features}
        assert max(aucs.values()) < 1.0, (t, aucs)
        assert aucs[signature[t]] > 0.8, (t, aucs[signature[t]])
        # some abusers are mild: the weakest one is within the normal range of its signature
        assert f[signature[t]][g[t]].min() <= f[signature[t]][g["normal"]].quantile(0.999), t


# ------------------------------------------------------------------ params


@pytest.mark.parametrize(
    "bad",
    [
        {"n_users": 0},
        {"n_users": -5},
        {"n_users": 2.5},
        {"n_users": True},
        {"days": 0},
        {"anomaly_rate": 0.6},
        {"anomaly_rate": -0.01},
        {"anomaly_rate": "high"},
        {"end_date": "2026-13-01"},
        {"end_date": "yesterday"},
        {"n_products": 3},
        {"seed": "abc"},
        {"anomaly_mix": {"phishing": 1}},
        {"anomaly_mix": {"brushing": 0}},
        {"anomaly_mix": {"brushing": -1}},
        {"n_user": 100},
        {"ring_rewording": 1.5},
        {"ring_rewording": "half"},
    ],
)
def test_bad_params_raise_user_error(bad):
    with pytest.raises(UserError) as info:
        simulate(bad)
    assert "\n" not in str(info.value)


def test_tiny_and_default_like_params_work():
    events, labels = simulate({"n_users": 1, "days": 1, "seed": 0})
    assert len(labels) == 1 and labels["is_anomaly"].sum() == 0
    assert list(events.columns) == list(EVENT_DTYPES)
    events, labels = simulate({"n_users": 50, "days": 2, "end_date": "2026-01-01", "anomaly_rate": 0.5})
    assert labels["is_anomaly"].sum() == 25
    assert events["event_time"].min() >= pd.Timestamp("2025-12-31", tz="UTC")


def test_n_users_for_events_hits_the_target():
    target = 150_000
    n = n_users_for_events(target, days=7)
    events, _ = simulate({"n_users": n, "days": 7, "seed": 2})
    assert 0.7 * target < len(events) < 1.3 * target
    with pytest.raises(UserError):
        n_users_for_events(0)


def test_end_date_is_inclusive():
    events, _ = simulate({"n_users": 400, "days": 2, "end_date": "2026-02-28", "seed": 4})
    days = set(events["event_time"].dt.strftime("%Y-%m-%d"))
    assert days == {"2026-02-27", "2026-02-28"}
    assert events["event_time"].max() < pd.Timestamp("2026-03-01", tz="UTC")
    assert events["event_time"].max() >= pd.Timestamp("2026-02-28 12:00", tz="UTC")  # the last day is used
    # a date object means the same day as its YYYY-MM-DD text
    same, _ = simulate({"n_users": 400, "days": 2, "end_date": datetime.date(2026, 2, 28), "seed": 4})
    pd.testing.assert_frame_equal(events, same)


# ------------------------------------------------------------------ output frozen across refactors

# sha256 of (events, labels) for fixed params, recorded from the single-module simulator
# (pipelines/simulate.py at d5daaba) before it was split into the pipelines/simulate/ package.
# A refactor of the simulator must leave these unchanged: the same seed gives the same data,
# which needs every random draw in the same order. A deliberate change of the simulated data
# updates them, and says so in its commit.
FROZEN_OUTPUT = {
    "default_rates": (
        {"seed": 42, "n_users": 1500, "days": 28},
        "d135822ce8a638b00aa877807113dda2e6c159b8e14b57eff407340171538dda",
    ),
    "every_type_heavy_small_catalogue": (
        {"seed": 11, "n_users": 800, "days": 10, "end_date": "2025-02-27", "anomaly_rate": 0.5, "n_products": 120},
        "77a3bb5c4ace52ec9f5150ad247b59a32688968927f68e3e79ea1ca4c97edaec",
    ),
    "partial_mix": (
        {"seed": 2026, "n_users": 1000, "days": 3, "anomaly_rate": 0.2,
         "anomaly_mix": {"card_testing": 3, "scraping_bot": 1, "account_takeover": 1}},
        "33075efe64583ad49492e5b73d842921c7222060ff40c77e2c569958e9a7e669",
    ),
    "one_user_one_day": (
        {"seed": 0, "n_users": 1, "days": 1},
        "6441e2536ff12ed60e40aca0db47dec20247a8a79a521e81f0815469c4fa4400",
    ),
}


def output_digest(events: pd.DataFrame, labels: pd.DataFrame) -> str:
    """sha256 over both frames: for each, its columns in sorted order with their dtypes, then
    the rows as CSV (floats at full precision, timestamps to the microsecond)."""
    h = hashlib.sha256()
    for name, frame in (("events", events), ("labels", labels)):
        frame = frame[sorted(frame.columns)]
        h.update(f"{name} {len(frame)}\n".encode())
        h.update(("\n".join(f"{c}:{t}" for c, t in frame.dtypes.items()) + "\n").encode())
        h.update(frame.to_csv(index=False, lineterminator="\n").encode())
    return h.hexdigest()


@pytest.mark.parametrize("case", list(FROZEN_OUTPUT))
def test_output_is_unchanged_for_the_same_seed(case):
    params, expected = FROZEN_OUTPUT[case]
    events, labels = simulate(params)
    assert output_digest(events, labels) == expected


# ------------------------------------------------------------------ adding a scenario


def test_every_scenario_module_is_registered_once_in_order():
    from pipelines.simulate import SCENARIOS, scenarios

    folder = Path(scenarios.__file__).parent
    modules = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    assert sorted(scenarios._MODULES) == modules  # a module left out of _MODULES never runs
    assert len(set(scenarios._MODULES)) == len(scenarios._MODULES)
    assert ABUSE_TYPES == tuple(s.name for s in SCENARIOS) == tuple(scenarios._MODULES)


def docstring_example_scenario():
    """The example module in pipelines.simulate.scenarios' docstring, executed as written."""
    from pipelines.simulate import scenarios

    doc = scenarios.__doc__
    code = doc[doc.index("1. write"):doc.index("2. register")].split("\n", 1)[1]
    namespace: dict = {}
    exec(compile(textwrap.dedent(code), "coupon_abuse.py", "exec"), namespace)
    return namespace["SCENARIO"]


def test_the_docstring_example_scenario_runs_with_the_registered_ones():
    from pipelines.simulate import SCENARIOS

    coupon = docstring_example_scenario()
    params = {"seed": 8, "n_users": 1500, "days": 7, "anomaly_rate": 0.2,
              "anomaly_mix": {"coupon_abuse": 2, "card_testing": 1}}
    events, labels = simulate(params, scenarios=SCENARIOS + (coupon,))
    assert {c: str(t) for c, t in events.dtypes.items()} == EVENT_DTYPES
    counts = labels["anomaly_type"].value_counts()
    assert counts["coupon_abuse"] == 200 and counts["card_testing"] == 100 and counts[""] == 1200
    abusers = labels.loc[labels["anomaly_type"] == "coupon_abuse", "user_id"]
    mine = events[events["user_id"].isin(abusers)]
    # each abuser has a session with a cart then a purchase of the same cheap item, one each
    cart = mine[(mine["event_type"] == "cart") & mine["session_id"].notna()]
    buy = mine[mine["event_type"] == "purchase"]
    pairs = cart.merge(buy, on=["session_id", "product_id", "user_id"], suffixes=("_cart", "_buy"))
    pairs = pairs[pairs["event_time_buy"] > pairs["event_time_cart"]]
    # of a product from the cheapest 30 % of the catalogue (the products seen stand in for it)
    catalogue = events.dropna(subset=["price"]).drop_duplicates("product_id")["price"]
    cheapest = pairs.groupby("user_id")["price_buy"].min().reindex(abusers)
    assert (cheapest <= catalogue.quantile(0.4)).all()
    # p_new_account=0.9: most of them signed up in the window, before their first other event
    first = mine.sort_values("event_time", kind="stable").groupby("user_id")["event_type"].first()
    assert 0.8 < (first == "signup").mean() <= 1.0
    # the registered scenarios are untouched by the addition: the default call is still frozen
    plain, plain_labels = simulate(FROZEN_OUTPUT["partial_mix"][0], scenarios=SCENARIOS)
    assert output_digest(plain, plain_labels) == FROZEN_OUTPUT["partial_mix"][1]


def test_a_scenario_can_change_its_abusers_background():
    from pipelines.simulate import SCENARIOS, Scenario

    def nothing(w, m):
        return None

    quiet = Scenario("quiet", nothing, background_rate=0.0, min_background_rate=0.0)
    shopper = Scenario("no_buys", nothing, background_buys=False, min_background_rate=2.0)
    params = {"seed": 4, "n_users": 1200, "days": 7, "anomaly_rate": 0.2, "anomaly_mix": {"quiet": 1, "no_buys": 1}}
    events, labels = simulate(params, scenarios=SCENARIOS + (quiet, shopper))
    kind = labels.set_index("user_id")["anomaly_type"]
    per_type = events.groupby(events["user_id"].map(kind))["event_type"].value_counts().unstack(fill_value=0)
    # quiet accounts have no normal sessions: at most the one session of a declined card
    # (payment_trouble, about 2 % of users), besides signups and reviews of older purchases
    quiet_users = kind.index[kind == "quiet"]
    sessions = events[events["user_id"].isin(quiet_users)].groupby("user_id")["session_id"].nunique()
    assert sessions.reindex(quiet_users, fill_value=0).max() <= 1
    assert (sessions > 0).sum() < 0.1 * len(quiet_users)
    normal_sessions = events[events["user_id"].map(kind) == ""].groupby("user_id")["session_id"].nunique()
    assert normal_sessions.mean() > 1
    # no_buys accounts browse (at least 2 sessions a day on average) but never cart or buy
    assert per_type.loc["no_buys", ["cart", "purchase", "payment_failed", "refund"]].sum() == 0
    assert per_type.loc["no_buys", "view"] > 2 * 7 * (kind == "no_buys").sum() * 0.8
