"""The steps with their I/O: read inputs, call the pure step function, validate the dataset
at its boundary, write outputs atomically. DVC stages, `python -m pipelines run` and the
Airflow DAGs all call these, so the logic exists once.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines import io
from pipelines.config import section, warehouse_target
from pipelines.errors import UserError

log = logging.getLogger("pipelines")

VALIDATION_DIR = Path("reports/validation")


def check(df: pd.DataFrame, suite: str, validation_dir: str | os.PathLike | None) -> dict:
    """Great Expectations at a dataset boundary: raises ValidationFailed with a short summary."""
    from pipelines.validate import validate_dataframe

    report_dir = Path(validation_dir) / suite if validation_dir is not None else None
    summary = validate_dataframe(df, suite, report_dir=report_dir)
    log.info("validation %s: %s of %s expectations passed", suite, summary["evaluated"] - summary["failed"], summary["evaluated"])
    return summary


def simulate_stage(params: dict, events_out: str, labels_out: str) -> dict:
    from pipelines.simulate import simulate

    events, labels = simulate(section(params, "simulate"))
    io.write_parquet(events, events_out)
    io.write_parquet(labels, labels_out)
    return {"events": len(events), "users": len(labels), "anomalous_users": int(labels["is_anomaly"].sum())}


def ingest_stage(params: dict, out: str, source: str | None = None, validation_dir=VALIDATION_DIR) -> dict:
    from pipelines.ingest import ingest

    p = section(params, "ingest")
    source = source or p.get("source", "data/raw/events.parquet")
    events = ingest(source, p.get("format", "auto"))
    check(events, "raw", validation_dir)
    io.write_parquet(_parquet_safe(events), out)
    return {"source": str(source), "rows": len(events)}


def clean_stage(params: dict, events_in: str, out: str, quarantine_out: str, report_out: str,
                validation_dir=VALIDATION_DIR) -> dict:
    from pipelines.clean import clean

    clean_events, quarantine, report = clean(pd.read_parquet(events_in), section(params, "clean"))
    # the quarantine and the accounting are the evidence a user needs when the run stops here
    io.write_parquet(quarantine, quarantine_out)
    io.write_json(report, report_out)
    if report["rows_clean"] == 0:
        reasons = ", ".join(f"{n} {r}" for r, n in report["quarantine_reasons"].items())
        raise UserError(f"no usable events: all {report['rows_in']} rows were quarantined ({reasons}); "
                        f"see {quarantine_out}")
    check(clean_events, "clean", validation_dir)
    io.write_parquet(clean_events, out)
    return report


def features_stage(params: dict, events_in: str, out: str, validation_dir=VALIDATION_DIR) -> dict:
    from pipelines.features import build_features

    features = build_features(events_in, section(params, "features"))
    check(features, "features", validation_dir)
    as_of = features.attrs["as_of"]
    io.write_parquet(features, out)
    return {"as_of": as_of, "users": len(features), "features": features.shape[1] - 1}


def train_stage(params: dict, features_in: str, model_dir: str, report_out: str | None = None) -> dict:
    from pipelines.train import train

    detector, info = train(pd.read_parquet(features_in), section(params, "train"))
    with io.atomic_dir(model_dir) as tmp:
        info["model_version"] = detector.save(tmp)
    if report_out:
        io.write_json(info, report_out)
    return info


def score_stage(params: dict, features_in: str, model_dir: str, out: str, run_id: str | None = None,
                validation_dir=VALIDATION_DIR, write_warehouse: bool = True) -> dict:
    from pipelines.detectors import Detector
    from pipelines.score import score_users
    from pipelines.warehouse import flagged_rows, replace_day

    features = pd.read_parquet(features_in)
    as_of = _as_of_of(features_in, features)
    detector = Detector.load(model_dir)
    scores = score_users(features, detector, section(params, "score"), as_of)
    check(scores, "scores", validation_dir)
    io.write_parquet(scores, out)
    info = {"as_of": as_of, "users_scored": len(scores), "flagged": int(scores["flagged"].sum()),
            "model_version": detector.model_version_}
    if write_warehouse:
        run_id = run_id or os.environ.get("PIPELINES_RUN_ID") or uuid.uuid4().hex
        rows = flagged_rows(scores, run_id, pd.Timestamp(dt.datetime.now(dt.timezone.utc)))
        url, table = warehouse_target(params)
        info["warehouse_rows"] = replace_day(rows, url, table, as_of)
        info["warehouse"] = f"{_redact(url)} table {table}"
        info["run_id"] = run_id
    return info


def evaluate_stage(params: dict, scores_in: str, labels_in: str, metrics_out: str, plots_dir: str) -> dict:
    from pipelines.evaluate import evaluate, read_labels

    metrics, plots = evaluate(pd.read_parquet(scores_in), read_labels(labels_in), section(params, "train"))
    for name, rows in plots.items():
        io.write_json(rows, Path(plots_dir) / f"{name}.json")
    io.write_json(metrics, metrics_out)
    return metrics


def _as_of_of(features_in: str, features: pd.DataFrame) -> str:
    """The features' as-of day, stored in the Parquet metadata by pandas' attrs."""
    as_of = features.attrs.get("as_of")
    if not as_of:
        raise UserError(f"{features_in}: no as_of recorded; rebuild it with the features step")
    return as_of


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Raw data may mix types in one column (CSV text next to numbers): store those as text."""
    mixed = [c for c in df.columns if df[c].dtype == object]
    if not mixed:
        return df
    return df.assign(**{c: df[c].astype("str").where(df[c].notna()) for c in mixed})


def _redact(url: str) -> str:
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
