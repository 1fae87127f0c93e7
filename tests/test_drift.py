"""Drift at scoring time: PSI per feature and a KS test on the scores against the champion's
training reference; a shifted feature is found and an unshifted one is not; severe drift blocks
publishing only when drift.block_publish_on_severe is set; only the features the model reads
make drift severe; below drift.min_users users the PSI is shown but not judged."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import drift, io, stages
from pipelines.config import default_params, override, section
from pipelines.errors import UserError
from pipelines.layout import Layout
from pipelines.registry import Registry

DAY = "2026-11-21"


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [f"u{i}" for i in range(n)],
        "refund_ratio_28d": rng.beta(1, 20, n) + shift,                  # shifted today
        "typical_gap_s_1d": rng.lognormal(8, 0.4, n),                    # unchanged
        "n_login_failed_7d": rng.poisson(0.3, n).astype("float64"),      # mostly 0: a point mass
    })


def _params(**drift_params) -> dict:
    return {**section(default_params(), "drift"), **drift_params}


def test_bins_put_a_point_mass_in_its_own_bin_and_count_missing_last():
    values = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 3, np.nan])
    edges = drift.bin_edges(values, 10)
    assert edges[0] == 0.0 and len(edges) == len(set(edges))
    counts = drift.bin_counts(values, edges)
    assert counts[0] == 8 and counts[-1] == 1 and counts.sum() == len(values)


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert 0 < drift.psi([0.5, 0.5], [0.6, 0.4]) < drift.psi([0.5, 0.5], [0.9, 0.1])


def test_a_shifted_feature_drifts_and_an_unshifted_one_does_not():
    rng = np.random.default_rng(0)
    train = _frame(rng, 6000)
    reference = drift.training_reference(train, rng.normal(0, 1, 6000), ["refund_ratio_28d", "typical_gap_s_1d"])
    today = _frame(np.random.default_rng(1), 8000, shift=0.05)
    batches = [today.iloc[i:i + 1000] for i in range(0, len(today), 1000)]  # a batch at a time
    result = drift.compute_drift(reference, batches, np.random.default_rng(2).normal(0, 1, 8000), _params())
    by_name = {r["feature"]: r for r in result["features"]}
    assert by_name["refund_ratio_28d"]["status"] == "severe" and by_name["refund_ratio_28d"]["psi"] > 1.0
    assert by_name["typical_gap_s_1d"]["status"] == "ok" and by_name["typical_gap_s_1d"]["psi"] < 0.02
    assert by_name["n_login_failed_7d"]["status"] == "ok"
    assert result["status"] == "severe" and result["severe"] == ["refund_ratio_28d"]
    assert result["features"][0]["feature"] == "refund_ratio_28d"  # worst first
    assert result["score"]["status"] == "ok" and result["score"]["ks_pvalue"] > 0.01
    assert result["users"] == 8000


def test_shifted_scores_fail_the_ks_test():
    rng = np.random.default_rng(3)
    train = _frame(rng, 3000)
    reference = drift.training_reference(train, rng.normal(0, 1, 3000), None, sample_users=2000)
    assert len(reference["score"]["sample"]) == 2000
    same = drift.compute_drift(reference, [train], rng.normal(0, 1, 50_000), _params())
    moved = drift.compute_drift(reference, [train], rng.normal(0.3, 1, 50_000), _params())
    assert same["score"]["status"] == "ok" and same["score"]["n_today"] == 2000  # sampled to the reference's size
    assert moved["score"]["ks_pvalue"] < 1e-6 and moved["score"]["status"] != "ok"
    assert "score" in moved["drifted"]


def test_a_model_feature_missing_today_is_severe_and_another_only_a_warning():
    rng = np.random.default_rng(4)
    reference = drift.training_reference(_frame(rng, 2000), rng.normal(size=2000), ["refund_ratio_28d"])
    today = _frame(rng, 2000).drop(columns=["refund_ratio_28d", "typical_gap_s_1d"])
    result = drift.compute_drift(reference, [today], rng.normal(size=2000), _params())
    by_name = {r["feature"]: r for r in result["features"]}
    assert by_name["refund_ratio_28d"]["status"] == "severe" and by_name["refund_ratio_28d"]["psi"] is None
    assert by_name["typical_gap_s_1d"]["status"] == "warn"
    assert "refund_ratio_28d (missing)" in drift.blocking_message(DAY, result, "drift.json")


def test_thresholds_come_from_the_parameters():
    rng = np.random.default_rng(5)
    reference = drift.training_reference(_frame(rng, 4000), rng.normal(size=4000), None)
    today = _frame(np.random.default_rng(6), 4000, shift=0.01)
    strict = drift.compute_drift(reference, [today], rng.normal(size=4000), _params(psi_warn=0.01, psi_severe=100))
    loose = drift.compute_drift(reference, [today], rng.normal(size=4000), _params(psi_warn=50, psi_severe=100))
    assert "refund_ratio_28d" in strict["drifted"] and strict["status"] == "warn"
    assert loose["drifted"] == [] and loose["status"] == "ok"
    with pytest.raises(UserError, match="drift.psi_severe: must be >= psi_warn"):
        override(default_params(), "drift.psi_severe", 0.05)


# --- through the steps: the reference saved at training, drift.json, and publishing ------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    from pipelines.simulate import simulate

    root = tmp_path_factory.mktemp("drift")
    events, _ = simulate({"n_users": 400, "days": 10, "seed": 7, "end_date": DAY, "anomaly_rate": 0.08})
    events.to_parquet(root / "events.parquet", index=False)
    params = default_params()
    for key, value in (("storage", {"data": str(root / "data"), "reports": str(root / "reports"),
                                    "models": str(root / "models")}),
                       ("ingest.source", str(root / "events.parquet")), ("score.top_k", 15),
                       ("features.threads", 1), ("warehouse.url", f"duckdb:///{root / 'warehouse.duckdb'}"),
                       ("drift.min_users", 0)):  # 400 users: judged here, the guard has its own tests
        params = override(params, key, value)
    stages.ingest_stage(params, DAY)
    stages.clean_stage(params, DAY)
    stages.features_stage(params, DAY)
    stages.train_stage(params, DAY)
    stages.promote_stage(params, DAY)
    return root, params


def _shifted_features(root: Path, params: dict, column: str) -> str:
    """The day's features with `column` moved far from the training values (a broken feed)."""
    lay = Layout.from_params(params)
    features = io.read_parquet(lay.features(DAY))
    features[column] = features[column] * 50 + 1000
    out = str(root / f"shifted_{column}.parquet")
    io.write_parquet(features, out)
    return out


