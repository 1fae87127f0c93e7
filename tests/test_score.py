"""pipelines.score: ranks, flag policies, reasons -> abuse types, contract section 3 columns."""
from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors import Reason, make_detector
from pipelines.errors import UserError
from pipelines.schema import SCORE_COLUMNS
from pipelines.score import LOW_SIDE_SIGNALS, SIGNAL_HINTS, flag, score_users, suspected_types

AS_OF = "2024-03-10"


@pytest.fixture(scope="module")
def detector(normal_features):
    return make_detector("robust_zscore").fit(normal_features)


def users(normal_features: pd.DataFrame, n: int = 60, seed: int = 0) -> pd.DataFrame:
    rows = normal_features.sample(n, random_state=seed).reset_index(drop=True)
    return pd.concat([pd.Series([f"u{i:03d}" for i in range(n)], name="user_id", dtype="str"), rows], axis=1)


def test_contract_columns_and_types(detector, normal_features):
    out = score_users(users(normal_features), detector, {"top_k": 5}, AS_OF)
    assert tuple(out.columns[: len(SCORE_COLUMNS)]) == SCORE_COLUMNS
    assert "anomaly_types" in out.columns
    assert str(out["user_id"].dtype) == "str"
    assert out["score"].dtype == np.float64
    assert np.issubdtype(out["rank"].dtype, np.integer)
    assert out["flagged"].dtype == bool
    assert out["reasons"].map(type).eq(str).all()
    assert (out["as_of"] == dt.date(2024, 3, 10)).all()
    assert (out["model_version"] == "robust_zscore").all()  # not saved: the detector's name
    assert sorted(out["user_id"]) == [f"u{i:03d}" for i in range(60)]


def test_model_version_of_a_saved_detector(normal_features, tmp_path):
    det = make_detector("robust_zscore").fit(normal_features)
    version = det.save(tmp_path)
    out = score_users(users(normal_features, 10), det, {}, AS_OF)
    assert (out["model_version"] == version).all()


def test_ranks_are_1_to_n_ordered_by_score(detector, normal_features):
    feats = users(normal_features)
    out = score_users(feats, detector, {"top_k": 5}, AS_OF)
    assert out["rank"].tolist() == list(range(1, len(feats) + 1))
    assert out["score"].is_monotonic_decreasing
    # scores are the detector's, per user
    expected = dict(zip(feats["user_id"], detector.score(feats.drop(columns="user_id"))))
    assert out["score"].tolist() == [expected[u] for u in out["user_id"]]
    # the reasons are the detector's explanation of that user
    explained = dict(zip(feats["user_id"], detector.explain(feats.drop(columns="user_id"))))
    assert out["reasons"].tolist() == [explained[u] for u in out["user_id"]]


def test_ties_are_broken_by_user_id_whatever_the_input_order(detector, normal_features):
    same = normal_features.iloc[[0]]
    ids = ["u9", "u10", "a1", "u2"]
    feats = pd.concat([pd.Series(ids, name="user_id", dtype="str"),
                       pd.concat([same] * 4, ignore_index=True)], axis=1)
    out = score_users(feats, detector, {"top_k": 2}, AS_OF)
    assert out["score"].nunique() == 1
    assert out["user_id"].tolist() == sorted(ids)
    assert out.loc[out["flagged"], "user_id"].tolist() == sorted(ids)[:2]
    reversed_ = score_users(feats.iloc[::-1].reset_index(drop=True), detector, {"top_k": 2}, AS_OF)
    pd.testing.assert_frame_equal(out, reversed_)


@pytest.mark.parametrize("k,expected", [(0, 0), (1, 1), (7, 7), (60, 60), (1000, 60)])
def test_top_k_flags_exactly_k(detector, normal_features, k, expected):
    out = score_users(users(normal_features), detector, {"policy": "top_k", "top_k": k}, AS_OF)
    assert int(out["flagged"].sum()) == expected
    assert out["flagged"].tolist() == [r <= k for r in out["rank"]]


def test_threshold_policy(detector, normal_features):
    feats = users(normal_features)
    scores = np.sort(detector.score(feats.drop(columns="user_id")))
    threshold = float(scores[-10])  # the 10th highest score is included (>=)
    out = score_users(feats, detector, {"policy": "threshold", "threshold": threshold}, AS_OF)
    assert int(out["flagged"].sum()) == 10
    assert (out.loc[out["flagged"], "score"] >= threshold).all()
    assert (out.loc[~out["flagged"], "score"] < threshold).all()
    assert not score_users(feats, detector, {"policy": "threshold", "threshold": 1e9}, AS_OF)["flagged"].any()


