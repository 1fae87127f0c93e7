"""Where every dataset of a run date lives: one partition per as-of day.

    <data>/ingested/as_of=2026-11-21/events.parquet
    <data>/clean/as_of=2026-11-21/events.parquet, quarantine.parquet
    <data>/features/as_of=2026-11-21/features.parquet
    <data>/sequences/as_of=2026-11-21/sequences.parquet   (for the sequence detectors)
    <data>/scores/as_of=2026-11-21/scores.parquet
    <reports>/as_of=2026-11-21/{clean,features,train,promotion,score,publish}.json, metrics.json,
                                plots/, validation/<suite>/, drift.json, drift.parquet,
                                report.html (the run report)
    <models>/registry/<version>/, champion.json, promotions/

Each root (`storage` in params.yaml) is a local folder or an s3:// prefix. A step for one date
touches only that date's partition, so days can be computed at the same time and a rerun of
a day replaces only that day.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pipelines import io
from pipelines.errors import UserError


def parse_as_of(value: Any, what: str = "as_of") -> str:
    """An ISO day (YYYY-MM-DD) from a string or date; one-line error otherwise."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(str(value).strip()).isoformat()
    except ValueError:
        raise UserError(f"{what} must be a day like 2026-11-21, not {value!r}") from None


def require_features(path: str, as_of: str) -> None:
    """The one-line error of every step that reads a day's features (train, evaluate, promote,
    score, and drift in the report step) when the features step has not written them."""
    if not io.exists(path):
        raise UserError(f"{path}: no features for {as_of}; run the features step for that date first")


@dataclass(frozen=True)
class Layout:
    data: str = "data"
    reports: str = "reports"
    models: str = "models"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "Layout":
        storage = params.get("storage") or {}
        return cls(**{k: str(v) for k, v in storage.items() if k in ("data", "reports", "models")})

    @classmethod
    def under(cls, root: str) -> "Layout":
        """Everything of one run under one folder (what `pipelines run --out DIR` uses)."""
        return cls(data=io.join(root, "data"), reports=io.join(root, "reports"), models=io.join(root, "models"))

    def partition(self, dataset: str, as_of: str) -> str:
        return io.join(self.data, dataset, f"as_of={parse_as_of(as_of)}")

    def ingested(self, as_of: str) -> str:
        return io.join(self.partition("ingested", as_of), "events.parquet")

    def clean(self, as_of: str) -> str:
        return io.join(self.partition("clean", as_of), "events.parquet")

    def quarantine(self, as_of: str) -> str:
        return io.join(self.partition("clean", as_of), "quarantine.parquet")

    def features(self, as_of: str) -> str:
        return io.join(self.partition("features", as_of), "features.parquet")

    def sequences(self, as_of: str) -> str:
        return io.join(self.partition("sequences", as_of), "sequences.parquet")

    def scores(self, as_of: str) -> str:
        return io.join(self.partition("scores", as_of), "scores.parquet")

    def report_dir(self, as_of: str) -> str:
        return io.join(self.reports, f"as_of={parse_as_of(as_of)}")

    def report(self, as_of: str, name: str) -> str:
        return io.join(self.report_dir(as_of), name)

    def run_report(self, as_of: str) -> str:
        """The day's self-contained HTML run report (pipelines/report.py)."""
        return self.report(as_of, "report.html")

    def validation(self, as_of: str) -> str:
        return self.report(as_of, "validation")

    def partitions(self, dataset: str) -> list[str]:
        """The as-of days that have a partition of `dataset`, oldest first."""
        return sorted(n.removeprefix("as_of=") for n in io.listdir(io.join(self.data, dataset)) if n.startswith("as_of="))