def test_the_reference_is_saved_with_the_model_without_changing_its_version(trained):
    root, params = trained
    registry = Registry(params["storage"]["models"])
    version = registry.champion_version()
    reference = registry.extra_json(version, drift.REFERENCE_FILE)
    assert reference["format"] == drift.REFERENCE_FORMAT and reference["features"]
    assert set(reference["model_features"]) == set(registry.get(version)["feature_names"])
    # the model loads as before and its version is still the hash of its own files
    assert registry.load(version).model_version_ == version


def test_scoring_the_training_day_records_no_drift(trained):
    root, params = trained
    info = stages.score_stage(params, DAY)
    recorded = io.read_json(Layout.from_params(params).report(DAY, "drift.json"))
    assert info["drift"] == recorded["status"] == "ok", drift.summary(recorded)
    assert recorded["reference_rebuilt"] is False
    table = pd.read_parquet(Layout.from_params(params).report(DAY, "drift.parquet"))
    assert set(table["feature"]) == {r["feature"] for r in recorded["features"]} | {"score"}


def test_a_shifted_feature_is_recorded_logged_and_blocks_publish_only_when_configured(trained, caplog):
    root, params = trained
    lay = Layout.from_params(params)
    shifted = _shifted_features(root, params, "account_age_days")
    with caplog.at_level("WARNING", logger="pipelines"):
        info = stages.score_stage(params, DAY, features_in=shifted)
    assert info["drift"] == "severe" and "account_age_days" in info["drifted"]
    recorded = io.read_json(lay.report(DAY, "drift.json"))
    by_name = {r["feature"]: r for r in recorded["features"]}
    assert by_name["account_age_days"]["status"] == "severe"
    # the one shifted feature, none of the other unshifted ones
    assert [r["feature"] for r in recorded["features"] if r["status"] != "ok"] == ["account_age_days"]
    assert any("drift on 2026-11-21 (severe)" in r.getMessage() and "account_age_days" in r.getMessage()
               for r in caplog.records)

    blocking = override(params, "drift.block_publish_on_severe", True)
    with pytest.raises(UserError) as caught:
        stages.publish_stage(blocking, DAY, run_id="blocked")
    message = str(caught.value)
    assert "\n" not in message and "not publishing 2026-11-21: severe drift in account_age_days (PSI" in message
    assert not (root / "warehouse.duckdb").exists()  # nothing was written
    published = stages.publish_stage(params, DAY, run_id="allowed")  # not configured: publishes
    assert published["rows"] == 15

    stages.score_stage(params, DAY)  # the feed repaired: the same setting publishes again
    assert stages.publish_stage(blocking, DAY, run_id="repaired")["rows"] == 15


