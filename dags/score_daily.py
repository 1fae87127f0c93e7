"""Daily scoring: ingest -> clean -> features + sequences -> score (champion) -> publish -> the
day's scores Asset.

Every step calls the same function of pipelines/stages.py as `python -m pipelines`, for the
run's day (dags/README.md). ingest/clean/features are idempotent and atomic, so running them
here and in pipelines_retrain_daily is safe. `score` validates the scores (GX suite
`scores`); `publish` replaces the day's rows of the flagged-users table in one transaction
and emits the `pipelines_daily_scores` Asset with the day as partition key. Without a
champion, `score` fails with one line ("no champion model in ... yet"), or skips when
PIPELINES_SKIP_WITHOUT_CHAMPION / Variable pipelines_skip_without_champion is true.

`score` also measures drift against the champion's training data (a warning in its log above
drift.psi_warn; reports/as_of=D/drift.json) and writes the day's self-contained run report,
reports/as_of=D/report.html: its log ends with "run report for D: file:///..." (the
result's `report` key); with drift.block_publish_on_severe, `publish` fails on severe drift.
"""
from __future__ import annotations

import os
import sys

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # Airflow adds the DAGs folder; a bare DagBag does not
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))

from airflow.sdk import dag  # noqa: E402

import pipelines_tasks as t  # noqa: E402


@dag(
    dag_id="pipelines_score_daily",
    description="Daily batch scoring with the champion into the flagged-users table",
    schedule=t.DAILY,
    start_date=t.START_DATE,
    catchup=False,
    max_active_runs=2,  # days are independent partitions; the warehouse replaces one day per transaction
    default_args=t.DEFAULT_ARGS,
    params=t.RUN_PARAMS,
    tags=["fraud", "pipelines", "scoring"],
    doc_md=__doc__,
)
def pipelines_score_daily():
    t.ingest() >> t.clean() >> [t.features(), t.sequences()] >> (scored := t.score())
    t.publish(scored)


pipelines_score_daily()
