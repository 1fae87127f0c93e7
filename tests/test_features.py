"""pipelines.features: point-in-time correctness, window edges, exact values on tiny logs."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from pipelines.errors import UserError
from pipelines.features import build_features, feature_columns, resolve_as_of, window_suffixes
from pipelines.simulate import simulate

P = {"threads": 1, "small_amount": 5.0}  # fixed: the tiny logs below are written against it


def build(events, **params):
    return build_features(events, {**P, **params})


@pytest.fixture
def base_log(make_events, at):
    """Four users around as_of 2024-03-10 (times in comments are relative to that day)."""
    return make_events([
        # a: a view 3 days ago, then on the day two purchases, a refund and a review of a product never bought
        dict(event_time=at(3), user_id="a", event_type="view", product_id="p1", device_id="d1"),
        dict(event_time=at(0, 1), user_id="a", event_type="purchase", product_id="p1", price=10.0, device_id="d1"),
        dict(event_time=at(0, 2), user_id="a", event_type="purchase", product_id="p2", price=2.0, quantity=3,
             device_id="d1"),
        dict(event_time=at(0, 3), user_id="a", event_type="refund", product_id="p1", price=10.0, device_id="d1"),
        dict(event_time=at(0, 4), user_id="a", event_type="review", product_id="p9", rating=5, device_id="d1"),
        # b: an old account (first seen 40 days ago) that logs in from a new device on the last day
        dict(event_time=at(40), user_id="b", event_type="login", device_id="dA"),
        dict(event_time=at(5), user_id="b", event_type="login", device_id="dA"),
        dict(event_time=at(0), user_id="b", event_type="login", device_id="dB"),
        # c: a brand-new account on a's device
        dict(event_time=at(0), user_id="c", event_type="login", device_id="d1"),
        # old: nothing in the last 28 days
        dict(event_time=at(40), user_id="old", event_type="login", device_id="dZ"),
    ])


def test_exact_values_on_a_tiny_log(base_log, as_of):
    f = build(base_log, as_of=as_of).set_index("user_id")
    assert list(f.index) == ["a", "b", "c", "old"]  # "old" has an event in the history window only
    a, b, c, old = f.loc["a"], f.loc["b"], f.loc["c"], f.loc["old"]

    # counts per window: the view 3 days back is in 7d and 28d, not 1d
    assert (a["n_events_1d"], a["n_events_7d"], a["n_events_28d"]) == (4, 5, 5)
    assert (a["n_view_1d"], a["n_view_7d"], a["n_view_28d"]) == (0, 1, 1)
    assert a["n_purchase_1d"] == 2 and a["n_refund_1d"] == 1 and a["n_review_1d"] == 1
    # ratios: 1 refund / 2 purchases; 2 purchases / max(1 view, 2 purchases)
    assert a["refund_ratio_7d"] == pytest.approx(0.5)
    assert a["conversion_rate_7d"] == pytest.approx(1.0)
    # money: 10*1 + 2*3; mean unit price (10+2)/2; one of two purchases below small_amount=5
    assert a["purchase_value_1d"] == pytest.approx(16.0)
    assert a["avg_purchase_price_1d"] == pytest.approx(6.0)
    assert a["max_purchase_price_28d"] == pytest.approx(10.0)
    assert a["refund_value_1d"] == pytest.approx(10.0)
    assert a["small_purchase_share_1d"] == pytest.approx(0.5)
    assert a["avg_rating_1d"] == 5 and a["five_star_share_1d"] == 1
    assert a["distinct_products_1d"] == 3  # p1, p2, p9
    # night: hours 1..4 UTC on the day, the view at 12:00
    assert a["night_share_utc_1d"] == pytest.approx(1.0)
    assert a["night_share_utc_7d"] == pytest.approx(4 / 5)
    assert a["unbought_review_share_28d"] == pytest.approx(1.0)  # p9 was never bought
    # no signup event: the account's age is unknown, not the time since the log starts
    assert math.isnan(a["account_age_days"]) and math.isnan(a["hours_signup_to_first_purchase"])

    # devices: b's dB is new on the last day; dA (last used 5 days back) counts in 7d and 28d
    assert (b["distinct_devices_1d"], b["distinct_devices_7d"], b["distinct_devices_28d"]) == (1, 2, 2)
    assert (b["n_new_devices_1d"], b["n_new_devices_7d"], b["n_new_devices_28d"]) == (1, 1, 1)
    # for a brand-new account nothing is "new"
    assert (c["n_new_devices_1d"], c["n_new_devices_28d"]) == (0, 0)
    assert a["n_new_devices_1d"] == 0  # d1 was already used 3 days back
    # the event 40 days back is outside every window
    assert b["n_login_28d"] == 2 and math.isnan(b["account_age_days"])

    # a and c share d1; b shares nothing
    assert (a["max_accounts_sharing_device"], c["max_accounts_sharing_device"]) == (1, 1)
    assert b["max_accounts_sharing_device"] == 0

    # no repeat activity: the typical gap is the window itself
    assert c["typical_gap_s_1d"] == pytest.approx(86400.0)
    assert c["typical_gap_s_28d"] == pytest.approx(28 * 86400.0)
    # b: one gap of 5 days inside 28d (the login 40 days back is outside)
    assert b["typical_gap_s_28d"] == pytest.approx(5 * 86400.0)
    # a: gaps 61h, 1h, 1h, 1h -> geometric-style typical gap exp(mean(ln(g + 1))) - 1
    gaps = np.array([61 * 3600.0, 3600.0, 3600.0, 3600.0])
    assert a["typical_gap_s_1d"] == pytest.approx(math.exp(np.log(gaps + 1).mean()) - 1, rel=1e-9)
    assert a["median_gap_s_28d"] == pytest.approx(3600.0)

    # the history window holds everything before the end of the as-of day
    assert (b["n_events_hist"], b["n_login_hist"], b["distinct_devices_hist"]) == (3, 3, 2)
    assert b["n_new_devices_hist"] == 0  # all history: nothing was seen before it
    assert (a["n_events_hist"], a["purchase_value_hist"], a["refund_ratio_hist"]) == (5, 16.0, 0.5)
    # b: gaps of 35 and 5 days (the first one reaches back before the 28-day window)
    assert b["typical_gap_s_hist"] == pytest.approx(math.exp(np.log(np.array([35, 5]) * 86400.0 + 1).mean()) - 1)
    assert b["burstiness_hist"] == pytest.approx((15 - 20) / (15 + 20))  # gaps 35d, 5d: mean 20, std 15
    # no repeat activity: the typical gap is the history itself, from the earliest event (40 days
    # back at 12:00) to the end of the as-of day
    assert c["typical_gap_s_hist"] == old["typical_gap_s_hist"] == pytest.approx(40.5 * 86400.0)

    # "old" is only in the history window; every short window has its empty values
    assert old["n_events_hist"] == old["n_login_hist"] == old["distinct_devices_hist"] == 1
    for w in (1, 7, 28):
        assert old[f"n_events_{w}d"] == old[f"distinct_devices_{w}d"] == old[f"burstiness_{w}d"] == 0
        assert old[f"n_login_{w}d"] == old[f"share_view_{w}d"] == old[f"login_fail_ratio_{w}d"] == 0
        assert old[f"typical_gap_s_{w}d"] == w * 86400.0
    assert old["median_gap_s_28d"] == 28 * 86400.0 and old["median_hours_to_refund_28d"] == 28 * 24.0
    assert old["unbought_review_share_28d"] == old["max_accounts_sharing_device"] == 0
    # what this log does not carry is empty, for everyone: sessions, IPs, countries, signups, failed
    # payments, review texts
    empty = {c for c in f.columns if f[c].isna().all()}
    assert empty == {
        "max_review_similarity_other", "near_duplicate_review_share", "accounts_sharing_review_text",
        *{f"{x}_{w}" for w in ("1d", "7d", "28d", "hist")
          for x in ("distinct_sessions", "events_per_session", "distinct_ips", "distinct_countries", "n_new_countries",
                    "share_payment_failed", "failed_payment_ratio", "small_failed_payment_share")},
        "max_accounts_sharing_ip", "account_age_days", "signed_up_in_window", "hours_signup_to_first_purchase",
    }
    assert not f.drop(columns=sorted(empty)).isna().any().any()
    assert f.attrs["signals"] == {"sessions": False, "devices": True, "ips": False, "countries": False, "prices": True,
                                  "ratings": True, "signups": False, "payments_failed": False, "logins": True,
                                  "reviews": True, "refunds": True, "review_text": False}
    # recency: from the last event to the end of the as-of day
    assert a["days_since_last_event"] == pytest.approx(20 / 24)  # the review at 04:00
    assert (b["days_since_last_event"], old["days_since_last_event"]) == (0.5, 40.5)


def test_payment_login_cart_and_signup_signals(make_events, at, as_of):
    ev = make_events([
        dict(event_time=at(0, 1), user_id="k", event_type="signup", device_id="d", country="DE", session_id="s1"),
        dict(event_time=at(0, 2), user_id="k", event_type="login_failed", session_id="s1"),
        dict(event_time=at(0, 2, 1), user_id="k", event_type="login_failed", session_id="s1"),
        dict(event_time=at(0, 2, 2), user_id="k", event_type="login_failed", session_id="s1"),
        dict(event_time=at(0, 2, 3), user_id="k", event_type="login", session_id="s1", country="FR"),
        *[dict(event_time=at(0, 3, m), user_id="k", event_type="cart", product_id="p1", session_id="s2")
          for m in range(4)],
        dict(event_time=at(0, 4), user_id="k", event_type="payment_failed", price=1.0, session_id="s2"),
        dict(event_time=at(0, 4, 1), user_id="k", event_type="payment_failed", price=2.0, session_id="s2"),
        dict(event_time=at(0, 4, 2), user_id="k", event_type="payment_failed", price=50.0, session_id="s2"),
        dict(event_time=at(0, 7), user_id="k", event_type="purchase", product_id="p1", price=3.0, session_id="s2"),
        dict(event_time=at(0, 8), user_id="k", event_type="purchase", product_id="p1", price=3.0, session_id="s2"),
        dict(event_time=at(0, 9), user_id="k", event_type="purchase", product_id="p1", price=3.0, session_id="s2"),
        dict(event_time=at(0, 10), user_id="k", event_type="view", product_id="p2", session_id="s2"),
    ])
    f = build(ev, as_of=as_of).set_index("user_id").loc["k"]
    n = len(ev)  # 16 events
    assert f["n_events_1d"] == n
    assert f["login_fail_ratio_1d"] == pytest.approx(3 / 4)
    assert f["failed_payment_ratio_1d"] == pytest.approx(3 / 6)  # 3 failed / (3 failed + 3 purchases)
    assert f["small_failed_payment_share_1d"] == pytest.approx(2 / 3)  # below small_amount=5
    assert f["small_purchase_share_1d"] == pytest.approx(1.0)
    assert f["cart_abandon_ratio_1d"] == pytest.approx(1 - 3 / 4)
    assert f["max_same_product_purchases_1d"] == 3
    assert f["conversion_rate_1d"] == pytest.approx(3 / 3)  # 3 purchases / max(1 view, 3)
    assert f["distinct_sessions_1d"] == 2 and f["events_per_session_1d"] == pytest.approx(n / 2)
    assert f["distinct_countries_1d"] == 2
    assert f["n_new_countries_1d"] == 0  # a new account: nothing counts as new
    assert f["signed_up_in_window"] == 1
    assert f["account_age_days"] == pytest.approx(23 / 24)  # signup at 01:00
    assert f["hours_signup_to_first_purchase"] == pytest.approx(6.0)
    assert f["share_login_failed_1d"] == pytest.approx(3 / n)
    assert f["share_purchase_1d"] == pytest.approx(3 / n)
    # distinct products per event, so it stays within [0, 1]
    assert f["product_diversity_1d"] == pytest.approx(2 / n)
    # small_amount is a parameter
    g = build(ev, as_of=as_of, small_amount=2.5).set_index("user_id").loc["k"]
    assert g["small_failed_payment_share_1d"] == pytest.approx(2 / 3)
    assert build(ev, as_of=as_of, small_amount=1.5).set_index("user_id").loc["k", "small_failed_payment_share_1d"] \
        == pytest.approx(1 / 3)
    assert g["small_purchase_share_1d"] == pytest.approx(0.0)


def test_output_shape_and_types(base_log, as_of):
    f = build(base_log, as_of=as_of)
    assert f.columns[0] == "user_id" and str(f["user_id"].dtype) == "str"
    assert f["user_id"].tolist() == sorted(f["user_id"])
    cols = feature_columns(f)
    assert "user_id" not in cols and len(cols) == f.shape[1] - 1
    assert all(str(f[c].dtype) == "float64" for c in cols)
    values = f[cols].to_numpy()
    assert (np.isfinite(values) | np.isnan(values)).all()  # finite, or empty (a signal this log lacks)
    assert f.attrs["small_amount"] == {"setting": 5.0, "quantile": None, "value": 5.0}
    assert f.attrs["as_of"] == as_of
    for w in ("1d", "7d", "28d", "hist"):
        assert f"n_events_{w}" in f.columns and f"refund_ratio_{w}" in f.columns
    # every per-window feature exists for every window, the history window included
    families = {c.removesuffix("_1d") for c in cols if c.endswith("_1d")}
    assert len(families) > 40
    for w in ("7d", "28d", "hist"):
        assert {c.removesuffix(f"_{w}") for c in cols if c.endswith(f"_{w}")} >= families
    assert set(cols) - {f"{x}_{w}" for x in families for w in ("1d", "7d", "28d", "hist")} == {
        "median_gap_s_28d", "unbought_review_share_28d", "median_hours_to_refund_28d", "account_age_days",
        "signed_up_in_window", "hours_signup_to_first_purchase", "max_accounts_sharing_device",
        "max_accounts_sharing_ip", "days_since_last_event",
        "max_review_similarity_other", "near_duplicate_review_share", "accounts_sharing_review_text",
    }
    assert f.attrs["population"] == {
        "users_with_events": 4, "users_scored": 4, "left_out_outside_history": 0, "history_days": None,
        "windows": ["1d", "7d", "28d", "hist"],
    }
    json.dumps(f.attrs)  # plain values: the stage writes them to JSON


def test_perfectly_regular_events_have_burstiness_minus_one(make_events, at, as_of):
    ev = make_events([dict(event_time=at(0, h), user_id="bot", event_type="view", product_id=f"p{h}")
                      for h in range(1, 7)])  # every hour on the hour
    f = build(ev, as_of=as_of).set_index("user_id").loc["bot"]
    assert f["burstiness_1d"] == pytest.approx(-1.0)
    assert f["typical_gap_s_1d"] == pytest.approx(3600.0, rel=1e-9)
    assert f["median_gap_s_28d"] == pytest.approx(3600.0)


def test_bursty_events_have_positive_burstiness(make_events, at, as_of):
    times = [at(0, 1, m) for m in range(10)] + [at(0, 20)]  # a burst a minute apart, then a long pause
    ev = make_events([dict(event_time=t, user_id="u", event_type="view") for t in times])
    f = build(ev, as_of=as_of).set_index("user_id").loc["u"]
    gaps = np.diff([t.timestamp() for t in times])
    expected = (gaps.std() - gaps.mean()) / (gaps.std() + gaps.mean())  # Goh & Barabasi, population std
    assert f["burstiness_1d"] == pytest.approx(expected, rel=1e-9)
    assert f["burstiness_1d"] > 0.3


def test_window_edges(make_events, at, as_of):
    day = pd.Timedelta(days=1)
    eps = pd.Timedelta(microseconds=1)
    start = pd.Timestamp(as_of, tz="UTC")
    times = {
        start: (1, 1, 1),  # first instant of the as-of day
        start - eps: (0, 1, 1),  # last instant of the day before
        at(3): (0, 1, 1),
        start - 6 * day: (0, 1, 1),  # first instant of the 7-day window
        start - 6 * day - eps: (0, 0, 1),
        start - 27 * day: (0, 0, 1),  # first instant of the 28-day window
        start - 27 * day - eps: (0, 0, 0),
        start + day: (0, 0, 0),  # first instant after the as-of day
    }
    ev = make_events([dict(event_time=t, user_id="w", event_type="view") for t in times])
    f = build(ev, as_of=as_of).set_index("user_id").loc["w"]
    expected = np.array(list(times.values())).sum(axis=0)
    assert (f["n_events_1d"], f["n_events_7d"], f["n_events_28d"]) == tuple(expected) == (1, 4, 6)
    assert f["n_view_7d"] == 4


def test_custom_windows(base_log, as_of):
    f = build(base_log, as_of=as_of, windows_days=[14, 2])
    assert "n_events_2d" in f.columns and "n_events_14d" in f.columns
    assert "n_events_1d" not in f.columns and "n_events_28d" not in f.columns
    assert "median_gap_s_14d" in f.columns and "unbought_review_share_14d" in f.columns
    f = f.set_index("user_id")
    assert f.loc["a", "n_events_2d"] == 4 and f.loc["a", "n_events_14d"] == 5
    assert f.loc["b", "n_events_14d"] == 2  # the login 5 days back, and the last day


def test_a_reviewer_who_bought_first_is_not_unbought(make_events, at, as_of):
    ev = make_events([
        dict(event_time=at(2), user_id="r", event_type="purchase", product_id="p1", price=20.0),
        dict(event_time=at(1), user_id="r", event_type="review", product_id="p1", rating=4),  # bought before
        dict(event_time=at(1), user_id="r", event_type="review", product_id="p2", rating=5),  # bought after
        dict(event_time=at(0), user_id="r", event_type="purchase", product_id="p2", price=20.0),
        dict(event_time=at(0), user_id="other", event_type="purchase", product_id="p3", price=1.0),
        dict(event_time=at(0, 13), user_id="other", event_type="review", product_id="p3", rating=5),
    ])
    f = build(ev, as_of=as_of).set_index("user_id")
    assert f.loc["r", "unbought_review_share_28d"] == pytest.approx(0.5)
    assert f.loc["other", "unbought_review_share_28d"] == 0
    assert f.loc["r", "five_star_share_28d"] == pytest.approx(0.5)
    assert f.loc["r", "max_same_product_purchases_28d"] == 1


def test_device_shared_by_three_accounts(make_events, at, as_of):
    ev = make_events([dict(event_time=at(0, h), user_id=u, event_type="login", device_id="shared", ip=f"10.0.0.{h}")
                      for h, u in enumerate(["x", "y", "z"])]
                     + [dict(event_time=at(0, 5), user_id="solo", event_type="login", device_id="own", ip="10.0.0.0")])
    f = build(ev, as_of=as_of).set_index("user_id")
    assert f.loc[["x", "y", "z"], "max_accounts_sharing_device"].tolist() == [2, 2, 2]
    assert f.loc["solo", "max_accounts_sharing_device"] == 0
    assert f.loc["x", "max_accounts_sharing_ip"] == 1  # x (10.0.0.0) and solo share an ip
    assert f.loc["y", "max_accounts_sharing_ip"] == 0


# --- the history window ------------------------------------------------------------------------------


def test_a_user_seen_only_long_ago_gets_a_row_unless_outside_the_history(make_events, at, as_of):
    ev = make_events([
        dict(event_time=at(200), user_id="gone", event_type="view", product_id="p1", device_id="g1"),
        dict(event_time=at(200, 13), user_id="gone", event_type="purchase", product_id="p1", price=7.0,
             device_id="g1"),
        dict(event_time=at(0), user_id="now", event_type="login", device_id="n1"),
    ])
    f = build(ev, as_of=as_of).set_index("user_id")
    assert list(f.index) == ["gone", "now"]
    gone = f.loc["gone"]
    # the history window is filled ...
    assert (gone["n_events_hist"], gone["n_view_hist"], gone["n_purchase_hist"]) == (2, 1, 1)
    assert (gone["purchase_value_hist"], gone["conversion_rate_hist"], gone["distinct_devices_hist"]) == (7.0, 1, 1)
    assert gone["typical_gap_s_hist"] == pytest.approx(3600.0)
    assert gone["max_same_product_purchases_hist"] == 1
    # ... and every short window has its empty values, never NaN
    for w in (1, 7, 28):
        for name in ("n_events", "n_purchase", "purchase_value", "distinct_devices", "distinct_products",
                     "conversion_rate", "share_view", "burstiness", "max_same_product_purchases"):
            assert gone[f"{name}_{w}d"] == 0, (name, w)
        assert gone[f"typical_gap_s_{w}d"] == w * 86400.0
    assert gone["median_gap_s_28d"] == 28 * 86400.0 and math.isnan(gone["median_hours_to_refund_28d"])  # no refunds logged
    assert math.isnan(gone["account_age_days"]) and math.isnan(gone["avg_rating_1d"])  # no signups, no ratings logged
    assert gone["days_since_last_event"] == pytest.approx(200.5 - 1 / 24)
    # empty only for the signals this log lacks, for both users alike
    assert all(f[c].isna().all() for c in f.columns if f[c].isna().any())
    # the span of the history: from the earliest event read to the end of the as-of day
    assert f.loc["now", "typical_gap_s_hist"] == pytest.approx(200.5 * 86400.0)
    assert f.attrs["population"] == {
        "users_with_events": 2, "users_scored": 2, "left_out_outside_history": 0, "history_days": None,
        "windows": ["1d", "7d", "28d", "hist"],
    }

    g = build(ev, as_of=as_of, history_days=100)
    assert g["user_id"].tolist() == ["now"]
    assert g.attrs["population"] == {
        "users_with_events": 2, "users_scored": 1, "left_out_outside_history": 1, "history_days": 100,
        "windows": ["1d", "7d", "28d", "hist"],
    }
    assert g.set_index("user_id").loc["now", "typical_gap_s_hist"] == 100 * 86400.0
    # the short windows do not depend on the history
    short = [c for c in g.columns if not c.endswith("_hist")]
    pd.testing.assert_frame_equal(g[short], f.loc[["now"]].reset_index()[short])


def test_history_window_edges(make_events, as_of):
    end = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
    start = end - pd.Timedelta(days=60)
    eps = pd.Timedelta(microseconds=1)
    ev = make_events([
        dict(event_time=start, user_id="in", event_type="view"),  # the first instant of the history
        dict(event_time=start - eps, user_id="out", event_type="view"),
        dict(event_time=start - eps, user_id="both", event_type="view"),
        dict(event_time=end - eps, user_id="both", event_type="view"),  # the last instant before the end
        dict(event_time=end, user_id="late", event_type="view"),  # after the as-of day: never read
    ])
    f = build(ev, as_of=as_of, history_days=60).set_index("user_id")
    assert list(f.index) == ["both", "in"]
    assert (f.loc["both", "n_events_hist"], f.loc["both", "n_events_1d"], f.loc["in", "n_events_hist"]) == (1, 1, 1)
    # the gap to an event before the history window is not in it
    assert f.loc["both", "typical_gap_s_hist"] == 60 * 86400.0
    assert f.attrs["population"]["users_with_events"] == 3  # "late" is after the end
    assert f.attrs["population"]["left_out_outside_history"] == 1
    assert 0 <= f.loc["both", "days_since_last_event"] < 1e-9  # 1 microsecond before the end
    # with all history, "out" is in, and "both" has one gap of 60 days
    g = build(ev, as_of=as_of).set_index("user_id")
    assert list(g.index) == ["both", "in", "out"]
    assert g.loc["both", "typical_gap_s_hist"] == pytest.approx(60 * 86400.0, rel=1e-9)


@pytest.mark.parametrize("history", [28, 5, 0, -1, True, 1.5, "90"])
def test_bad_history_days_are_user_errors(base_log, history):
    with pytest.raises(UserError, match="features.history_days must"):
        build(base_log, history_days=history)
    with pytest.raises(UserError, match="features.history_days must"):
        window_suffixes({"history_days": history})


def test_history_must_be_the_longest_window(base_log):
    with pytest.raises(UserError, match="history_days must be longer than the longest of windows_days"):
        build(base_log, history_days=14, windows_days=[1, 14])
    assert build(base_log, history_days=15, windows_days=[1, 14]).attrs["population"]["windows"] == ["1d", "14d", "hist"]


def test_window_suffixes():
    assert window_suffixes({}) == window_suffixes(None) == ["1d", "7d", "28d", "hist"]
    assert window_suffixes({"windows_days": [14, 3, 1, 3], "history_days": 90}) == ["1d", "3d", "14d", "hist"]
    with pytest.raises(UserError, match="windows_days"):
        window_suffixes({"windows_days": []})


def test_a_year_long_log_scores_every_user():
    from pipelines.simulate import simulate

    events, _ = simulate({"n_users": 40, "days": 365, "seed": 5, "end_date": "2026-11-21"})
    # each user is seen on ten days only, somewhere in the year: most of them long before the end
    day = (events["event_time"] - events["event_time"].min()).dt.days
    slot = events["user_id"].str[1:].astype(int) % 36
    events = events.loc[day // 10 == slot].reset_index(drop=True)
    users = set(events["user_id"])
    assert len(users) >= 25

    f = build(events)
    assert set(f["user_id"]) == users  # every user gets a row
    assert f["n_events_hist"].sum() == len(events)
    assert (f["n_events_28d"] == 0).sum() > len(f) / 2  # most of them only through the history
    # empty only where a signal is missing: for everyone (not logged), or per user (no signup, no session)
    partly = {c for c in f.columns if f[c].isna().any() and not f[c].isna().all()}
    assert partly <= {"account_age_days", "hours_signup_to_first_purchase", *(c for c in f.columns if "per_session" in c)}
    assert f.attrs["population"]["users_with_events"] == f.attrs["population"]["users_scored"] == len(users)
    assert f.attrs["population"]["left_out_outside_history"] == 0

    g = build(events, history_days=100)
    end = pd.Timestamp(f.attrs["as_of"], tz="UTC") + pd.Timedelta(days=1)
    recent = set(events.loc[events["event_time"] >= end - pd.Timedelta(days=100), "user_id"])
    assert set(g["user_id"]) == recent and 0 < len(recent) < len(users)
    assert g.attrs["population"]["left_out_outside_history"] == len(users) - len(recent)


# --- point in time ---------------------------------------------------------------------------------


@pytest.mark.parametrize("history_days", [None, 35])
def test_later_events_change_nothing(base_log, make_events, at, as_of, history_days):
    before = build(base_log, as_of=as_of, history_days=history_days)
    assert {"n_events_hist", "typical_gap_s_hist", "distinct_devices_hist", "n_new_devices_hist"} <= set(before.columns)
    later = make_events([
        # exactly at the end of the as-of day, and after it, for existing users
        dict(event_time=at(-1, 0), user_id="a", event_type="purchase", product_id="p9", price=1.0, device_id="d1"),
        dict(event_time=at(-1), user_id="a", event_type="signup", device_id="dNew"),
        dict(event_time=at(-2), user_id="a", event_type="refund", product_id="p2", price=2.0),
        dict(event_time=at(-1), user_id="b", event_type="login_failed", device_id="dC", country="RU"),
        dict(event_time=at(-1), user_id="c", event_type="review", product_id="p1", rating=1),
        # a brand-new user, and the user with no recent activity, both on a known device
        dict(event_time=at(-1, 1), user_id="zz", event_type="signup", device_id="d1", ip="1.1.1.1"),
        dict(event_time=at(-3), user_id="old", event_type="purchase", product_id="p1", price=5.0, device_id="dA"),
    ])
    after = build(pd.concat([base_log, later], ignore_index=True), as_of=as_of, history_days=history_days)
    pd.testing.assert_frame_equal(before, after)
    assert after.attrs == before.attrs and after.attrs["as_of"] == as_of
    assert ("old" in set(after["user_id"])) == (history_days is None)


def test_point_in_time_on_simulated_events(sim_clean):
    last_day = sim_clean["event_time"].max().normalize()
    as_of = (last_day - pd.Timedelta(days=3)).date().isoformat()
    end = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
    truncated = sim_clean.loc[sim_clean["event_time"] < end]
    assert len(truncated) < len(sim_clean)
    full = build(sim_clean, as_of=as_of)
    cut = build(truncated, as_of=as_of)
    pd.testing.assert_frame_equal(full, cut)
    assert full.attrs == cut.attrs and "typical_gap_s_hist" in full.columns
    # and with a history window that leaves users out
    short = {"as_of": as_of, "windows_days": [1, 3], "history_days": 5}
    full, cut = build(sim_clean, **short), build(truncated, **short)
    pd.testing.assert_frame_equal(full, cut)
    assert full.attrs == cut.attrs and full.attrs["population"]["left_out_outside_history"] > 0
    # and the day after does differ: the later events are real
    assert not build(sim_clean).equals(full)


def test_row_order_does_not_matter(base_log, as_of):
    shuffled = base_log.sample(frac=1.0, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(build(base_log, as_of=as_of), build(shuffled, as_of=as_of))


# --- as_of, params, inputs -----------------------------------------------------------------------


def test_as_of_defaults_to_the_day_of_the_last_event(base_log, as_of, make_events, at):
    default = build(base_log)
    assert default.attrs["as_of"] == as_of
    pd.testing.assert_frame_equal(default, build(base_log, as_of=as_of))
    # an event late in the next UTC day moves it
    more = pd.concat([base_log, make_events([dict(event_time=at(-1, 23, 59), user_id="a", event_type="view")])],
                     ignore_index=True)
    assert build(more).attrs["as_of"] == "2024-03-11"
    assert resolve_as_of(more, None).isoformat() == "2024-03-11"


def test_an_earlier_as_of_drops_later_users(base_log):
    f = build(base_log, as_of="2024-03-08")
    assert f["user_id"].tolist() == ["a", "b", "old"]  # c exists only from 03-10
    assert f.set_index("user_id").loc["a", "n_events_28d"] == 1
    # with 30 days of history, "old" (last seen 38 days before 03-08 ends) is left out
    g = build(base_log, as_of="2024-03-08", history_days=30)
    assert g["user_id"].tolist() == ["a", "b"]
    assert g.attrs["population"]["left_out_outside_history"] == 1


@pytest.mark.parametrize("windows", [[0], [], [-1], [7, 0]])
def test_bad_windows_are_user_errors(base_log, windows):
    with pytest.raises(UserError, match="windows_days"):
        build(base_log, windows_days=windows)


@pytest.mark.parametrize("windows", [["week"], 7, [1.5]])
def test_malformed_windows_are_user_errors(base_log, windows):
    with pytest.raises(UserError, match="windows_days"):
        build(base_log, windows_days=windows)


def test_bad_as_of_is_a_user_error(base_log):
    with pytest.raises(UserError, match="as_of"):
        build(base_log, as_of="not a day")


def test_no_events_is_a_user_error(base_log):
    with pytest.raises(UserError, match="no events"):
        build(base_log.iloc[:0])


def test_dataframe_and_parquet_path_give_identical_features(base_log, tmp_path):
    path = tmp_path / "events with 'quote'.parquet"
    base_log.to_parquet(path, index=False)
    from_frame = build(base_log)
    from_path = build(str(path))
    pd.testing.assert_frame_equal(from_frame, from_path)
    assert from_frame.attrs == from_path.attrs
    pd.testing.assert_frame_equal(build(path, as_of="2024-03-08"), build(base_log, as_of="2024-03-08"))
    import pyarrow as pa

    pd.testing.assert_frame_equal(build(pa.Table.from_pandas(base_log, preserve_index=False)), from_frame)


def test_hours_to_refund_measures_from_the_latest_purchase_of_that_product(make_events, at, as_of):
    ev = make_events([
        dict(event_time=at(5, 10), user_id="q", event_type="purchase", product_id="p1", price=50.0),
        dict(event_time=at(2, 10), user_id="q", event_type="purchase", product_id="p1", price=50.0),
        dict(event_time=at(2, 16), user_id="q", event_type="refund", product_id="p1", price=50.0),  # 6 h after
        dict(event_time=at(1, 0), user_id="q", event_type="purchase", product_id="p2", price=80.0),
        dict(event_time=at(0, 12), user_id="q", event_type="refund", product_id="p2", price=80.0),  # 36 h after
        dict(event_time=at(0, 1), user_id="slow", event_type="purchase", product_id="p3", price=9.0),
        dict(event_time=at(0, 2), user_id="slow", event_type="view", product_id="p3"),
    ])
    f = build(ev, as_of=as_of).set_index("user_id")
    assert f.loc["q", "median_hours_to_refund_28d"] == pytest.approx((6 + 36) / 2)
    assert f.loc["slow", "median_hours_to_refund_28d"] == 28 * 24  # no refund: the window itself
    # a refund after the as-of day must not change anything
    later = make_events([dict(event_time=at(0, 12) + pd.Timedelta(days=1), user_id="slow", event_type="refund",
                              product_id="p3", price=9.0)])
    g = build(pd.concat([ev, later], ignore_index=True), as_of=as_of).set_index("user_id")
    assert g.loc["slow", "median_hours_to_refund_28d"] == 28 * 24


def test_reruns_are_bit_identical(sim_clean, tmp_path):
    """Parallel float sums add up in a different order each run; features are rounded so a
    rerun writes the same bytes and DVC does not retrain downstream for nothing."""
    paths = []
    for i in range(3):
        f = build_features(sim_clean, {"threads": 2})
        paths.append(tmp_path / f"f{i}.parquet")
        f.to_parquet(paths[-1], index=False)
    assert len({p.read_bytes() for p in paths}) == 1


def test_a_memory_limit_changes_no_value_and_too_little_is_a_one_line_error(sim_clean, tmp_path):
    path = str(tmp_path / "clean.parquet")
    sim_clean.to_parquet(path, index=False)
    roomy = build_features(path, {"memory_limit": None})
    tight = build_features(path, {"memory_limit": "128MB", "threads": 1})
    pd.testing.assert_frame_equal(roomy, tight)
    with pytest.raises(UserError, match="features.memory_limit 1MB is too little"):
        build_features(path, {"memory_limit": "1MB"})


def test_small_amount_auto_is_a_low_quantile_of_the_platforms_purchase_prices(make_events, at, as_of):
    # 20 purchases at 1..20 by ten users; u0 buys the two cheapest
    ev = make_events([dict(event_time=at(0, 1, i), user_id=f"u{i // 2}", event_type="purchase", product_id=f"p{i}",
                           price=float(i + 1)) for i in range(20)])
    f = build(ev, as_of=as_of, small_amount="auto", small_amount_quantile=0.1).set_index("user_id")
    value = float(np.quantile(np.arange(1, 21), 0.1))  # 2.9: linear interpolation, as DuckDB's quantile_cont
    assert f.attrs["small_amount"] == {"setting": "auto", "quantile": 0.1, "value": pytest.approx(value)}
    assert f.loc["u0", "small_purchase_share_1d"] == 1.0 and f.loc["u1", "small_purchase_share_1d"] == 0.0
    # the same log in cents: the same users are "small"
    cents = ev.assign(price=ev["price"] * 100)
    g = build(cents, as_of=as_of, small_amount="auto").set_index("user_id")
    assert g.attrs["small_amount"]["value"] == pytest.approx(100 * value)
    assert g["small_purchase_share_1d"].equals(f["small_purchase_share_1d"])
    # a number is still a fixed threshold
    h = build(ev, as_of=as_of, small_amount=10.5).set_index("user_id")
    assert h.attrs["small_amount"] == {"setting": 10.5, "quantile": None, "value": 10.5}
    assert h["small_purchase_share_1d"].sum() == 5  # u0..u4 bought below 10.5
    with pytest.raises(UserError, match="small_amount_quantile"):
        build(ev, as_of=as_of, small_amount="auto", small_amount_quantile=1.5)
    with pytest.raises(UserError, match="small_amount"):
        build(ev, as_of=as_of, small_amount="tiny")


def test_small_amount_without_prices_is_empty(make_events, at, as_of):
    ev = make_events([dict(event_time=at(0, 1), user_id="a", event_type="purchase", product_id="p1"),
                      dict(event_time=at(0, 2), user_id="b", event_type="view", product_id="p1")])
    f = build(ev, as_of=as_of, small_amount="auto")
    assert f.attrs["small_amount"]["value"] is None and f.attrs["signals"]["prices"] is False
    for c in ("small_purchase_share_1d", "purchase_value_28d", "avg_purchase_price_hist", "max_purchase_price_7d"):
        assert f[c].isna().all(), c
    assert f["n_purchase_1d"].tolist() == [1.0, 0.0]  # the counts of what was logged stay


def test_without_session_ids_the_session_features_are_empty_not_the_event_count(make_events, at, as_of):
    rows = [dict(event_time=at(0, h), user_id="a", event_type="view", product_id=f"p{h}") for h in range(1, 6)]
    f = build(make_events(rows), as_of=as_of)
    assert f["events_per_session_1d"].isna().all() and f["distinct_sessions_hist"].isna().all()
    assert f.attrs["signals"]["sessions"] is False
    # the platform logs sessions, this user's events have none: empty for that user only
    rows += [dict(event_time=at(0, 7), user_id="b", event_type="view", product_id="p1", session_id="s1"),
             dict(event_time=at(0, 8), user_id="b", event_type="view", product_id="p2", session_id="s1")]
    g = build(make_events(rows), as_of=as_of).set_index("user_id")
    assert math.isnan(g.loc["a", "events_per_session_1d"]) and g.loc["b", "events_per_session_1d"] == 2.0
    assert g.loc["a", "distinct_sessions_1d"] == 0


def test_a_signup_gives_the_account_age_and_no_signup_leaves_it_empty(make_events, at, as_of):
    ev = make_events([
        dict(event_time=at(2), user_id="new", event_type="signup"),
        dict(event_time=at(1), user_id="new", event_type="purchase", product_id="p1", price=3.0),
        dict(event_time=at(20), user_id="old", event_type="view", product_id="p1"),
        dict(event_time=at(0), user_id="old", event_type="purchase", product_id="p1", price=3.0),
    ])
    f = build(ev, as_of=as_of).set_index("user_id")
    assert f.loc["new", "account_age_days"] == pytest.approx(2.5)
    assert f.loc["new", "hours_signup_to_first_purchase"] == pytest.approx(24.0)
    assert f.loc["new", "signed_up_in_window"] == 1 and f.loc["old", "signed_up_in_window"] == 0
    # not 20.5 days (the time since the log first saw it): the account may be years old
    assert math.isnan(f.loc["old", "account_age_days"]) and math.isnan(f.loc["old", "hours_signup_to_first_purchase"])


def test_the_features_report_records_the_signals_found_and_the_small_amount_used(sim_clean, tmp_path):
    import json as _json

    from pipelines.config import default_params, override
    from pipelines.stages import features_stage

    events = tmp_path / "clean.parquet"
    sim_clean.to_parquet(events, index=False)
    day = str(resolve_as_of(str(events), None))
    params = override(default_params(), "storage", {"data": str(tmp_path / "d"), "reports": str(tmp_path / "r"),
                                                    "models": str(tmp_path / "m")})
    features_stage(params, day, events_in=str(events), validation_dir=str(tmp_path / "v"))
    report = _json.loads((tmp_path / "r" / f"as_of={day}" / "features.json").read_text())
    built = pd.read_parquet(tmp_path / "d" / "features" / f"as_of={day}" / "features.parquet")
    assert report["small_amount"] == built.attrs["small_amount"] and report["small_amount"]
    assert report["signals"] == built.attrs["signals"] and report["signals"]


def test_distinct_products_are_exact_per_window(make_events, at, as_of):
    # 700 products viewed over the last 3 days, some twice: a HyperLogLog (what this used to
    # count with) is a few percent off at this size; the count per window must be exact
    rows = [dict(event_time=at(i % 3, 1, i % 60), user_id="browser", event_type="view", product_id=f"p{i % 700}")
            for i in range(900)]
    rows += [dict(event_time=at(10), user_id="browser", event_type="view", product_id="old-only")]
    f = build(make_events(rows), as_of=as_of).set_index("user_id").loc["browser"]
    on_the_day = len({i % 700 for i in range(900) if i % 3 == 0})
    assert f["distinct_products_1d"] == on_the_day
    assert f["distinct_products_7d"] == 700 and f["distinct_products_28d"] == 701
    assert f["product_diversity_28d"] == pytest.approx(701 / 901)


def test_users_come_out_sorted_with_their_own_values(make_events, at, as_of):
    # more users than fit one DuckDB vector, in reverse order: each row must keep its user's values
    rows = [dict(event_time=at(0, 1), user_id=f"u{i:05d}", event_type="view", product_id="p") for i in range(3000)
            for _ in range(i % 5 + 1)]
    f = build(make_events(rows[::-1]), as_of=as_of)
    assert f["user_id"].tolist() == [f"u{i:05d}" for i in range(3000)]
    assert f["n_view_1d"].tolist() == [i % 5 + 1 for i in range(3000)]
    assert f.drop(columns="user_id").dtypes.eq("float64").all()
    f.loc[0, "n_view_1d"] = 99.0  # the frame owns its block: later steps assign into it
    assert f.loc[0, "n_view_1d"] == 99.0


def test_money_and_window_aggregates_add_up_over_the_buckets(make_events, at, as_of):
    # ten purchases of 0.1 and one unpriced; hours 1, 2 on
    # the day and 2, 5 days back; ratings in two windows
    rows = [dict(event_time=at(0, 1), user_id="a", event_type="purchase", product_id=f"p{i}", price=0.1)
            for i in range(10)]
    rows += [dict(event_time=at(0, 2), user_id="a", event_type="purchase", product_id="px"),
             dict(event_time=at(5, 2), user_id="a", event_type="review", product_id="p1", rating=2),
             dict(event_time=at(5, 5), user_id="a", event_type="review", product_id="p2", rating=5),
             dict(event_time=at(0, 1), user_id="a", event_type="review", product_id="p3", rating=4),
             dict(event_time=at(0, 3), user_id="b", event_type="view", product_id="p1")]
    a = build(make_events(rows), as_of=as_of).set_index("user_id").loc["a"]
    assert a["purchase_value_1d"] == 1.0 and a["purchase_value_28d"] == 1.0
    assert a["avg_purchase_price_1d"] == 0.1  # over the priced purchases only
    assert a["max_purchase_price_7d"] == 0.1 and a["small_purchase_share_1d"] == pytest.approx(10 / 11)  # small_amount 5
    assert (a["distinct_active_hours_1d"], a["distinct_active_hours_7d"]) == (2, 3)  # hour 2 twice
    assert (a["avg_rating_1d"], a["avg_rating_7d"]) == (4.0, pytest.approx(11 / 3))
    assert (a["five_star_share_1d"], a["five_star_share_7d"]) == (0, pytest.approx(1 / 3))


def test_review_text_columns_by_default_absent_when_disabled_and_null_without_any_text(make_events, at, as_of):
    ring = "Amazing product highly recommend!!! Best seller 5 stars"
    rows = [dict(event_time=at(1, h), user_id=u, event_type="review", product_id=f"p{h}", rating=5, review_text=t)
            for h, (u, t) in enumerate([("r1", ring), ("r2", ring.upper()), ("honest", "The zip broke after a week"),
                                        ("other", "Fits well, washes fine, a bit short in the sleeves")])]
    rows.append(dict(event_time=at(0), user_id="quiet", event_type="view", product_id="p1"))
    events = make_events(rows)
    off = build(events, as_of=as_of, review_text={"enabled": False})
    assert "max_review_similarity_other" not in off.columns and "review_text" not in off.attrs["signals"]
    on = build(events, as_of=as_of).set_index("user_id")  # on by default
    assert on.attrs["signals"]["review_text"] is True
    assert on.loc["r1", "max_review_similarity_other"] == 1.0 and on.loc["r2", "near_duplicate_review_share"] == 1.0
    assert on.loc["r1", "accounts_sharing_review_text"] == 1
    assert on.loc["honest", "max_review_similarity_other"] < 0.8
    assert on.loc["quiet", ["max_review_similarity_other", "near_duplicate_review_share"]].tolist() == [0.0, 0.0]
    no_text = build(events.drop(columns=["review_text"]), as_of=as_of)
    assert no_text.attrs["signals"]["review_text"] is False
    assert no_text["near_duplicate_review_share"].isna().all() and len(no_text) == len(on)


def test_review_text_model_wordllama_reaches_the_features(make_events, at, as_of):
    reworded = ["Wonderful purchase, top quality! Will buy again", "Brilliant purchase, top quality! Will buy again"]
    rows = [dict(event_time=at(1, h), user_id=u, event_type="review", product_id=f"p{h}", rating=5, review_text=t)
            for h, (u, t) in enumerate([("r1", reworded[0]), ("r2", reworded[1]), ("honest", "The zip broke after a week")])]
    events = make_events(rows)
    lexical = build(events, as_of=as_of).set_index("user_id")
    semantic = build(events, as_of=as_of, review_text={"enabled": True, "model": "wordllama"}).set_index("user_id")
    assert lexical.loc[["r1", "r2"], "near_duplicate_review_share"].tolist() == [0.0, 0.0]
    assert semantic.loc[["r1", "r2"], "near_duplicate_review_share"].tolist() == [1.0, 1.0]
    assert semantic.loc["honest", "max_review_similarity_other"] == 0.0
    assert list(semantic.columns) == list(lexical.columns)


def test_gap_features_over_parts_of_the_users_are_the_same_rows(monkeypatch):
    import pipelines.features as features

    events, _ = simulate({"seed": 5, "n_users": 400, "days": 14, "end_date": "2024-03-10"})
    whole = build(events, memory_limit="1GB")
    # as if the log took five times the limit (DuckDB prints 1GB as 953.6 MiB): about five parts
    monkeypatch.setattr(features, "_GAP_BYTES_PER_EVENT", 5 * 10**9 // len(events))
    parts = []
    real = features._gap_parts
    monkeypatch.setattr(features, "_gap_parts", lambda *a: parts.append(real(*a)) or parts[-1])
    cut = build(events, memory_limit="1GB")
    assert len(parts) == 1 and 4 <= parts[0] <= 6
    pd.testing.assert_frame_equal(cut, whole)


def test_gap_parts_follow_the_events_and_the_memory_limit():
    from pipelines.features import _gap_parts

    assert _gap_parts(5_008_512, "1.8 GiB") == 1  # bench_scale's 1M users
    assert _gap_parts(23e6, "1.8 GiB") == 1  # 300k simulated users
    assert _gap_parts(77e6, "1.8 GiB") == 3  # 1M: two passes fit in 2GB, one did not
    assert _gap_parts(77e6, "18.8 GiB") == 1 and _gap_parts(0, "476.8 MiB") == 1


def test_memory_sizes_read_as_duckdb_reads_them():
    from pipelines.features import _bytes

    assert _bytes("2GB") == 2e9 and _bytes("1.5 GiB") == 1.5 * 2**30 and _bytes("512MiB") == 512 * 2**20
    assert _bytes("750KB") == 750e3


@pytest.mark.parametrize("rows, expected", [
    ("(0, 1.5), (1, 2.5)", None),  # each user's row once: filled in feature_row order
    ("(0, 1.5), (0, 1.5), (1, 2.5)", "gave 3 rows for 2 users"),  # a join that repeats a user
    ("(1, 2.5)", "gave 1 rows for 2 users"),  # one that loses one
])
def test_by_user_fills_each_users_row_once_or_fails_loudly(rows, expected):
    import duckdb

    from pipelines.features import _by_user

    con = duckdb.connect()
    con.execute("CREATE TABLE user_counts AS SELECT * FROM (VALUES ('b', 1), ('a', 0), ('gone', -1)) "
                "t(user_id, feature_row)")
    con.execute(f"CREATE TABLE features AS SELECT CASE feature_row WHEN 0 THEN 'a' ELSE 'b' END AS user_id, "
                f"feature_row, x FROM (VALUES {rows}) t(feature_row, x)")
    if expected is None:
        frame = _by_user(con, None)
        assert frame["user_id"].tolist() == ["a", "b"] and frame["x"].tolist() == [1.5, 2.5]
    else:
        with pytest.raises(RuntimeError, match=expected):
            _by_user(con, None)