@pytest.mark.parametrize(
    "params,match",
    [
        ({"policy": "top_percent"}, "policy"),
        ({"policy": "threshold", "threshold": None}, "threshold"),
        ({"policy": "threshold", "threshold": "high"}, "threshold"),
        ({"policy": "top_k", "top_k": -1}, "top_k"),
        ({"policy": "top_k", "top_k": 2.5}, "top_k"),
        ({"policy": "top_k", "top_k": None}, "top_k"),
    ],
)
def test_bad_policy_is_a_user_error(detector, normal_features, params, match):
    with pytest.raises(UserError, match=match):
        score_users(users(normal_features, 5), detector, params, AS_OF)
    with pytest.raises(UserError, match=match):
        flag(np.array([1.0]), np.array([1]), {"top_k": 1, "threshold": None, **params})


def test_missing_feature_column_is_a_user_error(detector, normal_features):
    with pytest.raises(UserError, match="missing"):
        score_users(users(normal_features, 5).drop(columns="refund_ratio_28d"), detector, {}, AS_OF)


def test_planted_abuser_is_flagged_with_reasons_and_types(detector, normal_features):
    feats = users(normal_features)
    feats.loc[17, ["refund_ratio_28d", "distinct_devices_28d"]] = [0.95, 25.0]
    out = score_users(feats, detector, {"top_k": 1, "n_reasons": 2}, AS_OF)
    top = out.iloc[0]
    assert top["user_id"] == "u017" and top["rank"] == 1 and top["flagged"]
    assert top["reasons"].count("; ") <= 1
    assert "refund_ratio_28d=0.95 (p100.0)" in top["reasons"]
    assert "refund_abuse" in top["anomaly_types"].split(",")
    X = feats[[c for c in feats.columns if c != "user_id"]]
    by_user = dict(zip(feats["user_id"], [suspected_types(r) for r in detector.reasons(X, top_n=2)]))
    assert out["anomaly_types"].tolist() == [by_user[u] for u in out["user_id"]]


def rs(text: str | None) -> list[Reason]:
    """Reasons from `feature=value (pNN)` text: a compact way to write test cases."""
    out = []
    for part in filter(None, (text or "").split("; ")):
        feature, rest = part.split("=", 1)
        value, pct = rest.split(" (p")
        out.append(Reason(feature, float(value), float(pct.rstrip(")")), 0.0))
    return out


