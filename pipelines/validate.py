"""Data validation with Great Expectations (GX Core 1.x).

One suite per dataset, kept as JSON under ``expectations/`` (``raw``, ``clean``, ``features``,
``scores``); the files are exactly what GX's ``ExpectationSuite`` serialises to, so they can be
edited by hand or round-tripped through GX.

Each call builds a throw-away in-memory GX context: a pandas data source, one dataframe asset, a
whole-dataframe batch definition and the suite loaded from its file. Nothing is written anywhere
unless ``report_dir`` is given; then the summary goes to ``report_dir/<suite>.json`` and GX Data
Docs to ``report_dir/data_docs/`` (open ``index.html``). The GX stores behind the docs live in
``report_dir/data_docs/gx_store/``, so every suite validated into the same ``report_dir`` shows up
in the same index.

Per-window feature columns (``refund_ratio_1d`` ... ``refund_ratio_hist``) follow the configured
windows: an expectation whose ``kwargs.column`` (or ``column_A``/``column_B``/``column_list``)
contains ``{window}`` stands for one expectation per window suffix, and ``{longest_window}`` names
the longest day window (e.g. ``28d``). The suffixes are given (``windows=``) or inferred from the
data's ``n_events_<suffix>`` columns.

``import great_expectations`` takes seconds, so it happens inside the functions, never at import
time of this module.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.errors import UserError, ValidationFailed
from pipelines.io import is_s3, local_copy, write_json

SUITES: tuple[str, ...] = ("raw", "clean", "features", "sequences", "scores")
DEFAULT_EXPECTATIONS_DIR = "expectations"
# The suites shipped with the code, used when the default relative "expectations" folder is not
# found in the working directory (e.g. a scheduler task started elsewhere).
PACKAGED_EXPECTATIONS_DIR = Path(__file__).resolve().parent.parent / "expectations"

# How many unexpected values GX keeps per expectation. BASIC skips the value counts and index
# lists that SUMMARY/COMPLETE compute, which matters on millions of rows.
RESULT_FORMAT: dict[str, Any] = {"result_format": "BASIC", "partial_unexpected_count": 5}
MESSAGE_MAX_FAILURES = 4  # failures named in the exception message; the report lists all
MESSAGE_MAX_EXAMPLES = 3
MESSAGE_MAX_MISSING = 10  # missing columns named in the message (the wrong windows miss dozens)

WINDOW = "{window}"  # in a column name of the suite file: one expectation per window suffix
LONGEST_WINDOW = "{longest_window}"  # the longest day window, e.g. "28d"
_COLUMN_KWARGS = ("column", "column_A", "column_B")
_WINDOW_SUFFIX = re.compile(r"[A-Za-z0-9]+")
_DAY_WINDOW = re.compile(r"(\d+)d")
_WINDOW_COLUMN = "n_events_"  # the column whose suffixes name the windows of a feature table


# ---------------------------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------------------------


def suite_path(suite: str, expectations_dir: str | os.PathLike = DEFAULT_EXPECTATIONS_DIR) -> Path:
    """The JSON file of suite `suite`; raises UserError when it does not exist."""
    if not suite or "/" in suite or "\\" in suite or suite.startswith("."):
        raise UserError(f"'{suite}': not a suite name; use one of {', '.join(SUITES)}")
    path = Path(expectations_dir) / f"{suite}.json"
    if not path.exists() and str(expectations_dir) == DEFAULT_EXPECTATIONS_DIR:
        packaged = PACKAGED_EXPECTATIONS_DIR / f"{suite}.json"
        if packaged.exists():
            return packaged
    if not path.exists():
        known = sorted(p.stem for p in Path(expectations_dir).glob("*.json")) or list(SUITES)
        raise UserError(f"{path}: expectation suite not found; known suites: {', '.join(known)}")
    return path


def load_suite_dict(
    suite: str,
    expectations_dir: str | os.PathLike = DEFAULT_EXPECTATIONS_DIR,
    windows: list[str] | None = None,
) -> dict:
    """The suite file as a plain dict (name, expectations[{type, kwargs, meta}], meta).

    With `windows` (suffixes like ["1d", "7d", "28d", "hist"]), every expectation naming a
    ``{window}`` column is expanded into one per suffix, in place, and ``{longest_window}`` is
    filled in; without, the templated expectations are returned as the file has them.
    """
    path = suite_path(suite, expectations_dir)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise UserError(f"{path}: expected an object with a 'name' and an 'expectations' list")
    name = data.setdefault("name", suite)
    if name != suite:
        raise UserError(f"{path}: the suite inside is named '{name}', expected '{suite}'")
    if windows is not None:
        data["expectations"] = _expand_windows(data["expectations"], _check_windows(windows), path)
    return data


def _column_names(kwargs: Any) -> list[str]:
    if not isinstance(kwargs, dict):
        return []
    names = [kwargs[k] for k in _COLUMN_KWARGS if isinstance(kwargs.get(k), str)]
    if isinstance(kwargs.get("column_list"), list):
        names += [c for c in kwargs["column_list"] if isinstance(c, str)]
    return names


def is_templated(data: dict) -> bool:
    """Whether a suite dict (as load_suite_dict returns it) has per-window expectations left."""
    return any(
        WINDOW in name or LONGEST_WINDOW in name
        for e in data.get("expectations") or []
        if isinstance(e, dict)
        for name in _column_names(e.get("kwargs"))
    )


def _check_windows(windows: Any) -> list[str]:
    if isinstance(windows, str) or not isinstance(windows, (list, tuple)) or not windows or not all(
        isinstance(w, str) and _WINDOW_SUFFIX.fullmatch(w) for w in windows
    ) or len(set(windows)) != len(windows):
        raise UserError(f"windows must list distinct column suffixes like ['1d', '7d', '28d', 'hist'], not {windows!r}")
    return list(windows)


def _fill(value: Any, window: str, longest: str | None) -> Any:
    if isinstance(value, list):
        return [_fill(v, window, longest) for v in value]
    if not isinstance(value, str):
        return value
    if longest is not None:
        value = value.replace(LONGEST_WINDOW, longest)
    return value.replace(WINDOW, window)


def _expand_windows(expectations: list, windows: list[str], path: Path) -> list:
    days = [w for w in windows if _DAY_WINDOW.fullmatch(w)]
    longest = max(days, key=lambda w: int(w[:-1])) if days else None
    expanded = []
    for e in expectations:
        names = _column_names(e.get("kwargs")) if isinstance(e, dict) else []
        per_window = any(WINDOW in n for n in names)
        if not per_window and not any(LONGEST_WINDOW in n for n in names):
            expanded.append(e)
            continue
        if longest is None and any(LONGEST_WINDOW in n for n in names):
            raise UserError(f"{path}: {LONGEST_WINDOW} needs a day window like '28d' among the windows {windows}")
        for window in windows if per_window else [longest]:
            kwargs = {k: (_fill(v, window, longest) if k in _COLUMN_KWARGS or k == "column_list" else v)
                      for k, v in e["kwargs"].items()}
            meta = {**(e.get("meta") or {}), "window": window}
            expanded.append({**e, "kwargs": kwargs, "meta": meta})
    return expanded


def windows_from_columns(columns: Any) -> list[str]:
    """The window suffixes of a feature table, from its n_events_<suffix> columns, in column order."""
    return [
        c[len(_WINDOW_COLUMN):] for c in columns
        if isinstance(c, str) and c.startswith(_WINDOW_COLUMN) and _WINDOW_SUFFIX.fullmatch(c[len(_WINDOW_COLUMN):])
    ]


def load_suite(
    suite: str,
    expectations_dir: str | os.PathLike = DEFAULT_EXPECTATIONS_DIR,
    windows: list[str] | None = None,
):
    """The suite file as a GX ``ExpectationSuite`` (not bound to any context), its per-window
    expectations expanded for `windows` (required when the suite has any).

    Every expectation is built explicitly: GX's own constructor only logs an unknown expectation
    type and drops it, which would silently weaken the suite.
    """
    from great_expectations.core.expectation_suite import ExpectationSuite, expectationSuiteSchema

    path = suite_path(suite, expectations_dir)
    data = load_suite_dict(suite, expectations_dir, windows)
    if is_templated(data):
        raise UserError(f"{path}: the suite has per-window expectations ({WINDOW}); give the windows, e.g. "
                        "['1d', '7d', '28d', 'hist']")

    def first_line(exc: Exception) -> str:
        text = " ".join(str(exc).split())  # pydantic errors span lines
        return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)

    try:
        loaded = expectationSuiteSchema.load(data)
    except Exception as exc:  # marshmallow.ValidationError and friends
        raise UserError(f"{path}: not a valid expectation suite ({first_line(exc)})") from exc
    expectations = []
    for number, config in enumerate(loaded.pop("expectations", None) or [], start=1):
        try:
            expectations.append(config.to_domain_obj())
        except Exception as exc:  # unknown type, bad or missing kwargs (pydantic)
            raise UserError(f"{path}: expectation {number} ({config.type}) is not valid: {first_line(exc)}") from exc
    return ExpectationSuite(**loaded, expectations=expectations)


# ---------------------------------------------------------------------------------------------
# GX context
# ---------------------------------------------------------------------------------------------


def _context(docs_dir: Path | None):
    """An ephemeral GX context. With `docs_dir`, results/suites are kept as files under
    docs_dir/gx_store and a Data Docs site is built into docs_dir; otherwise all in memory."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    defaults = InMemoryStoreBackendDefaults(init_temp_docs_sites=False)
    stores = dict(defaults.stores)
    sites: dict[str, Any] = {}
    if docs_dir is not None:
        store_dir = docs_dir / "gx_store"
        stores[defaults.validation_results_store_name] = {
            "class_name": "ValidationResultsStore",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(store_dir / "validations")},
        }
        stores[defaults.expectations_store_name] = {
            "class_name": "ExpectationsStore",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(store_dir / "expectations")},
        }
        sites["local_site"] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        stores=stores,
        expectations_store_name=defaults.expectations_store_name,
        validation_results_store_name=defaults.validation_results_store_name,
        checkpoint_store_name=defaults.checkpoint_store_name,
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _run_gx(df: pd.DataFrame, suite: str, expectations_dir, docs_dir: Path | None, windows: list[str] | None) -> list:
    """Validate df with the suite; GX's per-expectation results, in the suite file's order."""
    from great_expectations.data_context.data_context.context_factory import project_manager

    try:
        with _no_frame_fingerprint():
            return _run_gx_in_context(_as_gx_reads_fast(df), suite, expectations_dir, docs_dir, windows)
    finally:
        # GX keeps the last context as its current project, and through it the validated
        # frame: at a million users that held ~1 GB for the rest of the process (`pipelines run`)
        project_manager.set_project(None)


