"""The sequences step (pipelines/sequences.py, its GX suite) and the sequence detector's
interface and behaviour: the same contract as the table detectors (fit, score, save, load,
explain), plus what only order can show."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import sequences as seq
from pipelines.detectors import REGISTRY, get_detector_class, make_detector
from pipelines.detectors.base import format_reasons
from pipelines.errors import UserError, ValidationFailed
from pipelines.schema import EVENT_TYPES
from sequence_data import event_log

REPO = Path(__file__).resolve().parents[1]
# a small network on 310 users; the planted takeover is about five unexpected events long, so the
# score averages the five worst (the default 2 suits the simulator's shorter takeover sessions)
FAST = {"epochs": 15, "batch_size": 32, "learning_rate": 0.003, "progress": False, "device": "cpu",
        "score_top_events": 5}
SEQUENCE_DETECTORS = sorted(n for n in REGISTRY if get_detector_class(n).input_kind == "sequence")
DAY = "2026-11-20"


def events(rows: list[tuple]) -> pd.DataFrame:
    """(user, iso time, type, price, device, ip, country) rows in the clean step's shape."""
    frame = pd.DataFrame(rows, columns=["user_id", "event_time", "event_type", "price", "device_id", "ip", "country"])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["event_id"] = [f"e{i}" for i in range(len(frame))]
    return frame


@pytest.fixture(scope="module")
def planted():
    log, users = event_log(0)
    return seq.EventSequences.from_frame(seq.build_sequences(log, DAY, 48)), users


@pytest.fixture(scope="module")
def fitted(planted):
    sequences, _ = planted
    return make_detector("sequence_autoencoder", FAST).fit(sequences)


# -- the sequences step ------------------------------------------------------------------------


def test_tokens_gaps_prices_novelty_and_the_cut_off():
    frame = seq.build_sequences(events([
        ("a", "2026-11-19 10:00:00", "login", None, "d0", "1.1.1.1", "DE"),
        ("a", "2026-11-19 10:00:03", "view", None, "d0", "1.1.1.1", "DE"),
        ("a", "2026-11-19 11:00:03", "purchase", 99.0, "d1", "1.1.1.1", "FR"),
        ("a", "2026-11-20 23:59:59", "refund", 99.0, "d0", "1.1.1.1", "DE"),
        ("a", "2026-11-21 00:00:00", "login_failed", None, "d9", "9.9.9.9", "US"),  # after the day: unseen
        ("b", "2026-11-01 08:00:00", "signup", None, None, None, None),
    ]), DAY, 48)
    a = frame[frame["user_id"] == "a"].reset_index(drop=True)
    assert list(a["step"]) == [0, 1, 2, 3]
    assert [EVENT_TYPES[t] for t in a["event_type"]] == ["login", "view", "purchase", "refund"]
    # gaps: none before the first event, then 1 + floor(log2(1 + seconds))
    assert list(a["gap_bucket"]) == [0, 1 + 2, 1 + int(np.log2(3601)), 1 + int(np.log2(1 + 36 * 3600 + 59 * 60 + 56))]
    assert list(a["price_bucket"]) == [0, 0, 1 + int(np.log2(100)), 1 + int(np.log2(100))]
    assert list(a["new_device"]) == [0, 0, 1, 0] and list(a["new_country"]) == [0, 0, 1, 0]
    assert list(a["new_ip"]) == [0, 0, 0, 0]
    assert frame.attrs["population"] == {"users": 2, "events_kept": 5, "max_events": 48}
    assert frame.attrs["as_of"] == DAY and frame.attrs["vocabulary"]["max_events"] == 48


def test_only_the_last_max_events_are_kept_and_their_tokens_come_from_all_history():
    rows = [("a", f"2026-11-{d:02d} 10:00:00", "view", None, f"d{d}", "ip", "DE") for d in range(1, 11)]
    frame = seq.build_sequences(events(rows), DAY, 4)
    assert list(frame["step"]) == [0, 1, 2, 3]
    assert list(frame["event_time"].dt.day) == [7, 8, 9, 10]
    assert list(frame["new_device"]) == [1, 1, 1, 1]  # each device is new against the whole history
    assert (frame["gap_bucket"] > 0).all()  # the oldest kept event still has its gap to the one before


