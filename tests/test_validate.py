"""Great Expectations suites (expectations/*.json) and pipelines.validate."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.errors import UserError, ValidationFailed
from pipelines.features import build_features, window_suffixes
from pipelines.schema import EVENT_DTYPES, EVENT_TYPES, SCORE_COLUMNS
from pipelines.validate import (
    SUITES,
    is_templated,
    load_suite,
    load_suite_dict,
    main,
    validate_dataframe,
    validate_file,
    windows_from_columns,
)

REPO = Path(__file__).resolve().parent.parent
EXPECTATIONS = REPO / "expectations"


# --------------------------------------------------------------------------------------------
# Valid frames, one per suite
# --------------------------------------------------------------------------------------------


def raw_events() -> pd.DataFrame:
    # As ingested: strings, mixed types, even bad values; raw only checks structure.
    return pd.DataFrame(
        {
            "event_time": ["2024-03-01T10:00:00Z", 1709287200, "not a time"],
            "user_id": [1, "u2", None],
            "event_type": ["VIEW", "purchase", "teleport"],
            "price": ["9.99", None, -3],
        }
    )


def clean_events() -> pd.DataFrame:
    n = 6
    df = pd.DataFrame(
        {
            "event_time": pd.date_range("2024-03-01", periods=n, freq="h", tz="UTC"),
            "user_id": ["u1", "u1", "u2", "u2", "u3", "u3"],
            "event_type": ["view", "cart", "purchase", "refund", "review", "login"],
            "event_id": [f"e{i}" for i in range(n)],
            "session_id": ["s1", "s1", "s2", "s2", None, "s3"],
            "product_id": ["p1", "p1", "p2", "p2", "p3", None],
            "category": ["c"] * n,
            "price": [None, 10.0, 20.0, 20.0, None, None],
            "quantity": [1, 1, 2, 2, 1, None],
            "device_id": ["d1"] * n,
            "ip": ["10.0.0.1"] * n,
            "country": ["US"] * n,
            "rating": [None, None, None, None, 4, None],
            "review_text": [None, None, None, None, "ok", None],
        }
    )
    return df.astype(EVENT_DTYPES)


WINDOWS = ["1d", "7d", "28d", "hist"]  # the default feature windows


def features(**params) -> pd.DataFrame:
    """What build_features makes of clean_events() (3 users), plus an extra column."""
    df = build_features(clean_events(), {"threads": 1, **params})
    df["some_new_feature"] = [np.nan, 1.0, 2.0]  # extra columns are fine
    return df


def scores() -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "score": [0.9, 0.2, 0.1],
            "rank": [1, 2, 3],
            "flagged": [True, False, False],
            "reasons": ["refund_ratio=0.92 (p99.8)", "", None],
            "model_version": ["iforest-1"] * 3,
            "as_of": [dt.date(2024, 3, 1)] * 3,
        }
    )
    assert tuple(df.columns) == SCORE_COLUMNS
    return df


def sequences() -> pd.DataFrame:
    """What build_sequences makes of clean_events()."""
    from pipelines.sequences import build_sequences

    return build_sequences(clean_events(), "2024-03-01", 48, threads=1)


VALID = {"raw": raw_events, "clean": clean_events, "features": features, "sequences": sequences, "scores": scores}


# --------------------------------------------------------------------------------------------
# Suite files
# --------------------------------------------------------------------------------------------


def test_every_suite_has_a_file_and_a_valid_frame():
    assert sorted(p.stem for p in EXPECTATIONS.glob("*.json")) == sorted(SUITES) == sorted(VALID)


@pytest.mark.parametrize("suite", SUITES)
def test_suite_file_loads_and_round_trips_through_gx(suite):
    from great_expectations.core.expectation_suite import ExpectationSuite, expectationSuiteSchema

    raw = json.loads((EXPECTATIONS / f"{suite}.json").read_text())
    assert raw["name"] == suite
    assert is_templated(raw) == (suite == "features")
    windows = WINDOWS if suite == "features" else None
    raw = load_suite_dict(suite, EXPECTATIONS, windows=windows)  # per-window expectations expanded
    gx_suite = load_suite(suite, EXPECTATIONS, windows=windows)
    assert gx_suite.name == suite
    assert len(gx_suite.expectations) == len(raw["expectations"]) > 0

    def pairs(d):
        return [(e["type"], e["kwargs"]) for e in d["expectations"]]

    dumped = gx_suite.to_json_dict()
    assert pairs(dumped) == pairs(raw)  # GX serialises the file back to what it says
    again = ExpectationSuite(**expectationSuiteSchema.load(json.loads(json.dumps(dumped))))
    assert pairs(again.to_json_dict()) == pairs(raw)


def test_clean_suite_uses_the_schema_event_types():
    (in_set,) = [
        e for e in load_suite_dict("clean", EXPECTATIONS)["expectations"]
        if e["type"] == "expect_column_values_to_be_in_set" and e["kwargs"]["column"] == "event_type"
    ]
    assert in_set["kwargs"] == {"column": "event_type", "value_set": list(EVENT_TYPES)}


def test_unknown_suite_and_mismatched_name_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        validate_dataframe(clean_events(), "nope", expectations_dir=EXPECTATIONS)
    (tmp_path / "clean.json").write_text(json.dumps({"name": "other", "expectations": []}))
    with pytest.raises(UserError, match="named 'other'"):
        validate_dataframe(clean_events(), "clean", expectations_dir=tmp_path)
    (tmp_path / "bad.json").write_text(
        json.dumps({"name": "bad", "expectations": [{"type": "expect_no_such_thing", "kwargs": {}}]})
    )
    with pytest.raises(UserError, match="bad.json"):
        validate_dataframe(clean_events(), "bad", expectations_dir=tmp_path)


# --------------------------------------------------------------------------------------------
# Passing and failing
# --------------------------------------------------------------------------------------------


def test_validation_does_not_hash_every_value_of_the_frame(monkeypatch, tmp_path):
    """GX's batch fingerprint hashed each value of a frame under 1 GB (7.6 s of 19 s at 5M
    events); nothing reads it, so it must not run, with Data Docs or without."""
    from great_expectations.execution_engine import pandas_execution_engine

    hashed = []
    monkeypatch.setattr(pandas_execution_engine, "hash_pandas_dataframe", lambda df: hashed.append(len(df)) or "x")
    df = VALID["raw"]()
    assert validate_dataframe(df, "raw", expectations_dir=EXPECTATIONS)["success"]
    assert validate_dataframe(df, "raw", report_dir=tmp_path, expectations_dir=EXPECTATIONS)["success"]
    assert hashed == []


def test_validation_gives_back_gx_s_hash_threshold(monkeypatch):
    """The threshold is GX's module global: 0 only while a validation runs, then what it was,
    also when the validation fails or raises."""
    from great_expectations.execution_engine import pandas_execution_engine

    from pipelines import validate

    monkeypatch.setattr(pandas_execution_engine, "HASH_THRESHOLD", 12345)
    seen = []
    real = validate._run_gx_in_context
    monkeypatch.setattr(validate, "_run_gx_in_context",
                        lambda *a, **k: seen.append(pandas_execution_engine.HASH_THRESHOLD) or real(*a, **k))
    assert validate_dataframe(VALID["raw"](), "raw", expectations_dir=EXPECTATIONS)["success"]
    with pytest.raises(ValidationFailed):
        validate_dataframe(VALID["raw"]().drop(columns=["user_id"]), "raw", expectations_dir=EXPECTATIONS)
    assert seen == [0, 0] and pandas_execution_engine.HASH_THRESHOLD == 12345

    def boom(*args, **kwargs):
        raise RuntimeError("GX broke")

    monkeypatch.setattr(validate, "_run_gx_in_context", boom)
    with pytest.raises(RuntimeError, match="GX broke"):
        validate_dataframe(VALID["raw"](), "raw", expectations_dir=EXPECTATIONS)
    assert pandas_execution_engine.HASH_THRESHOLD == 12345


def test_a_gx_without_the_hash_threshold_fails_loudly(monkeypatch):
    from great_expectations.execution_engine import pandas_execution_engine

    monkeypatch.delattr(pandas_execution_engine, "HASH_THRESHOLD")
    with pytest.raises(RuntimeError, match="no HASH_THRESHOLD"):
        validate_dataframe(VALID["raw"](), "raw", expectations_dir=EXPECTATIONS)


@pytest.mark.parametrize("suite", SUITES)
def test_valid_frame_passes(suite):
    df = VALID[suite]()
    summary = validate_dataframe(df, suite, expectations_dir=EXPECTATIONS)
    assert summary["suite"] == suite
    assert summary["success"] is True
    assert summary["failed"] == 0
    assert summary["rows"] == len(df)
    windows = windows_from_columns(df.columns) if suite == "features" else None
    expected = load_suite_dict(suite, EXPECTATIONS, windows=windows)["expectations"]
    assert summary["evaluated"] == len(summary["results"]) == len(expected)
    assert set(summary["results"][0]) >= {"expectation", "column", "success", "unexpected_count", "unexpected_examples"}


def _set(df, column, row, value):
    df.loc[row, column] = value
    return df


DEFECTS = [
    # (suite, defect, failing expectation, column, substring of the message)
    ("raw", lambda df: df.drop(columns=["user_id"]), "expect_column_to_exist", "user_id", "missing columns: user_id"),
    ("raw", lambda df: df.iloc[0:0], "expect_table_row_count_to_be_between", None, "observed 0"),
    ("clean", lambda df: _set(df, "user_id", 2, None), "expect_column_values_to_not_be_null", "user_id", "1 rows"),
    ("clean", lambda df: _set(df, "event_time", 0, pd.NaT), "expect_column_values_to_not_be_null", "event_time", "1 rows"),
    ("clean", lambda df: _set(df, "event_type", 1, "teleport"), "expect_column_values_to_be_in_set", "event_type", "'teleport'"),
    ("clean", lambda df: _set(df, "event_id", 1, "e0"), "expect_column_values_to_be_unique", "event_id", "2 rows, e.g. ['e0']"),
    ("clean", lambda df: _set(df, "price", 2, -1.0), "expect_column_values_to_be_between", "price", "e.g. [-1.0]"),
    ("clean", lambda df: _set(df, "quantity", 0, 0), "expect_column_values_to_be_between", "quantity", "e.g. [0]"),
    ("clean", lambda df: _set(df, "rating", 4, 7), "expect_column_values_to_be_in_set", "rating", "e.g. [7]"),
    ("clean", lambda df: df.astype({"quantity": "float64"}), "expect_column_values_to_be_of_type", "quantity", "observed 'float64'"),
    ("clean", lambda df: df.drop(columns=["event_id"]), "expect_column_values_to_not_be_null", "event_id", "missing columns: event_id"),
    ("features", lambda df: _set(df, "user_id", 1, "u1"), "expect_column_values_to_be_unique", "user_id", "'u1'"),
    ("features", lambda df: _set(df, "user_id", 0, None), "expect_column_values_to_not_be_null", "user_id", "1 rows"),
    ("features", lambda df: _set(df, "n_view_28d", 0, -2.0), "expect_column_values_to_be_between", "n_view_28d", "e.g. [-2.0]"),
    ("features", lambda df: _set(df, "refund_ratio_28d", 0, 1.5), "expect_column_values_to_be_between", "refund_ratio_28d", "e.g. [1.5]"),
    ("features", lambda df: _set(df, "conversion_rate_28d", 0, np.nan), "expect_column_values_to_not_be_null", "conversion_rate_28d", "1 rows"),
    ("features", lambda df: df.drop(columns=["distinct_devices_28d"]), "expect_column_values_to_be_between", "distinct_devices_28d", "missing columns: distinct_devices_28d"),
    ("features", lambda df: _set(df, "n_events_hist", 2, 0.0), "expect_column_values_to_be_between", "n_events_hist", "e.g. [0.0]"),
    ("features", lambda df: _set(df, "share_view_hist", 1, 1.25), "expect_column_values_to_be_between", "share_view_hist", "e.g. [1.25]"),
    ("features", lambda df: _set(df, "burstiness_1d", 1, -1.5), "expect_column_values_to_be_between", "burstiness_1d", "e.g. [-1.5]"),
    ("features", lambda df: _set(df, "typical_gap_s_7d", 0, np.nan), "expect_column_values_to_not_be_null", "typical_gap_s_7d", "1 rows"),
    ("features", lambda df: _set(df, "median_gap_s_28d", 0, np.nan), "expect_column_values_to_not_be_null", "median_gap_s_28d", "1 rows"),
    ("features", lambda df: _set(df, "signed_up_in_window", 0, 0.5), "expect_column_values_to_be_in_set", "signed_up_in_window", "e.g. [0.5]"),
    ("features", lambda df: _set(df, "account_age_days", 0, -1.0), "expect_column_values_to_be_between", "account_age_days", "e.g. [-1.0]"),
    ("scores", lambda df: _set(df, "rank", 2, 1), "expect_column_values_to_be_unique", "rank", "e.g. [1]"),
    ("scores", lambda df: _set(df, "rank", 2, 0), "expect_column_values_to_be_between", "rank", "e.g. [0]"),
    ("scores", lambda df: _set(df, "user_id", 2, "u1"), "expect_column_values_to_be_unique", "user_id", "'u1'"),
    ("scores", lambda df: _set(df, "score", 1, np.nan), "expect_column_values_to_not_be_null", "score", "1 rows"),
    ("scores", lambda df: df.astype({"flagged": object}).pipe(_set, "flagged", 0, "yes"), "expect_column_values_to_be_in_set", "flagged", "'yes'"),
    ("scores", lambda df: df.drop(columns=["reasons"]), "expect_column_to_exist", "reasons", "missing columns: reasons"),
    ("scores", lambda df: _set(df, "model_version", 0, None), "expect_column_values_to_not_be_null", "model_version", "1 rows"),
    ("scores", lambda df: _set(df, "as_of", 0, None), "expect_column_values_to_not_be_null", "as_of", "1 rows"),
]


@pytest.mark.parametrize(
    "suite,defect,expectation,column,fragment",
    DEFECTS,
    ids=[f"{d[0]}-{d[2].removeprefix('expect_')}-{d[3]}" for d in DEFECTS],
)
def test_defect_fails_with_a_short_named_message(suite, defect, expectation, column, fragment):
    df = defect(VALID[suite]())
    with pytest.raises(ValidationFailed) as info:
        validate_dataframe(df, suite, expectations_dir=EXPECTATIONS)
    message = str(info.value)
    assert message.startswith(f"validation '{suite}' failed: ")
    assert fragment in message
    if "missing columns" not in fragment:
        assert (f"{expectation}({column})" if column else expectation) in message
    assert "Traceback" not in message and len(message.splitlines()) <= 3
    assert len(message) < 800


def test_summary_counts_every_failure_and_the_message_caps_them():
    df = clean_events()
    df.loc[0, "user_id"] = None
    df.loc[1, "event_type"] = "teleport"
    df.loc[2, "event_id"] = "e3"
    df.loc[[2, 3], "price"] = [-1.0, -5.0]
    df.loc[4, "rating"] = 7
    df.loc[5, "quantity"] = 0
    with pytest.raises(ValidationFailed) as info:
        validate_dataframe(df, "clean", expectations_dir=EXPECTATIONS)
    message = str(info.value)
    assert message.startswith("validation 'clean' failed: 6 of 17 expectations")
    assert "expect_column_values_to_not_be_null(user_id) 1 rows;" in message
    assert "and 2 more" in message


# --------------------------------------------------------------------------------------------
# Per-window expectations
# --------------------------------------------------------------------------------------------


def test_per_window_expectations_expand_for_the_given_windows():
    template = load_suite_dict("features", EXPECTATIONS)
    windows = ["1d", "3d", "14d", "hist"]
    expanded = load_suite_dict("features", EXPECTATIONS, windows=windows)
    assert not is_templated(expanded) and "_window}" not in json.dumps(expanded["expectations"])
    per_window = [e for e in template["expectations"] if "{window}" in e["kwargs"].get("column", "")]
    longest = [e for e in template["expectations"] if "{longest_window}" in e["kwargs"].get("column", "")]
    assert len(per_window) > 60 and len(longest) == 4  # not-null only where a feature cannot be empty
    assert len(expanded["expectations"]) == len(template["expectations"]) + 3 * len(per_window)
    columns = [e["kwargs"].get("column") for e in expanded["expectations"]]
    for w in windows:
        for name in ("n_events", "n_purchase", "n_view", "distinct_devices", "refund_ratio", "burstiness"):
            assert f"{name}_{w}" in columns
    assert "unbought_review_share_14d" in columns and "median_gap_s_14d" in columns
    assert not [c for c in columns if c and c.endswith("_28d")]
    ratio = [e for e in expanded["expectations"]
             if e["kwargs"].get("column") == "refund_ratio_3d" and e["type"] == "expect_column_values_to_be_between"]
    assert ratio == [{"type": "expect_column_values_to_be_between",
                      "kwargs": {"column": "refund_ratio_3d", "min_value": 0, "max_value": 1},
                      "meta": {"window": "3d"}}]
    # the population is checked on the history window
    population = [e["kwargs"] for e in expanded["expectations"] if e["kwargs"].get("column") == "n_events_hist"]
    assert {"column": "n_events_hist", "min_value": 1} in population
    # GX needs concrete columns
    with pytest.raises(UserError, match="per-window"):
        load_suite("features", EXPECTATIONS)
    assert len(load_suite("features", EXPECTATIONS, windows=windows).expectations) == len(expanded["expectations"])


@pytest.mark.parametrize("windows", [[], "1d,7d", ["1d", "1d"], ["1d", "7 d"], ["1d", None]])
def test_bad_windows_are_user_errors(windows):
    with pytest.raises(UserError, match="windows must list"):
        load_suite_dict("features", EXPECTATIONS, windows=windows)
    with pytest.raises(UserError, match="windows must list"):
        validate_dataframe(features(), "features", expectations_dir=EXPECTATIONS, windows=windows)


def test_longest_window_needs_a_day_window():
    with pytest.raises(UserError, match="longest_window"):
        load_suite_dict("features", EXPECTATIONS, windows=["hist"])


def test_other_windows_validate_with_no_edit_to_the_suite(tmp_path):
    params = {"windows_days": [1, 3, 14]}
    df = features(**params)
    assert {"n_events_3d", "refund_ratio_14d", "n_events_hist", "median_gap_s_14d"} <= set(df.columns)
    assert not [c for c in df.columns if c.endswith(("_7d", "_28d"))]
    windows = window_suffixes(params)
    assert windows == ["1d", "3d", "14d", "hist"]
    given = validate_dataframe(df, "features", expectations_dir=EXPECTATIONS, windows=windows)
    inferred = validate_dataframe(df, "features", expectations_dir=EXPECTATIONS)  # from n_events_<window>
    assert given == inferred and given["success"] and given["windows"] == windows
    assert "refund_ratio_14d" in {r["column"] for r in given["results"]}

    bad = df.copy()
    bad.loc[1, "refund_ratio_3d"] = 1.5
    with pytest.raises(ValidationFailed) as info:
        validate_dataframe(bad, "features", expectations_dir=EXPECTATIONS, windows=windows)
    message = str(info.value)
    assert message.startswith("validation 'features' failed: 1 of ")
    assert "expect_column_values_to_be_between(refund_ratio_3d) 1 rows, e.g. [1.5]" in message
    assert len(message.splitlines()) == 1

    # files: inferred, or given
    path = tmp_path / "features.parquet"
    df.to_parquet(path, index=False)
    assert validate_file(path, "features", expectations_dir=EXPECTATIONS)["windows"] == windows
    assert validate_file(path, "features", expectations_dir=EXPECTATIONS, windows=windows)["success"]


def test_templated_suite_with_the_wrong_windows_names_the_missing_columns(tmp_path, capsys):
    # a small suite of our own: GX reports a missing column slowly, once per expectation
    def expectation(type_, column, **kwargs):
        return {"type": type_, "kwargs": {"column": column, **kwargs}, "meta": {}}

    suite = {"name": "mini", "expectations": [
        expectation("expect_column_values_to_not_be_null", "n_events_{window}"),
        expectation("expect_column_values_to_be_between", "ratio_{window}", min_value=0, max_value=1),
        expectation("expect_column_values_to_not_be_null", "median_{longest_window}"),
        expectation("expect_column_values_to_not_be_null", "user_id"),
    ]}
    (tmp_path / "mini.json").write_text(json.dumps(suite))
    df = pd.DataFrame({"user_id": ["u1", "u2"], "n_events_2d": [1.0, 0.0], "n_events_hist": [3.0, 1.0],
                       "ratio_2d": [0.5, 0.0], "ratio_hist": [0.2, 1.0], "median_2d": [1.0, 2.0]})
    summary = validate_dataframe(df, "mini", expectations_dir=tmp_path)
    assert summary["windows"] == ["2d", "hist"] and summary["evaluated"] == 6
    assert [r["column"] for r in summary["results"]] == [
        "n_events_2d", "n_events_hist", "ratio_2d", "ratio_hist", "median_2d", "user_id"]
    with pytest.raises(ValidationFailed) as info:
        validate_dataframe(df, "mini", expectations_dir=tmp_path, windows=["1d", "2d", "hist"])
    assert str(info.value).startswith("validation 'mini' failed: 2 of 8 expectations on 2 rows; "
                                      "missing columns: n_events_1d, ratio_1d")
    df.loc[1, "ratio_hist"] = 2.0
    path = tmp_path / "mini.parquet"
    df.to_parquet(path, index=False)
    assert main([str(path), "mini", "--expectations-dir", str(tmp_path), "--windows", "2d"]) == 0
    assert "passed: 4 expectations" in capsys.readouterr().out  # ratio_hist is not checked with 2d alone
    assert main([str(path), "mini", "--expectations-dir", str(tmp_path), "--windows", "2d,hist"]) == 2
    assert "expect_column_values_to_be_between(ratio_hist) 1 rows, e.g. [2.0]" in capsys.readouterr().err


def test_many_missing_columns_are_capped_in_the_message():
    from pipelines.validate import failure_message

    results = [{"expectation": "expect_column_values_to_not_be_null", "column": f"c{i}", "success": False,
                "unexpected_count": None, "unexpected_examples": [], "missing_column": True} for i in range(30)]
    message = failure_message({"suite": "features", "failed": 30, "evaluated": 40, "rows": 5, "results": results})
    assert message.endswith("missing columns: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, and 20 more")


def test_windows_that_cannot_be_inferred_are_a_one_line_user_error():
    df = pd.DataFrame({"user_id": ["u1"], "refund_ratio_28d": [0.1]}).astype({"user_id": "str"})
    with pytest.raises(UserError) as info:
        validate_dataframe(df, "features", expectations_dir=EXPECTATIONS)
    assert not isinstance(info.value, ValidationFailed)
    assert "no windows were given" in str(info.value) and "n_events_<window>" in str(info.value)
    assert len(str(info.value).splitlines()) == 1
    # a suite without per-window expectations needs no windows
    assert windows_from_columns(df.columns) == []
    assert validate_dataframe(scores(), "scores", expectations_dir=EXPECTATIONS)["success"]
    assert "windows" not in validate_dataframe(scores(), "scores", expectations_dir=EXPECTATIONS, windows=WINDOWS)


# --------------------------------------------------------------------------------------------
# Reports and Data Docs
# --------------------------------------------------------------------------------------------


def _strict_json(path: Path):
    def no_constants(name):
        raise ValueError(f"{path}: non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=no_constants)


def test_report_dir_gets_summary_and_data_docs_for_all_suites(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    report_dir = tmp_path / "reports"
    summary = validate_dataframe(features(), "features", report_dir=report_dir, expectations_dir=EXPECTATIONS)
    bad = clean_events()
    bad.loc[1, "price"] = -1.0
    bad.loc[1, "user_id"] = None
    with pytest.raises(ValidationFailed) as info:
        validate_dataframe(bad, "clean", report_dir=report_dir, expectations_dir=EXPECTATIONS)

    assert _strict_json(report_dir / "features.json") == summary
    failed = _strict_json(report_dir / "clean.json")
    assert failed["success"] is False and failed["failed"] == 2 and failed["rows"] == len(bad)
    (price,) = [r for r in failed["results"] if r["column"] == "price" and not r["success"]]
    assert price["unexpected_count"] == 1 and price["unexpected_examples"] == [-1.0]
    (user,) = [r for r in failed["results"] if r["column"] == "user_id" and not r["success"]]
    assert user["unexpected_examples"] == [None]  # NaN comes back as null, not as NaN
    assert str(report_dir / "clean.json") in str(info.value)

    index = report_dir / "data_docs" / "index.html"
    assert index.is_file()
    html = index.read_text()
    assert "expectations/features.html" in html and "expectations/clean.html" in html  # one index for both
    assert list((report_dir / "data_docs" / "validations" / "clean").rglob("*.html"))
    assert list(cwd.iterdir()) == []  # nothing written outside report_dir
    assert not list(report_dir.glob(".*.tmp")) and not list(report_dir.glob(".*.json"))


def test_nothing_written_without_report_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    validate_dataframe(scores(), "scores", expectations_dir=EXPECTATIONS)
    assert list(tmp_path.iterdir()) == []


def test_default_expectations_dir_works_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert validate_dataframe(scores(), "scores")["success"] is True


# --------------------------------------------------------------------------------------------
# Files and CLI
# --------------------------------------------------------------------------------------------


def test_validate_file_reads_parquet(tmp_path):
    path = tmp_path / "clean.parquet"
    clean_events().to_parquet(path, index=False)
    summary = validate_file(path, "clean", report_dir=tmp_path / "r", expectations_dir=EXPECTATIONS)
    assert summary["success"] and summary["rows"] == 6
    assert (tmp_path / "r" / "clean.json").is_file()
    assert (tmp_path / "r" / "data_docs" / "index.html").is_file()

    bad = clean_events()
    bad.loc[4, "rating"] = 7
    bad.to_parquet(path, index=False)
    with pytest.raises(ValidationFailed, match=r"expect_column_values_to_be_in_set\(rating\) 1 rows, e.g. \[7\]"):
        validate_file(path, "clean", expectations_dir=EXPECTATIONS)


def test_validate_file_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        validate_file(tmp_path / "missing.parquet", "clean")
    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="Parquet"):
        validate_file(not_parquet, "clean")


def test_main_exit_codes(tmp_path, capsys):
    path = tmp_path / "scores.parquet"
    scores().to_parquet(path, index=False)
    assert main([str(path), "scores", "--report-dir", str(tmp_path / "r")]) == 0
    assert "passed" in capsys.readouterr().out
    dup = scores()
    dup.loc[2, "rank"] = 1
    dup.to_parquet(path, index=False)
    assert main([str(path), "scores"]) == 2
    assert "expect_column_values_to_be_unique(rank)" in capsys.readouterr().err


def test_module_import_does_not_import_great_expectations():
    code = "import sys, pipelines.validate; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_the_validated_frame_is_not_kept_once_validation_returns(tmp_path):
    """GX keeps its last context as the current project; the frame must not live on through it
    (a million users' features stayed in memory for the rest of `pipelines run`)."""
    import gc
    import weakref

    for report_dir in (None, tmp_path / "reports"):
        df = pd.DataFrame({"user_id": ["u1", "u1"], "score": [float("nan"), 1.5]})  # fails: the run stops here
        gone = weakref.ref(df)
        with pytest.raises(ValidationFailed):
            validate_dataframe(df, "scores", report_dir=report_dir)
        del df
        gc.collect()
        assert gone() is None, f"the validated frame is still referenced (report_dir={report_dir})"


def test_a_rerun_into_the_same_report_folder_validates_with_the_suite_as_it_is_now(tmp_path, monkeypatch):
    """The second run of a day finds the first run's copy of the suite in its report folder: it is
    replaced by the suite file as it is now (an expectation added in between is checked), without
    GX's add_or_update, whose all-pairs comparison took seconds for the features suite."""
    from great_expectations.core.factory.suite_factory import SuiteFactory

    def never(*args, **kwargs):
        raise AssertionError("suites.add_or_update compares every pair of expectations")

    monkeypatch.setattr(SuiteFactory, "add_or_update", never)
    suite = {"name": "mini", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "user_id"}, "meta": {}}]}
    (tmp_path / "mini.json").write_text(json.dumps(suite))
    df = pd.DataFrame({"user_id": ["u1", "u2"], "ratio": [0.5, 2.0]})
    report = tmp_path / "report"
    assert validate_dataframe(df, "mini", report_dir=report, expectations_dir=tmp_path)["evaluated"] == 1
    suite["expectations"].append({"type": "expect_column_values_to_be_between",
                                  "kwargs": {"column": "ratio", "min_value": 0, "max_value": 1}, "meta": {}})
    (tmp_path / "mini.json").write_text(json.dumps(suite))
    with pytest.raises(ValidationFailed, match=r"1 of 2 expectations"):
        validate_dataframe(df, "mini", report_dir=report, expectations_dir=tmp_path)
    stored = list((report / "data_docs" / "gx_store" / "expectations").rglob("*.json"))
    assert len(stored) == 1 and len(json.loads(stored[0].read_text())["expectations"]) == 2


def test_complete_integer_columns_are_checked_as_numpy_without_changing_the_callers_frame():
    # quantity is complete after cleaning: GX gets it as NumPy int64 (its vectorised value
    # checks), and a bad value, the type check and the caller's frame are as with pandas' Int64
    df = clean_events()
    df["quantity"] = pd.array([0, 1, 2, 2, 1, 1], dtype="Int64")
    with pytest.raises(ValidationFailed, match=r"expect_column_values_to_be_between\(quantity\) 1 rows, e.g. \[0\]"):
        validate_dataframe(df, "clean", expectations_dir=EXPECTATIONS)
    assert df["quantity"].dtype == "Int64"
    df.loc[0, "quantity"] = 1
    summary = validate_dataframe(df, "clean", expectations_dir=EXPECTATIONS)
    types = {r["column"]: r.get("observed_value") for r in summary["results"]
             if r["expectation"] == "expect_column_values_to_be_of_type"}
    assert types["quantity"] == "int64" and df["quantity"].dtype == "Int64"