def test_a_model_without_a_saved_reference_gets_one_rebuilt_from_its_training_day(trained, tmp_path):
    import shutil

    root, params = trained
    models = tmp_path / "models"
    shutil.copytree(params["storage"]["models"], models)
    version = Registry(str(models)).champion_version()
    (models / "registry" / version / drift.REFERENCE_FILE).unlink()
    older = override(params, "storage.models", str(models))
    result = drift.day_drift(older, DAY, Registry(str(models)), version, Layout.from_params(params).features(DAY),
                             Layout.from_params(params).scores(DAY))
    assert result["reference_rebuilt"] is True and result["status"] == "ok"


# --- small populations and the features the model does not read --------------------------------


def test_by_chance_alone_the_psi_of_90_users_reaches_the_warning_and_that_of_500_does_not():
    """Why drift.min_users: two samples of one population, the largest PSI of three features."""
    def largest_psi(n: int, seed: int) -> float:
        rng = np.random.default_rng(seed)
        reference = drift.training_reference(_frame(rng, n), rng.normal(size=n), None)
        today = _frame(np.random.default_rng(1000 + seed), n)
        result = drift.compute_drift(reference, [today], rng.normal(size=n), _params(min_users=0))
        return max(r["psi"] for r in result["features"])

    small = np.median([largest_psi(90, seed) for seed in range(12)])
    large = np.median([largest_psi(500, seed) for seed in range(12)])
    assert small > _params()["psi_warn"] > 2 * large, (small, large)
    assert _params()["min_users"] == 500


def test_smoothing_bounds_an_empty_bin_and_vanishes_with_many_users():
    reference = [0.1] * 10
    empty_today = [0.0] + [1 / 9] * 9
    floor_only = drift.psi(reference, empty_today)  # 0.1 * ln(0.1 / 1e-4) from the one bin: ~0.7
    assert floor_only > 0.6
    assert drift.psi(reference, empty_today, 5000, 90) < 0.35 < floor_only
    # many users on both sides: the same as the shares' own PSI
    exact = drift.psi([0.5, 0.5], [0.6, 0.4])
    assert drift.psi([0.5, 0.5], [0.6, 0.4], 1e7, 1e7) == pytest.approx(exact, rel=1e-4)
    # bins both sides leave empty do not count
    assert drift.psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0], 100, 100) == pytest.approx(0.0)