def test_the_suite_passes_built_sequences_and_stops_broken_ones(planted):
    from pipelines.validate import validate_dataframe

    log, _ = event_log(1, n_normal=20, n_planted=0)
    frame = seq.build_sequences(log, DAY, 48)
    assert validate_dataframe(frame, "sequences")["success"]
    broken = frame.copy()
    broken.loc[0, "event_type"] = len(EVENT_TYPES)
    with pytest.raises(ValidationFailed, match="event_type"):
        validate_dataframe(broken, "sequences")
    with pytest.raises(ValidationFailed, match="user_id"):
        validate_dataframe(pd.concat([frame, frame.iloc[:1]]), "sequences")


def test_the_suite_bounds_are_the_code_vocabulary():
    suite = json.loads((REPO / "expectations" / "sequences.json").read_text())
    bounds = {e["kwargs"]["column"]: e["kwargs"]["max_value"] for e in suite["expectations"]
              if e["type"] == "expect_column_values_to_be_between"}
    for field, size in seq.CARDINALITY.items():
        if field in bounds:
            assert bounds[field] == size - 1, field
    assert set(bounds) >= {"event_type", "gap_bucket", "price_bucket"}


def test_max_events_must_be_sensible():
    with pytest.raises(UserError, match="max_events"):
        seq.build_sequences(events([("a", "2026-11-19 10:00:00", "view", None, None, None, None)]), DAY, 1)


# -- the detector's interface --------------------------------------------------------------------


def test_every_registered_detector_has_its_conformance_tests():
    from test_detectors import DETECTORS

    assert set(DETECTORS) | set(SEQUENCE_DETECTORS) == set(REGISTRY.packaged())
    assert SEQUENCE_DETECTORS == ["sequence_autoencoder"]
    cls = get_detector_class("sequence_autoencoder")
    assert cls.wants_gpu and not cls.supervised and "events" in cls.reasons_kind


@pytest.mark.parametrize("name", SEQUENCE_DETECTORS)
def test_scores_one_finite_number_per_user_and_refuses_a_feature_table(name, planted, fitted):
    sequences, _ = planted
    scores = fitted.score(sequences)
    assert scores.shape == (len(sequences),) and np.isfinite(scores).all() and np.ptp(scores) > 0
    assert np.allclose(fitted.score(sequences.take(np.arange(10))), scores[:10], rtol=1e-5)
    with pytest.raises(UserError, match="event sequences"):
        fitted.score(pd.DataFrame({"x": [1.0, 2.0]}))
    with pytest.raises(UserError, match="at least 2"):
        make_detector(name, FAST).fit(sequences.take(np.arange(1)))
    with pytest.raises(RuntimeError, match="not fitted"):
        make_detector(name).score(sequences)


def test_save_load_gives_identical_scores_and_reasons(planted, fitted, tmp_path):
    from pipelines.detectors import Detector

    sequences, _ = planted
    version = fitted.save(tmp_path / "m")
    loaded = Detector.load(tmp_path / "m")
    assert loaded.model_version_ == version and version.startswith("sequence_autoencoder-")
    np.testing.assert_array_equal(loaded.score(sequences), fitted.score(sequences))
    assert loaded.explain(sequences.take(np.arange(20))) == fitted.explain(sequences.take(np.arange(20)))


