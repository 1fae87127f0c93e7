"""Daily retraining: ingest -> clean -> features + sequences -> train (on a GPU worker or not)
-> evaluate -> promote -> champion Asset.

Every step calls the same function of pipelines/stages.py as `dvc repro` and `python -m
pipelines`, for the run's day (dags/README.md). Great Expectations validates each dataset
inside its step. `choose_training_worker` reads the run's parameters and picks `train_on_gpu`
(queue and pool `gpu`) when train.detector wants a GPU and train.device is not cpu, else
`train_on_cpu` (the default queue); both run the same train step, the other one is skipped. `evaluate` runs only when labels are configured (PIPELINES_LABELS or
Variable pipelines_labels); `promote` is the gate; `publish_champion` emits the
`pipelines_champion` Asset only when the gate promoted (skipped otherwise).
"""
from __future__ import annotations

import os
import sys

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # Airflow adds the DAGs folder; a bare DagBag does not
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))

from airflow.sdk import dag  # noqa: E402

import pipelines_tasks as t  # noqa: E402


@dag(
    dag_id="pipelines_retrain_daily",
    description="Daily retraining of the anomaly detector and the champion/challenger gate",
    schedule=t.DAILY,
    start_date=t.START_DATE,
    catchup=False,
    max_active_runs=1,  # each day's gate compares against the champion the previous day left
    default_args=t.DEFAULT_ARGS,
    params=t.RUN_PARAMS,
    tags=["fraud", "pipelines", "training"],
    doc_md=__doc__,
)
def pipelines_retrain_daily():
    worker = t.choose_training_worker()
    t.ingest() >> t.clean() >> [t.features(), t.sequences()] >> worker
    on_gpu, on_cpu = t.train_on_gpu(), t.train_on_cpu()
    worker >> [on_gpu, on_cpu]
    decision = t.promote(on_gpu, on_cpu)
    t.evaluate(on_gpu, on_cpu) >> decision
    t.publish_champion(decision)


pipelines_retrain_daily()
