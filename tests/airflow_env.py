"""Airflow for tests/test_dags.py: an isolated AIRFLOW_HOME with a SQLite metadata database, and
the end-to-end scenario, run in a process of its own because Airflow reads its configuration
once per process.

    python tests/airflow_env.py scenario WORKDIR    # WORKDIR/params.yaml, raw/labels.parquet; the
                                                    # process env from airflow_env(); writes
                                                    # WORKDIR/scenario.json
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
RETRAIN, SCORE = "pipelines_retrain_daily", "pipelines_score_daily"
DAY = "2026-11-21"  # the simulated data's last day
DAY_END = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)  # a scheduled run for DAY has this interval end

# settings that must not leak from the developer's shell into a test's Airflow or pipeline
_LEAKY_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "PIPELINES_")
_LEAKY = {"AIRFLOW_HOME", "AIRFLOW_CONFIG", "WAREHOUSE_URL"}


def airflow_env(home: str | os.PathLike, base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a test Airflow: its own home and SQLite database, this repository's
    dags/ and no example DAGs."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith(_LEAKY_PREFIXES) and k not in _LEAKY}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{Path(home) / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    env.update(extra)
    return env


# ----------------------------------------------------------------------------- the scenario


def _task_states(dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    from airflow.models.dagrun import DagRun

    return {ti.task_id: {"state": str(ti.state.value if hasattr(ti.state, "value") else ti.state),
                         "try_number": ti.try_number}
            for ti in DagRun.fetch_task_instances(dag_id=dag_id, run_id=run_id)}


def _asset_events() -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.name, AssetEvent.extra, AssetEvent.partition_key, AssetEvent.source_dag_id,
                   AssetEvent.source_task_id, AssetEvent.source_run_id)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id).order_by(AssetEvent.id)
        ).all()
    return [{"asset": r[0], "extra": r[1], "partition_key": r[2], "dag_id": r[3], "task_id": r[4], "run_id": r[5]}
            for r in rows]


def _warehouse(url: str) -> dict[str, Any]:
    from pipelines.warehouse import parse_url, read_table

    if not Path(parse_url(url)[1]).exists():
        return {"rows": 0, "run_ids": []}
    rows = read_table(url, "flagged_users", DAY)
    return {"rows": int(len(rows)), "run_ids": sorted(set(rows["run_id"]))}


def scenario(work: Path) -> dict[str, Any]:
    """Both DAGs through dag.test() on the simulated day:
    score without a champion (fails; then skips when configured), retrain with labels (a
    champion), retrain again without labels (evaluate skipped, not promoted, no Asset event),
    score, and score the same day again from a manual run without a logical date."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    if bag.import_errors:
        raise SystemExit(f"import errors: {bag.import_errors}")
    dags = bag.dags
    warehouse_url = os.environ["PIPELINES_TEST_WAREHOUSE_URL"]
    labels = str(work / "raw" / "labels.parquet")
    out: dict[str, Any] = {"phases": {}}

    def phase(name: str, dag_id: str, env: dict[str, str] | None = None, **test_kwargs: Any) -> None:
        saved = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})
        try:
            print(f"===== phase {name}: {dag_id}", flush=True)
            dr = dags[dag_id].test(**test_kwargs)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        out["phases"][name] = {
            "state": str(getattr(dr.state, "value", dr.state)),
            "run_id": dr.run_id,
            "tasks": _task_states(dag_id, dr.run_id),
            "warehouse": _warehouse(warehouse_url),
        }
        print(f"===== phase {name}: {out['phases'][name]['state']}", flush=True)

    data_steps = "ingest|clean|features"  # built by the phase before; marked done, not rerun
    phase("no_champion", SCORE, logical_date=DAY_END)
    phase("skip_without_champion", SCORE, env={"PIPELINES_SKIP_WITHOUT_CHAMPION": "true"},
          logical_date=DAY_END, mark_success_pattern=data_steps)
    phase("retrain", RETRAIN, env={"AIRFLOW_VAR_PIPELINES_LABELS": labels}, logical_date=DAY_END)
    phase("retrain_again", RETRAIN, logical_date=DAY_END, mark_success_pattern=data_steps)
    phase("score", SCORE, logical_date=DAY_END)
    # a manual run without a logical date, the morning after: the same day, replaced
    phase("score_again", SCORE, logical_date=None, run_after=DAY_END + dt.timedelta(hours=6))
    out["asset_events"] = _asset_events()
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "scenario":
        print(__doc__, file=sys.stderr)
        return 2
    work = Path(argv[1])
    result = scenario(work)
    (work / "scenario.json").write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