def test_scoring_with_reasons_runs_the_network_once_and_agrees_with_score_and_reasons(planted, fitted,
                                                                                      monkeypatch):
    import pipelines.deep.sequence_net as net

    sequences, _ = planted
    some = sequences.take(np.arange(40))
    alone_scores, alone_reasons = fitted.score(some), fitted.reasons(some, top_n=3)
    calls = []
    real = net.event_losses
    monkeypatch.setattr(net, "event_losses", lambda *a, **k: calls.append(1) or real(*a, **k))
    scores, reasons = fitted.score_and_reasons(some, top_n=3)
    batches = -(-len(some) // 1024)  # the network's forward passes for one read of these users
    assert len(calls) == batches
    np.testing.assert_array_equal(scores, alone_scores)
    assert reasons == alone_reasons and any(reasons)
    # the score is the mean loss of each user's worst events, the terms its reasons show
    k = fitted.params["score_top_events"]
    per_user = fitted._event_losses(some)
    np.testing.assert_allclose(scores, [np.sort(x)[-k:].mean() for x in per_user])


def test_cpu_training_is_repeatable(planted, fitted):
    sequences, _ = planted
    again = make_detector("sequence_autoencoder", FAST).fit(sequences)
    np.testing.assert_array_equal(again.score(sequences), fitted.score(sequences))
    other_seed = make_detector("sequence_autoencoder", {**FAST, "seed": 1}).fit(sequences)
    assert not np.array_equal(other_seed.score(sequences), fitted.score(sequences))


def test_sequences_with_another_vocabulary_are_refused(fitted):
    log, _ = event_log(2, n_normal=10, n_planted=0)
    shorter = seq.EventSequences.from_frame(seq.build_sequences(log, DAY, 16))
    with pytest.raises(UserError, match="max_events .*rebuild the sequences"):
        fitted.score(shorter)


def test_tampered_weights_are_refused(fitted, tmp_path):
    from pipelines.detectors import Detector

    fitted.save(tmp_path / "m")
    weights = tmp_path / "m" / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    with pytest.raises(UserError, match="checksum mismatch"):
        Detector.load(tmp_path / "m")


# -- behaviour: order ------------------------------------------------------------------------------


def test_a_planted_ordered_takeover_ranks_at_the_top_and_not_once_the_order_is_shuffled(planted, fitted):
    """The same events in the usual order for everyone but ten accounts: failed logins, a new
    device, purchases before any browsing. Shuffling every account's events (same times, same
    events) keeps every count and removes only the order: the planted accounts then sink."""
    sequences, users = planted
    top = set(sequences.user_ids[np.argsort(-fitted.score(sequences))[:10]])
    assert len(top & set(users)) >= 8

    log, shuffled_users = event_log(0, shuffled=True)
    shuffled = seq.EventSequences.from_frame(seq.build_sequences(log, DAY, 48))
    control = make_detector("sequence_autoencoder", FAST).fit(shuffled)
    top_control = set(shuffled.user_ids[np.argsort(-control.score(shuffled))[:10]])
    assert shuffled_users == users and len(top_control & set(users)) <= 3


def test_reasons_are_the_takeover_events_with_their_time_and_flags(planted, fitted):
    from pipelines.score import suspected_types

    sequences, users = planted
    rows = sequences.for_users(users[:3])
    reasons = fitted.reasons(rows, top_n=3)
    for user_reasons in reasons:
        assert 1 <= len(user_reasons) <= 3 and all(r.kind == "event" and r.percentile >= 95 for r in user_reasons)
        assert {r.feature for r in user_reasons} <= set(EVENT_TYPES)
        assert user_reasons == sorted(user_reasons, key=lambda r: -r.value)
    kinds = {(r.feature, r.flags) for rs in reasons for r in rs}
    assert any(k in ("purchase", "login") for k, _ in kinds) or any("new_device" in f for _, f in kinds)
    text = format_reasons(reasons[0])
    assert " at 2026-11-" in text and "(p" in text
    assert any("account_takeover" in suspected_types(rs) for rs in reasons)


# -- the step in the pipeline ----------------------------------------------------------------------


def test_table_detectors_never_read_sequences_and_sequence_detectors_require_them(planted, fitted):
    from pipelines.sequences import model_input

    features = pd.DataFrame({"user_id": ["u0000", "u0001"], "x": [1.0, 2.0]})

    def never():
        raise AssertionError("a table detector loaded the sequences")

    assert list(model_input(make_detector("ecdf_tail"), features, never).columns) == ["x"]
    with pytest.raises(UserError, match="run the sequences step"):
        model_input(fitted, features, None)
    sequences, _ = planted
    assert list(model_input(fitted, features, lambda: sequences).user_ids) == ["u0000", "u0001"]
    with pytest.raises(UserError, match="no event sequence"):
        model_input(fitted, pd.DataFrame({"user_id": ["nobody"]}), sequences)


def test_run_with_the_sequence_detector_end_to_end(tmp_path):
    """`pipelines run` builds the sequences only for a sequence detector, trains, scores every
    user with event reasons, and evaluates with labels."""
    log, users = event_log(3, n_normal=120, n_planted=6)
    log.to_parquet(tmp_path / "events.parquet")
    labels = pd.DataFrame({"user_id": sorted(set(log["user_id"]))})
    labels["is_anomaly"] = labels["user_id"].isin(users).astype(int)
    labels["anomaly_type"] = np.where(labels["is_anomaly"] == 1, "account_takeover", "")
    labels.to_parquet(tmp_path / "labels.parquet")
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  detector: sequence_autoencoder\n  device: cpu\n"
                      "  sequence_autoencoder: {epochs: 5, batch_size: 32}\nscore: {top_k: 6}\n")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "pipelines", "--params", str(params), "run", "--events",
                           str(tmp_path / "events.parquet"), "--labels", str(tmp_path / "labels.parquet"), "--out",
                           str(out), "--warehouse", f"duckdb:///{tmp_path}/wh.duckdb"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["sequences"]["users"] == len(labels) and summary["train"]["detector"] == "sequence_autoencoder"
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == len(labels) and scores["model_version"].str.startswith("sequence_autoencoder-").all()
    assert scores.loc[scores["flagged"], "reasons"].str.contains(r" at 2026-11-\d\d ").any()
    assert (out / "sequences.parquet").exists() and "roc_auc" in summary["evaluate"]