def _as_gx_reads_fast(df: pd.DataFrame) -> pd.DataFrame:
    """df with each nullable integer column that has no missing value as NumPy int64: the same
    values, which GX's value checks (between, in set) compare in one vectorised pass, where on
    pandas' Int64 they call a Python function per value (2.5 s of the clean suite's 5 s at 5M
    events, for quantity alone). A column with a missing value stays as it is."""
    integers = [c for c in df.columns if isinstance(df[c].dtype, pd.Int64Dtype) and not df[c].hasnans]
    if not integers:
        return df
    view = df.copy(deep=False)
    for column in integers:
        view[column] = df[column].to_numpy("int64")
    return view


_FINGERPRINT_LOCK = threading.Lock()
_fingerprint_off = {"runs": 0, "threshold": None}  # validations now running; the threshold they replaced


@contextlib.contextmanager
def _no_frame_fingerprint():
    """GX fingerprints a frame under 1 GB (by its shallow size) by hashing every value, for a
    batch marker nothing here reads: 7.6 s of ingest's 19 s at 5M events. GX 1.24 has no
    setting for it but its module global HASH_THRESHOLD, so it is 0 while a validation runs and
    is given back after the last one running ends (validations in threads may overlap)."""
    from great_expectations.execution_engine import pandas_execution_engine as engine

    if not hasattr(engine, "HASH_THRESHOLD"):
        raise RuntimeError("great_expectations.execution_engine.pandas_execution_engine has no HASH_THRESHOLD "
                           "(a GX version other than 1.24): update _no_frame_fingerprint in pipelines/validate.py "
                           "to keep validation from hashing every value of the frame")
    with _FINGERPRINT_LOCK:
        if _fingerprint_off["runs"] == 0:
            _fingerprint_off["threshold"] = engine.HASH_THRESHOLD
            engine.HASH_THRESHOLD = 0
        _fingerprint_off["runs"] += 1
    try:
        yield
    finally:
        with _FINGERPRINT_LOCK:
            _fingerprint_off["runs"] -= 1
            if _fingerprint_off["runs"] == 0:
                engine.HASH_THRESHOLD = _fingerprint_off["threshold"]