def test_below_min_users_the_psi_is_shown_but_never_severe_and_a_missing_model_feature_still_is():
    rng = np.random.default_rng(8)
    reference = drift.training_reference(_frame(rng, 2000), rng.normal(size=2000), ["refund_ratio_28d"])
    shifted = _frame(np.random.default_rng(9), 90, shift=0.3)
    result = drift.compute_drift(reference, [shifted], rng.normal(2, 1, 90), _params())
    by_name = {r["feature"]: r for r in result["features"]}
    assert result["status"] == "too_few_users" and result["judged"] is False and result["severe"] == []
    assert by_name["refund_ratio_28d"]["psi"] > 1.0 and by_name["refund_ratio_28d"]["level"] == "severe"
    assert by_name["refund_ratio_28d"]["status"] == "too_few_users"
    assert by_name["refund_ratio_28d"]["note"] == "too few users to judge"
    assert result["score"]["level"] != "ok" and result["score"]["status"] == "too_few_users"
    assert {"refund_ratio_28d", "score"} <= set(result["unjudged"]) and result["drifted"] == []
    assert result["thresholds"]["min_users"] == 500
    # the same day judged: severe
    assert drift.compute_drift(reference, [shifted], rng.normal(2, 1, 90), _params(min_users=50))["status"] == "severe"
    # a small training reference is as unjudgeable as a small day
    small_reference = drift.training_reference(_frame(rng, 90), rng.normal(size=90), ["refund_ratio_28d"])
    big_day = _frame(np.random.default_rng(10), 3000, shift=0.3)
    assert drift.compute_drift(small_reference, [big_day], rng.normal(size=3000), _params())["status"] == "too_few_users"
    # a column the model reads gone from the table is a broken feed at any size
    gone = drift.compute_drift(reference, [shifted.drop(columns=["refund_ratio_28d"])], rng.normal(size=90), _params())
    assert gone["status"] == "severe" and gone["severe"] == ["refund_ratio_28d"]


def test_a_feature_the_model_does_not_read_is_shown_but_at_most_a_warning():
    rng = np.random.default_rng(11)
    train = _frame(rng, 4000)
    today = _frame(np.random.default_rng(12), 4000, shift=0.2)  # refund_ratio_28d far off
    scores = np.random.default_rng(13).normal(size=4000)
    not_read = drift.training_reference(train, scores, ["typical_gap_s_1d", "n_login_failed_7d"])
    result = drift.compute_drift(not_read, [today], scores, _params())
    row = {r["feature"]: r for r in result["features"]}["refund_ratio_28d"]
    assert row["psi"] > 1.0 and row["level"] == "severe" and row["in_model"] is False
    assert row["status"] == "warn" and row["note"].startswith("not read by the model")
    assert result["status"] == "warn" and result["severe"] == [] and "refund_ratio_28d" in result["drifted"]
    assert result["model_features"] == 2
    read = drift.training_reference(train, scores, ["refund_ratio_28d"])
    assert drift.compute_drift(read, [today], scores, _params())["severe"] == ["refund_ratio_28d"]
    # a reference that does not say what the model reads: every feature counts
    unknown = drift.training_reference(train, scores, None)
    assert drift.compute_drift(unknown, [today], scores, _params())["status"] == "severe"


def test_through_the_steps_a_shifted_unread_feature_does_not_block_publishing(trained):
    root, params = trained
    registry = Registry(params["storage"]["models"])
    reference = registry.extra_json(registry.champion_version(), drift.REFERENCE_FILE)
    unread = sorted(set(reference["features"]) - set(reference["model_features"]))
    assert unread, "the champion reads only some of the features"
    column = next(c for c in unread if c.startswith("n_"))  # a volume feature
    blocking = override(params, "drift.block_publish_on_severe", True)
    info = stages.score_stage(blocking, DAY, features_in=_shifted_features(root, params, column))
    recorded = io.read_json(Layout.from_params(params).report(DAY, "drift.json"))
    row = {r["feature"]: r for r in recorded["features"]}[column]
    assert row["level"] == "severe" and row["status"] == "warn" and row["in_model"] is False
    assert info["drift"] == "warn" and column in info["drifted"] and not recorded["severe"]
    assert stages.publish_stage(blocking, DAY, run_id="unread")["rows"] == 15
    stages.score_stage(params, DAY)  # back to the day's own features


def test_below_min_users_the_day_is_logged_once_and_publishing_is_never_blocked(trained, caplog):
    root, params = trained
    small = override(override(params, "drift.min_users", 100_000), "drift.block_publish_on_severe", True)
    shifted = _shifted_features(root, params, "account_age_days")
    with caplog.at_level("INFO", logger="pipelines"):
        info = stages.score_stage(small, DAY, features_in=shifted)
    assert info["drift"] == "too_few_users" and info["drifted"] == []
    lines = [r for r in caplog.records if "too few users to judge" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "INFO" and "below drift.min_users 100000" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "drift on" in r.getMessage()]
    recorded = io.read_json(Layout.from_params(params).report(DAY, "drift.json"))
    assert {r["feature"]: r for r in recorded["features"]}["account_age_days"]["level"] == "severe"
    assert stages.publish_stage(small, DAY, run_id="small")["rows"] == 15
    table = pd.read_parquet(Layout.from_params(params).report(DAY, "drift.parquet"))
    assert (table.loc[table["feature"] == "account_age_days", "status"] == "too_few_users").all()
    stages.score_stage(params, DAY)