def test_an_ensemble_of_a_table_and_a_sequence_detector(planted, tmp_path):
    """An ensemble member may read sequences: the ensemble then reads features and sequences
    of the same users, saves and loads both kinds of member, and merges feature and event reasons."""
    from pipelines.config import default_params
    from pipelines.detectors import Detector
    from pipelines.features import build_features
    from pipelines.sequences import TableAndSequences, model_input
    from pipelines.train import train

    log, users = event_log(0)
    features = build_features(log, {"as_of": DAY, "threads": 1})
    sequences, _ = planted
    params = {**default_params()["train"], "detector": "ensemble", "holdout_fraction": 0.0,
              "ensemble": {"members": {"ecdf_tail": 1.0, "sequence_autoencoder": 1.0}},
              "sequence_autoencoder": FAST}
    assert get_detector_class("ensemble").reads_sequences_for(params)
    detector, info = train(features, params, None, lambda: sequences)
    assert detector.input_kind == "table+sequence" and info["features"] == len(detector.feature_names_) > 6
    X = model_input(detector, features, sequences)
    assert isinstance(X, TableAndSequences) and list(X.sequences.user_ids) == list(features["user_id"])
    scores = detector.score(X)
    top = set(features["user_id"].to_numpy()[np.argsort(-scores)[:10]])
    assert len(top & set(users)) >= 8
    detector.save(tmp_path / "ens")
    loaded = Detector.load(tmp_path / "ens")
    np.testing.assert_array_equal(loaded.score(X), scores)
    planted_rows = features.index[features["user_id"].isin(users)].to_numpy()
    reasons = loaded.reasons(model_input(loaded, features.iloc[planted_rows], sequences), top_n=4)
    kinds = {r.kind for rs in reasons for r in rs}
    assert kinds == {"feature", "event"}
    assert all(abs(sum(r.contribution for r in rs) - 1) < 1e-9 for rs in reasons if rs)
    with pytest.raises(UserError, match="sequence member"):
        loaded.score(X.table)

