"""The simulated days the docs scripts measure (docs/make_drift_example.py,
docs/make_run_report_screenshot.py): a world simulated by params.yaml's simulate section, and
its days run through ingest, clean, features and score with a champion trained on one of them.

Imported by those scripts (run as `python docs/NAME.py`, which puts docs/ on sys.path); not
part of the package. The scripts put the repository on sys.path before calling in here."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def simulated_world(root: Path, users: int, labels: bool = False) -> dict:
    """params.yaml's parameters with storage and ingest.source under `root`, after simulating
    its world (its simulate section, `users` users) into root/events.parquet, and the
    simulation's labels into root/labels.parquet when `labels`."""
    from pipelines.config import load_params, override
    from pipelines.simulate import simulate

    params = load_params(str(REPO / "params.yaml"))
    events, truth = simulate({**params["simulate"], "n_users": users})
    events.to_parquet(root / "events.parquet", index=False)
    if labels:
        truth.to_parquet(root / "labels.parquet", index=False)
    for key, value in (("storage", {"data": str(root / "data"), "reports": str(root / "reports"),
                                    "models": str(root / "models")}),
                       ("ingest.source", str(root / "events.parquet"))):
        params = override(params, key, value)
    return params


def scored_days(params: dict, days: tuple[str, ...], train_day: str) -> Iterator[str]:
    """Ingest, clean, features and score each of `days` in order, a champion trained and
    promoted on `train_day` before it is scored; yields each day once it is scored."""
    from pipelines import stages

    for day in days:
        stages.ingest_stage(params, day)
        stages.clean_stage(params, day)
        stages.features_stage(params, day)
        if day == train_day:
            stages.train_stage(params, day)
            stages.promote_stage(params, day)
        stages.score_stage(params, day)
        yield day
