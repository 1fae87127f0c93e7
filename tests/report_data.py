"""A small scored pipeline for the run-report tests: two days scored by a champion trained on the
first, with the simulation's labels beside them (tests/test_report*.py)."""
from __future__ import annotations

from pathlib import Path

from pipelines import stages
from pipelines.config import default_params, override

DAYS = ("2026-11-20", "2026-11-21")
TOP_K = 12


def scored_days(root: Path, storage: str | None = None) -> tuple[dict, Path]:
    """(params, labels path) of a registry, partitions and reports under `root` (or under the
    `storage` prefix, e.g. s3://bucket/run; the events and labels stay in `root`)."""
    from pipelines.simulate import simulate

    events, labels = simulate({"n_users": 500, "days": 12, "seed": 3, "end_date": DAYS[-1], "anomaly_rate": 0.1})
    events.to_parquet(root / "events.parquet", index=False)
    labels.to_parquet(root / "labels.parquet", index=False)
    params = default_params()
    base = storage or str(root)
    for key, value in (("storage", {"data": f"{base}/data", "reports": f"{base}/reports", "models": f"{base}/models"}),
                       ("ingest.source", str(root / "events.parquet")), ("score.top_k", TOP_K),
                       ("features.threads", 1), ("report.top_users", 5)):
        params = override(params, key, value)
    for day in DAYS:
        stages.ingest_stage(params, day)
        stages.clean_stage(params, day)
        stages.features_stage(params, day)
        if day == DAYS[0]:
            stages.train_stage(params, day)
            stages.promote_stage(params, day)
        stages.score_stage(params, day)
    return params, root / "labels.parquet"
