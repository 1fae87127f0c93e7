"""Bring your own events (contract section 5): the whole pipeline on one file, no code edits.

Everything lands under `out_dir` (its own partitions, reports and model registry), so a run
never touches the repository's DVC outputs. Every user with an event in the file is scored,
whatever `features.history_days` or `score.active_within_days` say for daily runs.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from pipelines import stages
from pipelines.config import override
from pipelines.layout import Layout


def run_pipeline(events: str, out_dir: str, params: dict[str, Any], labels: str | None = None,
                 run_id: str | None = None, as_of: str | None = None) -> dict[str, Any]:
    """Ingest, clean, validate, build features (and event sequences for a sequence detector), fit
    and register the configured detector, make it this folder's champion, score every user,
    publish the flagged users to the configured warehouse, and evaluate when labels are given. `as_of` defaults to the day of the last event."""
    from pipelines.detectors import get_detector_class
    from pipelines.features import resolve_as_of

    out = Path(out_dir)
    lay = Layout.under(str(out))
    params = override(params, "storage", {"data": lay.data, "reports": lay.reports, "models": lay.models})
    params = override(params, "features.history_days", None)
    params = override(params, "score.active_within_days", None)
    if labels:  # the run report gets the labelled section (PR and ROC curves, recall per type)
        params = override(params, "report.labels", labels)
    work, validation = out / "work", str(out / "validation")
    summary: dict[str, Any] = {}
    # the run date is only known once the events are clean, so the first steps get explicit paths
    summary["ingest"] = stages.ingest_stage(params, None, source=events, out=str(work / "ingested.parquet"),
                                            validation_dir=validation)
    summary["clean"] = stages.clean_stage(params, None, events_in=str(work / "ingested.parquet"),
                                          out=str(work / "clean.parquet"), quarantine_out=str(out / "quarantine.parquet"),
                                          report_out=str(out / "clean_report.json"), validation_dir=validation)
    day = str(resolve_as_of(str(work / "clean.parquet"), as_of))
    # the day's partition names too, where the run report reads the events read, the quarantine
    # reasons and the users' daily activity (the same file under a second name, not a copy)
    _link(work / "clean.parquet", Path(lay.clean(day)))
    _link(out / "clean_report.json", Path(lay.report(day, "clean_report.json")))
    summary["features"] = stages.features_stage(params, day, events_in=str(work / "clean.parquet"),
                                                out=str(out / "features.parquet"), validation_dir=validation)
    sequences = None
    if get_detector_class(params["train"]["detector"]).reads_sequences_for(params["train"]):
        sequences = str(out / "sequences.parquet")
        summary["sequences"] = stages.sequences_stage(params, day, events_in=str(work / "clean.parquet"),
                                                      out=sequences, validation_dir=validation)
    summary["train"] = stages.train_stage(params, day, features_in=str(out / "features.parquet"),
                                          report_out=str(out / "train_report.json"), labels=labels,
                                          sequences_in=sequences)
    version = summary["train"]["model_version"]
    # the contract: `run` scores with the model it fits; the decision is recorded as forced
    summary["promote"] = stages.promote_stage(params, day, candidate=version, features_in=str(out / "features.parquet"),
                                              labels=labels, force=True, sequences_in=sequences)
    summary["score"] = stages.score_stage(params, day, features_in=str(out / "features.parquet"), model=version,
                                          out=str(out / "scores.parquet"), validation_dir=validation,
                                          sequences_in=sequences)
    summary["publish"] = stages.publish_stage(params, day, scores_in=str(out / "scores.parquet"), run_id=run_id)
    if labels:
        metrics = stages.evaluate_stage(params, day, labels, features_in=str(out / "features.parquet"), model=version,
                                        metrics_out=str(out / "metrics.json"), plots_dir=str(out / "plots"),
                                        sequences_in=sequences)
        summary["evaluate"] = {k: metrics[k] for k in ("roc_auc", "pr_auc", "precision_at_k", "recall_at_k")}
    return summary


def _link(src: Path, dst: Path) -> None:
    """`dst` names the file `src` (a hard link, or a copy where links are refused), replacing
    what was there in one rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