def test_a_column_read_without_to_pandas_has_the_values_compute_drift_read_before():
    """day_drift reads each feature column through pyarrow (not to_pandas): the float64 values
    compute_drift bins are those of the pandas column, nulls NaN, for every number type."""
    import pyarrow as pa

    table = pa.table({
        "i": pa.array([1, None, 3, 2**60 + 1], type=pa.int64()),
        "f": pa.array([0.5, None, float("nan"), -0.0]),
        "b": pa.array([True, None, False, True]),
        "u": pa.array([1, 2, None, 4], type=pa.uint8()),
        "s": pa.array(["1", "2", None, "x"]),
    })
    for name in table.column_names:
        one = table.select([name])
        got = drift._column_frame(one, name)
        assert list(got.columns) == [name] and len(got) == 4
        if name == "s":  # not a number: still pandas' own conversion
            assert got[name].tolist()[:2] == ["1", "2"]
            continue
        want = one.to_pandas()[name].to_numpy(dtype="float64", na_value=np.nan)
        assert got[name].to_numpy(dtype="float64", na_value=np.nan).tobytes() == want.tobytes(), name


@pytest.mark.parametrize("edges", [[], [0.0], [0.0, 1.0, 2.0, 3.0, 5.0], list(np.linspace(-2, 2, 9)),
                                   list(np.linspace(-3, 3, 40)), [2.0, 1.0]])
def test_bin_counts_equal_a_binary_search_per_value(edges):
    """bin_counts counts a few edges by comparisons: the counts of searchsorted + bincount,
    values on an edge, beyond the ends, NaN and inf included (unsorted edges: searchsorted's)."""
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(size=5000), np.round(rng.normal(size=3000)), edges * 3,
                             [np.nan, np.inf, -np.inf, -0.0, 1e300]])
    finite = values[np.isfinite(values)]
    e = np.asarray(edges, dtype="float64")
    want = np.append(np.bincount(np.searchsorted(e, finite, side="left"), minlength=len(e) + 1), 3)
    got = drift.bin_counts(values, edges)
    assert got.dtype == np.int64 and got.tolist() == want.tolist()
    assert drift.bin_counts(np.round(rng.normal(size=50)), edges).sum() == 50  # all finite: no mask copy


def _mixed_columns():
    rng = np.random.default_rng(3)
    n = 20_000
    few = rng.integers(0, 4, n).astype("float64")
    signed_zero = few.copy()
    signed_zero[(few == 0) & (rng.random(n) < 0.5)] = -0.0  # 0.0 and -0.0 side by side
    gaps = rng.lognormal(size=n)
    gaps[rng.random(n) < 0.2] = np.nan
    mostly_zero = np.where(rng.random(n) < 0.9, 0.0, rng.integers(1, 50, n))
    mostly_zero[rng.random(n) < 0.05] = np.inf
    runs = rng.permutation(np.repeat(np.arange(20.0), 50))  # quantile positions at the ends of runs of ties
    return {"few": few, "runs": runs, "signed_zero": signed_zero, "continuous_with_nan": gaps, "mostly_zero_with_inf": mostly_zero,
            "all_nan": np.full(50, np.nan), "one_value": np.ones(7), "three_users": np.array([2.0, 0.0, 1.0])}


@pytest.mark.parametrize("bins", [1, 2, 10, 40])
@pytest.mark.parametrize("name", list(_mixed_columns()))
def test_the_reference_bins_of_one_sort_equal_bin_edges_and_bin_counts_to_the_bit(name, bins):
    values = _mixed_columns()[name]
    edges, counts = drift._edges_and_counts(values, bins)
    expected = drift.bin_edges(values, bins)
    assert np.array(edges).tobytes() == np.array(expected).tobytes()  # -0.0 is not 0.0 here
    np.testing.assert_array_equal(counts, drift.bin_counts(values, expected))