@pytest.mark.parametrize(
    "reasons,expected",
    [
        ("refund_ratio_28d=0.92 (p99.8); distinct_devices_1d=7 (p99.9)", "refund_abuse"),
        ("n_refund_7d=4 (p99.9); refund_value_28d=800 (p99.9); refund_ratio=0.9 (p99.0)", "refund_abuse"),
        ("n_login_failed_1d=12 (p100.0); small_failed_payment_share_1d=1 (p100.0)", "account_takeover,card_testing"),
        ("n_new_devices_1d=3 (p99.9); n_new_countries_7d=2 (p99.9)", "account_takeover"),
        ("typical_gap_s_1d=0.5 (p0.1); median_gap_s_28d=1 (p0.1); n_view_1d=900 (p100.0)", "scraping_bot"),
        ("max_same_product_purchases_28d=30 (p100.0); small_purchase_share_7d=1 (p99.0)", "brushing"),
        ("unbought_review_share_28d=1 (p100.0); max_accounts_sharing_device=6 (p100.0)", "fake_review_ring"),
        ("account_age_days=0.1 (p0.5); distinct_ips_1d=9 (p99.9)", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_suspected_types(reasons, expected):
    assert suspected_types(rs(reasons)) == expected


def test_low_side_reasons_suggest_no_abuse_type():
    assert suspected_types(rs("refund_ratio_28d=0 (p1.7)")) == ""
    assert suspected_types(rs("refund_ratio_28d=0 (p1.7); n_payment_failed_1d=9 (p99.9)")) == "card_testing"
    assert suspected_types(rs("typical_gap_s_1d=0.5 (p0.1)")) == "scraping_bot"
    assert suspected_types(rs("typical_gap_s_1d=90000 (p99.9)")) == ""


def test_every_hint_is_reachable_through_a_reason():
    for signal, kind in SIGNAL_HINTS.items():
        telling = "p0.1" if signal in LOW_SIDE_SIGNALS else "p99.9"
        for suffix in ("", "_1d", "_28d"):
            assert suspected_types(rs(f"{signal}{suffix}=1 ({telling})")) == kind, (signal, suffix)
    # a signal whose name merely contains a hinted one is not that signal
    assert suspected_types(rs("avg_refund_ratio_x=1 (p99.9)")) == ""


def test_scoring_the_simulated_users_finds_abusers(sim, sim_features):
    from pipelines.train import train

    det, info = train(sim_features, {"detector": "robust_zscore"})
    out = score_users(sim_features, det, {"top_k": 25}, sim_features.attrs["as_of"])
    assert len(out) == len(sim_features) == info["users_total"]
    labels = sim[1].set_index("user_id")
    flagged = out.loc[out["flagged"], "user_id"]
    base_rate = labels.loc[out["user_id"], "is_anomaly"].mean()
    precision = labels.loc[flagged, "is_anomaly"].mean()
    assert precision > 3 * base_rate
    # flagged users carry reasons, and their types are the team's vocabulary
    assert out.loc[out["flagged"], "reasons"].str.len().gt(0).all()
    vocab = set(SIGNAL_HINTS.values())
    for types in out["anomaly_types"]:
        assert set(filter(None, types.split(","))) <= vocab


@pytest.mark.parametrize("name", ["robust_zscore", "ecdf_tail"])
def test_scoring_in_batches_gives_the_table_of_one_pass(normal_features, name):
    feats = users(normal_features, 90)
    det = make_detector(name).fit(normal_features)
    whole = score_users(feats, det, {"top_k": 9, "batch_users": 1000}, AS_OF)
    batched = score_users(feats, det, {"top_k": 9, "batch_users": 7}, AS_OF)
    pd.testing.assert_frame_equal(whole, batched)
    assert whole["reasons"].iloc[:3].str.len().gt(0).all()  # the most anomalous are explained


@pytest.mark.parametrize("name", ["robust_zscore", "ecdf_tail"])
def test_a_batch_scored_in_parts_gives_the_table_of_one_pass(normal_features, name, monkeypatch):
    import pipelines.score as score

    feats = users(normal_features, 90)
    det = make_detector(name).fit(normal_features)
    monkeypatch.setattr(score, "_CHUNK_VALUES", 10 ** 9)
    whole = score_users(feats, det, {"top_k": 9, "batch_users": 1000}, AS_OF)
    sizes = []
    scored = type(det).score_and_reason_table

    def recording(self, X, top_n=3):
        sizes.append(len(X))
        return scored(self, X, top_n)

    monkeypatch.setattr(type(det), "score_and_reason_table", recording)
    monkeypatch.setattr(score, "_CHUNK_VALUES", 4 * len(det.feature_names_))  # parts of 4 users
    parts = score_users(feats, det, {"top_k": 9, "batch_users": 1000}, AS_OF)
    assert sorted(sizes) == [2] + [4] * 22  # two parts at a time: in either order
    pd.testing.assert_frame_equal(whole, parts)
    assert whole["reasons"].iloc[:3].str.len().gt(0).all()


def test_two_parts_scored_at_once_give_the_frame_of_one_at_a_time(normal_features, monkeypatch):
    """score_batches scores two parts at a time (the second core), and the frame is that of
    parts scored one by one, whichever part finishes first."""
    import threading

    import pipelines.score as score

    feats = users(normal_features, 40)
    det = make_detector("ecdf_tail").fit(normal_features)
    monkeypatch.setattr(score, "_SCORING_THREADS", 1)
    one_by_one = score_users(feats, det, {"top_k": 9, "batch_users": 1000}, AS_OF)
    both = threading.Barrier(2, timeout=10)
    scored = type(det).score_and_reason_table
    calls, lock = [], threading.Lock()

    def together(self, X, top_n=3):
        with lock:
            calls.append(len(X))
            n = len(calls)
        if n <= 2:
            both.wait()  # the first two parts meet here: scored one at a time, this times out
        if n == 1:
            time.sleep(0.05)  # and the first part finishes after the second
        return scored(self, X, top_n)

    monkeypatch.setattr(type(det), "score_and_reason_table", together)
    monkeypatch.setattr(score, "_SCORING_THREADS", 2)
    monkeypatch.setattr(score, "_CHUNK_VALUES", 8 * len(det.feature_names_))  # parts of 8 users
    pd.testing.assert_frame_equal(score_users(feats, det, {"top_k": 9, "batch_users": 1000}, AS_OF), one_by_one)
    assert sorted(calls) == [8] * 5


def test_batches_read_for_scoring_hold_at_most_one_part(normal_features, monkeypatch):
    import types

    import pipelines.score as score

    det = make_detector("ecdf_tail").fit(normal_features)  # 6 features
    assert score.batch_rows(det, 100_000) == 100_000  # under 2**21 values: score.batch_users
    monkeypatch.setattr(score, "_CHUNK_VALUES", 60)
    assert score.batch_rows(det, 100_000) == 10 and score.batch_rows(det, 7) == 7
    assert score.batch_rows(make_detector("ecdf_tail"), 100_000) == 100_000  # no list of its features
    assert score.batch_rows(types.SimpleNamespace(input_kind="sequence", feature_names_=None), 500) == 500


def test_scoring_nobody_is_a_user_error(detector, normal_features):
    with pytest.raises(UserError, match="no users to score"):
        score_users(users(normal_features).iloc[:0], detector, {}, AS_OF)


def test_feature_batches_stream_the_file_and_check_its_day(normal_features, tmp_path):
    from pipelines.stages import _feature_batches

    feats = users(normal_features, 50)
    feats.attrs["as_of"] = AS_OF
    path = str(tmp_path / "features.parquet")
    feats.to_parquet(path, index=False)
    with _feature_batches(path, AS_OF, 16) as batches:
        sizes = [len(b) for b in batches]
    assert sizes == [16, 16, 16, 2]
    with pytest.raises(UserError, match="features are as of 2024-03-10, not 2024-03-11"):
        with _feature_batches(path, "2024-03-11", 16):
            pass
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="cannot read as Parquet"):
        with _feature_batches(str(tmp_path / "junk.parquet"), AS_OF, 16):
            pass


def _event(kind: str, percentile: float, flags: tuple[str, ...] = ()) -> Reason:
    return Reason(kind, 2.5, percentile, 0.5, kind="event", context="2024-03-10 12:00:00", flags=flags)


# reasons as a detector gives them, with the text and hints scores.parquet carries for them
KNOWN_REASONS = [
    ([Reason("n_view_1d", 42.0, 99.97, 0.5), Reason("refund_value_28d", 12345.6, 100.0, 0.3),
      Reason("refund_ratio_7d", 0.123456, 99.95, 0.2)],
     "n_view_1d=42 (p99.97); refund_value_28d=12346 (p100.0); refund_ratio_7d=0.123 (p99.95)",
     "scraping_bot,refund_abuse"),  # a hint given twice counts once, where first given
    ([Reason("配送_28d", 3.0, 99.949, 1.0)], "配送_28d=3 (p99.9)", ""),  # a name outside ASCII, no hint
    ([Reason("account_age_days", float("nan"), float("nan"), 1.0), Reason("typical_gap_s_1d", 0.5, 0.1, 0.0)],
     "account_age_days=nan (pnan); typical_gap_s_1d=0.5 (p0.1)", "scraping_bot"),  # NaN: on neither side
    ([], "", ""),
    ([_event("login_failed", 99.9, ("new_device", "new_ip")), Reason("n_login_failed_1d", 7.0, 99.9, 0.5)],
     "login_failed at 2024-03-10 12:00:00 [new_device, new_ip] (p99.9); n_login_failed_1d=7 (p99.9)",
     "account_takeover"),
    ([_event("view", 99.0, ("new_ip",)), _event("payment_failed", 99.5, ("new_country",)), _event("review", 100.0)],
     "view at 2024-03-10 12:00:00 [new_ip] (p99.0); payment_failed at 2024-03-10 12:00:00 [new_country] (p99.5); "
     "review at 2024-03-10 12:00:00 (p100.0)",
     "card_testing,account_takeover,fake_review_ring"),  # a new country: a takeover, after the event's own hint
    ([Reason("refund_ratio_28d", -0.0, 1.7, 1.0), Reason("n_payment_failed_hist", 9.0, 50.0, 0.0)],
     "refund_ratio_28d=0 (p1.7); n_payment_failed_hist=9 (p50.0)", ""),  # low side; p50 is neither side
]


def test_reason_texts_and_types_of_known_reasons():
    """The one implementation (ReasonTable) pinned on known rows, a table of them all at once
    and a row at a time (format_reasons, suspected_types: one-row tables)."""
    from pipelines.detectors.base import ReasonTable, format_reasons
    from pipelines.score import suspected_types_table

    lists = [reasons for reasons, _, _ in KNOWN_REASONS]
    table = ReasonTable.from_lists(lists)
    assert table.texts().to_pylist() == [text for _, text, _ in KNOWN_REASONS]
    assert suspected_types_table(table).to_pylist() == [types for _, _, types in KNOWN_REASONS]
    assert [format_reasons(r) for r in lists] == [text for _, text, _ in KNOWN_REASONS]
    assert [suspected_types(r) for r in lists] == [types for _, _, types in KNOWN_REASONS]
    assert str(lists[4][0]) == "login_failed at 2024-03-10 12:00:00 [new_device, new_ip] (p99.9)"
    kept = table.to_lists()
    assert [[(r.feature, r.kind, r.context, r.flags) for r in row] for row in kept] == \
        [[(r.feature, r.kind, r.context, r.flags) for r in row] for row in lists]
    assert len(ReasonTable.from_lists([])) == 0 and ReasonTable.from_lists([]).texts().to_pylist() == []
    # each value is formatted as itself: -0.0 and 0.0 are equal, but not as text
    signed = ReasonTable.from_lists([[Reason("x", 1.0, -0.0, 1.0)], [Reason("x", 1.0, 0.0, 1.0)]])
    assert signed.texts().to_pylist() == ["x=1 (p-0.0)", "x=1 (p0.0)"]


def test_reason_texts_and_types_of_the_strongest_reasons_on_known_rows():
    """strongest_reason_table's texts and hints: a three-way tie (windows of one signal count
    once), a lone signal, a row without reasons, a NaN rarity behind stronger ones."""
    from pipelines.detectors.base import strongest_reason_table
    from pipelines.score import suspected_types_table

    names = ["n_view_1d", "n_view_28d", "refund_ratio_28d", "typical_gap_s_1d"]
    matrix = np.array([[40.0, 90.0, 0.9, 2.0], [1.0, 2.0, 0.0, 0.5], [3.0, 4.0, 0.5, 7.0], [5.0, 6.0, 0.25, 1.0]])
    percentile = np.array([[99.9, 100.0, 99.99, 50.0], [10.0, 20.0, 0.5, 0.1], [30.0, 40.0, 60.0, 99.0],
                           [50.0, 60.0, 99.0, 0.2]])
    strength = np.array([[6.0, 6.0, 6.0, 0.0], [0.0, 0.0, 0.0, 7.0], [0.0, 0.0, 0.0, 1.0], [np.nan, 3.0, 5.0, 5.0]])
    table = strongest_reason_table(names, matrix, percentile, strength, 3)
    assert table.texts().to_pylist() == [
        "n_view_1d=40 (p99.9); refund_ratio_28d=0.9 (p99.99)",
        "typical_gap_s_1d=0.5 (p0.1)",
        "",
        "refund_ratio_28d=0.25 (p99.0); typical_gap_s_1d=1 (p0.2); n_view_28d=6 (p60.0)",
    ]
    assert suspected_types_table(table).to_pylist() == ["scraping_bot,refund_abuse", "scraping_bot", "",
                                                        "refund_abuse,scraping_bot"]


def test_scoring_with_the_reason_table_gives_the_per_reason_texts(normal_features):
    """score_users' reasons and anomaly_types (the ecdf_tail default's vectorised path) are
    format_reasons and suspected_types of the detector's reasons, user by user."""
    from pipelines.detectors.base import format_reasons

    feats = users(normal_features, 120, seed=3)
    feats.loc[:15, "refund_ratio_28d"] = 0.9
    feats.loc[5:25, "typical_gap_s_1d"] = 1.0
    det = make_detector("ecdf_tail").fit(normal_features)
    out = score_users(feats, det, {"top_k": 9, "batch_users": 50}, AS_OF).set_index("user_id")
    X = feats.drop(columns="user_id")
    reasons = det.reasons(X, top_n=3)
    ids = list(feats["user_id"])
    assert list(out.loc[ids, "reasons"]) == [format_reasons(r) for r in reasons]
    assert list(out.loc[ids, "anomaly_types"]) == [suspected_types(r) for r in reasons]
    assert out["anomaly_types"].str.contains("refund_abuse").any()
    assert out["anomaly_types"].str.contains("scraping_bot").any()


def test_ranks_from_pyarrow_ids_equal_those_from_python_strings():
    """rank_scores orders a pyarrow id array by pyarrow: the same ranks as comparing the ids
    as Python strings (ties in score, ids of other lengths and non-ASCII ids, a repeated id)."""
    import pyarrow as pa

    from pipelines.score import rank_scores

    rng = np.random.default_rng(2)
    ids = np.array([f"u{i}" for i in rng.permutation(3000)] + ["é1", "z", "Z", "u1", "ü", "u10"], dtype=object)
    scores = rng.choice([0.5, 1.0, 2.25, 7.0], len(ids))
    expected = rank_scores(scores, ids)
    assert (rank_scores(scores, pa.array(ids.tolist(), type=pa.string())) == expected).all()
    chunked = pa.chunked_array([pa.array(ids[:1000].tolist()), pa.array(ids[1000:].tolist())])
    assert (rank_scores(scores, chunked) == expected).all()
    assert sorted(expected) == list(range(1, len(ids) + 1))