def _replace_suite(context, gx_suite):
    """The suite, stored in the context: a folder validated before (a rerun of the day) holds
    the earlier run's copy, which is replaced. Not GX's suites.add_or_update: that compares
    every new expectation with every stored one (pydantic dicts, n squared), 5-10 s for the
    features suite's 279 expectations, and kept no expectation's id here anyway."""
    from great_expectations.exceptions import DataContextError

    try:
        context.suites.get(name=gx_suite.name)
    except DataContextError:
        return context.suites.add(gx_suite)
    context.suites.delete(gx_suite.name)
    return context.suites.add(gx_suite)


def _run_gx_in_context(df: pd.DataFrame, suite: str, expectations_dir, docs_dir: Path | None,
                       windows: list[str] | None) -> list:
    import great_expectations as gx

    gx_suite = load_suite(suite, expectations_dir, windows)
    context = _context(docs_dir)
    batch_definition = (
        context.data_sources.add_pandas("pandas")
        .add_dataframe_asset(name=suite)
        .add_batch_definition_whole_dataframe("whole_dataframe")
    )
    gx_suite = _replace_suite(context, gx_suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"validate_{suite}", data=batch_definition, suite=gx_suite)
    )
    if docs_dir is None:
        result = definition.run(batch_parameters={"dataframe": df}, result_format=RESULT_FORMAT)
        return _in_suite_order(result.results, gx_suite)
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"checkpoint_{suite}",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            result_format=RESULT_FORMAT,
        )
    )
    checkpoint_result = checkpoint.run(batch_parameters={"dataframe": df})
    (result,) = checkpoint_result.run_results.values()
    return _in_suite_order(result.results, gx_suite)


