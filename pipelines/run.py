"""Bring your own events (contract section 5): the whole pipeline on one file, no code edits."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines import stages


def run_pipeline(events: str, out_dir: str, params: dict[str, Any], labels: str | None = None,
                 run_id: str | None = None) -> dict[str, Any]:
    """Ingest, clean, validate, build features, fit, score every user, write the warehouse,
    and evaluate when labels are given. Everything lands under `out_dir`."""
    out = Path(out_dir)
    validation = out / "validation"
    summary: dict[str, Any] = {}
    summary["ingest"] = stages.ingest_stage(params, str(out / "work" / "ingested.parquet"), source=events,
                                            validation_dir=validation)
    summary["clean"] = stages.clean_stage(params, str(out / "work" / "ingested.parquet"),
                                          str(out / "work" / "clean.parquet"), str(out / "quarantine.parquet"),
                                          str(out / "clean_report.json"), validation_dir=validation)
    summary["features"] = stages.features_stage(params, str(out / "work" / "clean.parquet"),
                                                str(out / "features.parquet"), validation_dir=validation)
    summary["train"] = stages.train_stage(params, str(out / "features.parquet"), str(out / "model"),
                                          str(out / "train_report.json"))
    summary["score"] = stages.score_stage(params, str(out / "features.parquet"), str(out / "model"),
                                          str(out / "scores.parquet"), run_id=run_id, validation_dir=validation)
    if labels:
        metrics = stages.evaluate_stage(params, str(out / "scores.parquet"), labels, str(out / "metrics.json"),
                                        str(out / "plots"))
        summary["evaluate"] = {k: metrics[k] for k in ("roc_auc", "pr_auc", "precision_at_k", "recall_at_k")}
    return summary