def _in_suite_order(results: list, gx_suite) -> list:
    # GX groups results by domain; report them in the order the suite file lists them.
    order = {e.id: i for i, e in enumerate(gx_suite.expectations)}
    return sorted(results, key=lambda r: order.get(r.expectation_config.id, len(order)))


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return isinstance(value, float) and math.isnan(value)
    except TypeError:
        return False


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a value GX reported (numpy scalars, timestamps, NaN/NA -> None)."""
    if _is_missing(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        try:
            return _plain(value.item())
        except (ValueError, TypeError):
            pass
    return str(value)


_MISSING_COLUMN = re.compile(r'column "(?P<column>[^"]*)" in BatchData does not exist', re.IGNORECASE)


def _exception_message(exception_info: Any) -> str | None:
    """The first error message GX recorded. exception_info is either one
    {raised_exception, exception_message, ...} dict or a dict of them keyed by metric id."""
    if not isinstance(exception_info, dict):
        return None
    candidates = [exception_info] + [v for v in exception_info.values() if isinstance(v, dict)]
    for info in candidates:
        if info.get("raised_exception"):
            message = str(info.get("exception_message") or "").strip()
            return message.splitlines()[0][:300] if message else "error"
    return None


def _expectation_entry(result) -> dict:
    config = result.expectation_config
    kwargs = config.kwargs or {}
    column = kwargs.get("column")
    if column is None and kwargs.get("column_list") is not None:
        column = ",".join(map(str, kwargs["column_list"]))
    if column is None and kwargs.get("column_A") is not None:
        column = f"{kwargs['column_A']},{kwargs.get('column_B')}"
    details = result.result or {}
    entry: dict[str, Any] = {
        "expectation": config.type,
        "column": column,
        "success": bool(result.success),
        "unexpected_count": _plain(details.get("unexpected_count")),
        "unexpected_examples": _plain(list(details.get("partial_unexpected_list") or [])),
    }
    if "observed_value" in details:
        entry["observed_value"] = _plain(details["observed_value"])
    error = _exception_message(result.exception_info)
    if error is not None:
        entry["error"] = error
    if not entry["success"] and (
        (config.type == "expect_column_to_exist" and error is None) or (error and _MISSING_COLUMN.search(error))
    ):
        entry["missing_column"] = True
    return entry


def _summarise(suite: str, results: list, rows: int) -> dict:
    entries = [_expectation_entry(r) for r in results]
    failed = sum(not r["success"] for r in entries)
    return {
        "suite": suite,
        "success": failed == 0,
        "evaluated": len(entries),
        "failed": failed,
        "rows": int(rows),
        "results": entries,
    }


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure_detail(r: dict) -> str:
    label = r["expectation"] + (f"({r['column']})" if r["column"] is not None else "")
    if r.get("error"):
        return f"{label} error: {r['error'].removeprefix('Error: ')[:120]}"
    if r["unexpected_count"] is not None:
        detail = f"{label} {r['unexpected_count']} rows"
        distinct = {repr(e): e for e in r["unexpected_examples"] if e is not None}  # a duplicate shows up twice
        examples = list(distinct.values())[:MESSAGE_MAX_EXAMPLES]
        if examples:
            detail += ", e.g. [" + ", ".join(_short(e) for e in examples) + "]"
        return detail
    if "observed_value" in r:
        return f"{label} observed {_short(r['observed_value'], 80)}"
    return f"{label} failed"


def failure_message(summary: dict, report: Path | None = None) -> str:
    """The human summary of a failed validation: one line, plus a pointer to the report."""
    failures = [r for r in summary["results"] if not r["success"]]
    missing = list(dict.fromkeys(str(r["column"]) for r in failures if r.get("missing_column")))
    shown = missing[:MESSAGE_MAX_MISSING] + ([f"and {len(missing) - MESSAGE_MAX_MISSING} more"]
                                             if len(missing) > MESSAGE_MAX_MISSING else [])
    parts = [f"missing columns: {', '.join(shown)}"] if missing else []
    others = [r for r in failures if not r.get("missing_column")]
    parts += [_failure_detail(r) for r in others[:MESSAGE_MAX_FAILURES]]
    if len(others) > MESSAGE_MAX_FAILURES:
        parts.append(f"and {len(others) - MESSAGE_MAX_FAILURES} more")
    text = (
        f"validation '{summary['suite']}' failed: {summary['failed']} of {summary['evaluated']} expectations"
        f" on {summary['rows']} rows; " + "; ".join(parts)
    )
    if report is not None:
        text += f"\nreport: {report} (Data Docs: {report.parent / 'data_docs' / 'index.html'})"
    return text


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def validate_dataframe(
    df: pd.DataFrame,
    suite: str,
    report_dir: str | Path | None = None,
    expectations_dir: str | Path = DEFAULT_EXPECTATIONS_DIR,
    windows: list[str] | None = None,
) -> dict:
    """Run suite `suite` (file expectations/<suite>.json) on df and return a summary dict:

    {"suite", "success", "evaluated", "failed", "rows",
     "results": [{"expectation", "column", "success", "unexpected_count", "unexpected_examples",
                  ["observed_value"], ["error"], ["missing_column"]}...]}
    (results in the suite file's order; unexpected_examples are at most 5 values, nulls as None).

    When report_dir is given, writes report_dir/<suite>.json (the summary, atomically) and GX
    Data Docs under report_dir/data_docs/ (index.html), also when validation fails.
    If any expectation fails, raises pipelines.errors.ValidationFailed with a short human
    summary naming each failed expectation, its column, the unexpected row count and examples.

    `windows` (e.g. ["1d", "7d", "28d", "hist"]) expands the suite's per-window ({window})
    expectations; None infers them from df's n_events_<suffix> columns when the suite has any,
    and the summary then also holds "windows".
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validate_dataframe expects a pandas DataFrame, got {type(df).__name__}")
    if report_dir is not None and is_s3(report_dir):
        raise UserError(f"{report_dir}: validation reports are written to a local directory, not S3")
    docs_dir = Path(report_dir).resolve() / "data_docs" if report_dir is not None else None
    templated = is_templated(load_suite_dict(suite, expectations_dir))
    if windows is not None:
        windows = _check_windows(windows)
    elif templated:
        windows = windows_from_columns(df.columns)
        if not windows:
            raise UserError(
                f"suite '{suite}' checks per-window columns ({WINDOW}) but no windows were given and the data has no "
                f"{_WINDOW_COLUMN}<window> columns to infer them from"
            )
    results = _run_gx(df, suite, expectations_dir, docs_dir, windows)
    summary = _summarise(suite, results, len(df))
    if templated:
        summary["windows"] = list(windows)
    report = None
    if report_dir is not None:
        report = Path(report_dir) / f"{suite}.json"
        write_json(summary, report)
    if not summary["success"]:
        raise ValidationFailed(failure_message(summary, report))
    return summary


def validate_file(
    path: str | os.PathLike,
    suite: str,
    report_dir: str | Path | None = None,
    expectations_dir: str | Path = DEFAULT_EXPECTATIONS_DIR,
    windows: list[str] | None = None,
) -> dict:
    """Read a Parquet file (local path or s3:// URI) and validate it with `suite` (see
    validate_dataframe for `windows`)."""
    with local_copy(path) as local:
        try:
            df = pd.read_parquet(local)
        except Exception as exc:  # pyarrow raises several types for "not a parquet file"
            raise UserError(f"{path}: cannot read as Parquet ({str(exc).splitlines()[0] if str(exc) else exc})") from exc
    return validate_dataframe(df, suite, report_dir=report_dir, expectations_dir=expectations_dir, windows=windows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.validate", description="Validate a Parquet file with a Great Expectations suite."
    )
    parser.add_argument("path", help="Parquet file (local or s3://)")
    parser.add_argument("suite", help=f"suite name: {', '.join(SUITES)}")
    parser.add_argument("--report-dir", default=None, help="write <suite>.json and data_docs/ here")
    parser.add_argument("--expectations-dir", default=DEFAULT_EXPECTATIONS_DIR)
    parser.add_argument("--windows", default=None,
                        help="window suffixes for per-window expectations, e.g. 1d,7d,28d,hist "
                             "(default: from the n_events_<window> columns)")
    args = parser.parse_args(argv)
    windows = [w.strip() for w in args.windows.split(",")] if args.windows else None
    try:
        summary = validate_file(args.path, args.suite, args.report_dir, args.expectations_dir, windows)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"validation '{summary['suite']}' passed: {summary['evaluated']} expectations on {summary['rows']} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
