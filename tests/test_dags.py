"""The Airflow DAGs (dags/): they import cleanly and cheaply, every task has an owner, retries
and its place in the graph, only training sits on the gpu queue and pool (and only when the
run's detector wants a GPU: the branch choose_training_worker decides at run time), pipeline errors map
to Airflow's fail/retry behaviour, and (slow) both DAGs run end to end through dag.test() on a
small simulated data set with a SQLite metadata database.

Airflow reads its configuration once per process, so the AIRFLOW_HOME of these tests is set
before anything imports Airflow here, and the end-to-end scenario runs in a process of its own
(tests/airflow_env.py)."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from airflow_env import DAGS, DAY, REPO, RETRAIN, SCORE, airflow_env

UTC = dt.timezone.utc
HEAVY = ("pandas", "duckdb", "great_expectations", "torch", "sklearn", "pyarrow", "pipelines.stages")

RETRAIN_UPSTREAM = {
    "ingest": set(),
    "clean": {"ingest"},
    "features": {"clean"},
    "sequences": {"clean"},
    "choose_training_worker": {"features", "sequences"},
    "train_on_gpu": {"choose_training_worker"},
    "train_on_cpu": {"choose_training_worker"},
    "evaluate": {"train_on_gpu", "train_on_cpu"},
    "promote": {"train_on_gpu", "train_on_cpu", "evaluate"},
    "publish_champion": {"promote"},
}
SCORE_UPSTREAM = {
    "ingest": set(),
    "clean": {"ingest"},
    "features": {"clean"},
    "sequences": {"clean"},
    "score": {"features", "sequences"},
    "publish": {"score"},
}


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    """This process's Airflow settings (set before Airflow is first imported; restored for the
    modules after this one) and the home the end-to-end subprocess shares."""
    home = tmp_path_factory.mktemp("airflow_home")
    mp = pytest.MonkeyPatch()
    env = airflow_env(home)
    for key in list(os.environ):
        if key not in env:
            mp.delenv(key)
    for key, value in env.items():
        mp.setenv(key, value)
    mp.syspath_prepend(str(DAGS))
    yield home
    mp.undo()


@pytest.fixture(scope="module")
def dagbag(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture
def tasks_module(airflow_home):
    import pipelines_tasks

    return pipelines_tasks


# ----------------------------------------------------------------------------- structure


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == {RETRAIN, SCORE}
    files = {Path(d.fileloc).name for d in dagbag.dags.values()}
    assert files == {p.name for p in DAGS.glob("*.py") if p.name != "pipelines_tasks.py"}
    # the plumbing module is not parsed as a DAG file
    assert "pipelines_tasks.py" in (DAGS / ".airflowignore").read_text()


def test_every_task_has_retries_an_owner_and_a_failure_callback_and_every_dag_tags(dagbag, tasks_module):
    for dag in dagbag.dags.values():
        assert {"fraud", "pipelines"} <= set(dag.tags), dag.dag_id
        assert dag.catchup is False
        assert dag.start_date.tzinfo is not None
        for task in dag.tasks:
            where = f"{dag.dag_id}.{task.task_id}"
            assert task.retries >= 1, where
            assert task.owner and task.owner != "airflow", where
            assert task.retry_exponential_backoff > 1, where
            assert task.retry_delay > dt.timedelta(0), where
            assert task.on_failure_callback == [tasks_module.log_failure], where
            assert task.on_retry_callback == [tasks_module.log_retry], where
    assert "training" in dagbag.dags[RETRAIN].tags


def test_only_training_runs_on_the_gpu_queue_and_pool(dagbag):
    on_gpu = {(d.dag_id, t.task_id) for d in dagbag.dags.values() for t in d.tasks if t.queue == "gpu"}
    in_pool = {(d.dag_id, t.task_id) for d in dagbag.dags.values() for t in d.tasks if t.pool == "gpu"}
    assert on_gpu == in_pool == {(RETRAIN, "train_on_gpu")}
    retrain = dagbag.dags[RETRAIN]
    on_gpu, on_cpu = retrain.get_task("train_on_gpu"), retrain.get_task("train_on_cpu")
    assert on_cpu.queue == "default" and on_cpu.pool == "default_pool"
    for train in (on_gpu, on_cpu):
        assert train.execution_timeout is not None and train.execution_timeout > dt.timedelta(0)


def test_a_branch_picks_one_of_two_placements_of_the_same_training(dagbag, tasks_module):
    from airflow.providers.standard.operators.python import BranchPythonOperator

    retrain = dagbag.dags[RETRAIN]
    branch = retrain.get_task("choose_training_worker")
    assert isinstance(branch, BranchPythonOperator)
    assert branch.downstream_task_ids == set(tasks_module.TRAIN_TASKS.values()) == {"train_on_gpu", "train_on_cpu"}
    on_gpu, on_cpu = retrain.get_task("train_on_gpu"), retrain.get_task("train_on_cpu")
    # one function, no second copy of the training logic
    assert on_gpu.python_callable is on_cpu.python_callable is tasks_module.train.function
    # whichever of the two ran, the tasks after it run (the other one was skipped)
    for task_id in ("evaluate", "promote"):
        assert retrain.get_task(task_id).trigger_rule == "none_failed_min_one_success", task_id


@pytest.mark.parametrize("dag_id, upstream", [(RETRAIN, RETRAIN_UPSTREAM), (SCORE, SCORE_UPSTREAM)])
def test_task_graph(dagbag, dag_id, upstream):
    dag = dagbag.dags[dag_id]
    assert {t.task_id: set(t.upstream_task_ids) for t in dag.tasks} == upstream
    downstream = {tid: {d for d, ups in upstream.items() if tid in ups} for tid in upstream}
    assert {t.task_id: set(t.downstream_task_ids) for t in dag.tasks} == downstream


def test_promote_runs_when_evaluate_is_skipped_and_assets_are_emitted_only_at_the_end(dagbag, tasks_module):
    retrain, score = dagbag.dags[RETRAIN], dagbag.dags[SCORE]
    assert retrain.get_task("promote").trigger_rule in ("none_failed", "none_failed_min_one_success")
    outlets = {(d.dag_id, t.task_id): [a.name for a in t.outlets] for d in (retrain, score) for t in d.tasks if t.outlets}
    assert outlets == {(RETRAIN, "publish_champion"): [tasks_module.CHAMPION.name],
                       (SCORE, "publish"): [tasks_module.SCORES.name]}


def test_daily_schedule_gives_each_run_one_day(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    for dag in dagbag.dags.values():
        assert isinstance(dag.timetable, CronDataIntervalTimetable), dag.dag_id
        assert dag.params["as_of"] is None


def test_importing_a_dag_file_is_light(airflow_home):
    """A fresh interpreter imports each DAG file and must not have pulled in the pipeline."""
    script = textwrap.dedent(f"""
        import importlib.util, json, sys, time
        out = {{}}
        for path in {sorted(str(p) for p in DAGS.glob('*.py') if p.name != 'pipelines_tasks.py')!r}:
            t = time.perf_counter()
            spec = importlib.util.spec_from_file_location("dagfile_" + str(len(out)), path)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
            out[path] = {{"seconds": time.perf_counter() - t,
                         "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=airflow_env(airflow_home), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result) == 2
    for path, info in result.items():
        assert info["heavy"] == [], f"{path} imports {info['heavy']} at parse time"


# ----------------------------------------------------------------------------- errors, dates, configuration


def test_a_user_error_fails_the_task_at_once_with_its_one_line_message(tasks_module):
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.errors import UserError, ValidationFailed

    with pytest.raises(AirflowFailException) as info:
        with tasks_module.airflow_errors():
            raise UserError("params.yaml: score.topk: unknown key (did you mean top_k?)")
    assert str(info.value) == "params.yaml: score.topk: unknown key (did you mean top_k?)"
    with pytest.raises(AirflowFailException, match=r"^suite features failed$"):
        with tasks_module.airflow_errors():
            raise ValidationFailed("suite features failed\n  details on the next lines")


@pytest.mark.parametrize("error", [OSError("connection refused"), ConnectionError("S3 unreachable"),
                                   TimeoutError("database timed out")])
def test_a_transient_error_is_left_for_airflow_to_retry(tasks_module, error):
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(type(error)) as info:
        with tasks_module.airflow_errors():
            raise error
    assert not isinstance(info.value, AirflowFailException)
    assert tasks_module.DEFAULT_ARGS["retries"] >= 1 and tasks_module.DEFAULT_ARGS["retry_exponential_backoff"] > 1


def _context(**values):
    return {"run_id": "scheduled__2026-11-21T00:00:00+00:00", "params": {"as_of": None}, **values}


def test_pipeline_step_maps_errors_of_the_step_and_of_the_configuration(tasks_module, monkeypatch, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.errors import UserError

    monkeypatch.setattr(tasks_module, "get_current_context",
                        lambda: _context(data_interval_end=dt.datetime(2026, 11, 22, tzinfo=UTC)))
    monkeypatch.setattr(tasks_module, "_variable", lambda name: None)
    monkeypatch.setattr(tasks_module, "warehouse_url", lambda: None)
    params = tmp_path / "params.yaml"
    params.write_text(f"storage: {{data: {tmp_path}/data}}\n")
    monkeypatch.setenv("PIPELINES_PARAMS", str(params))
    seen = {}

    @tasks_module.pipeline_step
    def works(cfg, upstream):
        seen.update(as_of=cfg.as_of, data=cfg.params["storage"]["data"], upstream=upstream)
        return {"as_of": cfg.as_of, "when": dt.date(2026, 11, 21)}

    assert works({"out": "x"}) == {"as_of": DAY, "when": DAY}  # JSON-able for XCom
    assert seen == {"as_of": DAY, "data": f"{tmp_path}/data", "upstream": {"out": "x"}}

    @tasks_module.pipeline_step
    def bad_data(cfg):
        raise UserError("no usable events: all 3 rows were quarantined")

    with pytest.raises(AirflowFailException, match="^no usable events"):
        bad_data()

    @tasks_module.pipeline_step
    def unreachable(cfg):
        raise OSError("could not connect to server")

    with pytest.raises(OSError):
        unreachable()

    monkeypatch.setenv("PIPELINES_PARAMS", str(tmp_path / "missing.yaml"))
    with pytest.raises(AirflowFailException, match="missing.yaml: parameters file not found"):
        works({})
    params.write_text("score: {topk: 5}\n")
    monkeypatch.setenv("PIPELINES_PARAMS", str(params))
    with pytest.raises(AirflowFailException, match=r"score.topk: unknown key"):
        works({})


def test_run_date(tasks_module):
    from airflow.sdk.exceptions import AirflowFailException

    run_date = tasks_module.run_date
    # a scheduled (or backfilled) run: its interval [D, D+1) ends at midnight after D
    assert run_date(_context(data_interval_end=dt.datetime(2026, 11, 22, tzinfo=UTC))) == DAY
    # the interval's end in another time zone is read in UTC
    assert run_date(_context(data_interval_end=dt.datetime(2026, 11, 22, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))))) \
        == "2026-11-20"
    # a manual run without a logical date: the last day that had ended when it was triggered
    manual = types.SimpleNamespace(run_after=dt.datetime(2026, 11, 22, 10, 30, tzinfo=UTC))
    assert run_date(_context(data_interval_end=None, dag_run=manual)) == DAY
    # the run's as_of param wins
    assert run_date(_context(params={"as_of": "2026-11-19"}, data_interval_end=dt.datetime(2026, 11, 22, tzinfo=UTC))) \
        == "2026-11-19"
    with pytest.raises(AirflowFailException, match="as_of must be a day"):
        run_date(_context(params={"as_of": "2026-13-40"}))


def test_configuration_from_the_environment_variables_and_connections(tasks_module, monkeypatch, tmp_path):
    from airflow.sdk import Connection

    params = tmp_path / "params.yaml"
    params.write_text("score: {top_k: 7}\n")
    variables = {"pipelines_params_path": str(params), "pipelines_storage_models": "s3://bucket/models",
                 "pipelines_labels": "/data/labels.parquet", "pipelines_skip_without_champion": "True",
                 "pipelines_storage_data": "/from/variable"}
    monkeypatch.setattr(tasks_module, "_variable", variables.get)
    monkeypatch.setattr(tasks_module, "warehouse_url", lambda: "postgres://u:pw@h/db")
    monkeypatch.setenv("PIPELINES_STORAGE_DATA", "/from/env")  # the environment wins
    cfg = tasks_module.RunConfig.from_context(_context(data_interval_end=dt.datetime(2026, 11, 22, tzinfo=UTC)))
    assert cfg.as_of == DAY and cfg.params_source == str(params)
    assert cfg.params["score"]["top_k"] == 7
    assert cfg.params["storage"]["data"] == "/from/env"
    assert cfg.params["storage"]["models"] == "s3://bucket/models"
    assert cfg.labels == "/data/labels.parquet" and cfg.skip_without_champion is True
    assert "pw" not in repr(cfg)

    monkeypatch.setattr(tasks_module, "_variable", {"pipelines_storage_models": "  "}.get)
    monkeypatch.setenv("PIPELINES_PARAMS", str(params))
    cfg = tasks_module.RunConfig.from_context(_context(data_interval_end=dt.datetime(2026, 11, 22, tzinfo=UTC)))
    assert cfg.params["storage"]["models"] == "models" and cfg.labels is None and cfg.skip_without_champion is False

    url = tasks_module.connection_url
    assert url(Connection.from_uri("duckdb:////srv/wh.duckdb", conn_id="w")) == "duckdb:////srv/wh.duckdb"
    assert url(Connection.from_uri("duckdb:///data/wh.duckdb", conn_id="w")) == "duckdb:///data/wh.duckdb"
    assert url(Connection.from_uri("postgresql://wh:p%40ss@db:5432/warehouse", conn_id="w")) == \
        "postgres://wh:p%40ss@db:5432/warehouse"
    assert url(Connection(conn_id="w", conn_type="generic", extra=json.dumps({"url": "duckdb:///x.duckdb"}))) == \
        "duckdb:///x.duckdb"


def test_warehouse_url_in_the_environment_is_left_to_the_pipeline(tasks_module, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://u:pw@h/db")
    assert tasks_module.warehouse_url() is None  # pipelines.config.warehouse_target reads WAREHOUSE_URL itself


def test_failure_callback_logs_step_date_and_one_line_reason_without_secrets(tasks_module, caplog):
    ti = types.SimpleNamespace(dag_id=SCORE, task_id="publish", try_number=3)
    context = _context(task_instance=ti, data_interval_end=dt.datetime(2026, 11, 22, tzinfo=UTC),
                       exception=OSError("could not connect to postgresql://wh:s3cret@db:5432/warehouse\nTraceback..."))
    with caplog.at_level(logging.INFO, logger="pipelines.airflow"):
        tasks_module.log_failure(context)
        tasks_module.log_failure({"exception": None})  # a callback never raises
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.airflow"]
    assert lines[0] == (f"pipelines step {SCORE}.publish for {DAY} (try 3) failed: OSError: could not connect "
                        "to postgresql://***@db:5432/warehouse")
    assert "s3cret" not in caplog.text and len(lines) == 2


@pytest.mark.parametrize("train, chosen, why", [
    ("{detector: ecdf_tail}", "train_on_cpu", "train.detector ecdf_tail does not want a GPU"),
    ("{detector: robust_zscore, device: cuda}", "train_on_cpu", "train.detector robust_zscore does not want a GPU"),
    ("{detector: autoencoder}", "train_on_gpu", "train.detector autoencoder wants a GPU (train.device auto)"),
    ("{detector: vae, device: cuda}", "train_on_gpu", "train.detector vae wants a GPU (train.device cuda)"),
    ("{detector: autoencoder, device: cpu}", "train_on_cpu",
     "train.detector autoencoder wants a GPU, but train.device is cpu"),
    ("{detector: ensemble, ensemble: {members: {ecdf_tail: 1.0, autoencoder: 0.5}}}", "train_on_gpu",
     "train.detector ensemble wants a GPU (train.device auto)"),
    ("{detector: ensemble}", "train_on_cpu", "train.detector ensemble does not want a GPU"),  # ecdf_tail + isolation_forest
])
def test_the_branch_sends_training_where_the_runs_detector_wants_it(dagbag, tasks_module, monkeypatch, tmp_path,
                                                                    caplog, train, chosen, why):
    """The branch reads the parameters the way the train task does (here the file named by the
    Variable pipelines_params_path), when the run gets there: a new file needs no new DAG."""
    params = tmp_path / "params.yaml"
    params.write_text(f"train: {train}\n")
    monkeypatch.setattr(tasks_module, "get_current_context",
                        lambda: _context(data_interval_end=dt.datetime(2026, 11, 22, tzinfo=UTC)))
    monkeypatch.setattr(tasks_module, "_variable", {"pipelines_params_path": str(params)}.get)
    monkeypatch.setattr(tasks_module, "warehouse_url", lambda: None)
    branch = dagbag.dags[RETRAIN].get_task("choose_training_worker")
    with caplog.at_level(logging.INFO, logger="pipelines.airflow"):
        assert branch.python_callable() == chosen
    assert f"training for {DAY} goes to {chosen}: {why} (parameters from {params})" in caplog.text


def test_the_branch_fails_at_once_on_a_detector_it_cannot_find(dagbag, tasks_module, monkeypatch, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    params = tmp_path / "params.yaml"
    params.write_text("train: {detector: ensemble, ensemble: {members: {ecdf_tail: 1.0, autoencodr: 1.0}}}\n")
    monkeypatch.setattr(tasks_module, "get_current_context",
                        lambda: _context(data_interval_end=dt.datetime(2026, 11, 22, tzinfo=UTC)))
    monkeypatch.setattr(tasks_module, "_variable", lambda name: None)
    monkeypatch.setattr(tasks_module, "warehouse_url", lambda: None)
    monkeypatch.setenv("PIPELINES_PARAMS", str(params))
    with pytest.raises(AirflowFailException, match=r"^unknown detector 'autoencodr'; available: .*autoencoder"):
        dagbag.dags[RETRAIN].get_task("choose_training_worker").python_callable()


def test_choosing_the_worker_for_a_deep_detector_does_not_import_torch(airflow_home):
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(DAGS)!r})
        import pipelines_tasks as t
        chosen = [t.training_worker({{"train": train}})[0] for train in (
            {{"detector": "autoencoder"}}, {{"detector": "vae"}}, {{"detector": "supervised_mlp"}},
            {{"detector": "ensemble", "ensemble": {{"members": {{"vae": 1.0, "isolation_forest": 1.0}}}}}})]
        print(json.dumps({{"chosen": chosen, "torch": "torch" in sys.modules}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=airflow_env(airflow_home), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"chosen": ["gpu"] * 4, "torch": False}


def test_the_steps_after_training_take_the_result_of_the_one_that_ran(tasks_module):
    from airflow.sdk.exceptions import AirflowFailException

    trained = {"model_version": "ecdf_tail-00a41c8ef8e2"}
    assert tasks_module.trained_model(None, trained) == trained == tasks_module.trained_model(trained, None)
    with pytest.raises(AirflowFailException, match="exactly one training task, got 0"):
        tasks_module.trained_model(None, None)


def test_champion_asset_only_when_promoted(tasks_module):
    from airflow.sdk.exceptions import AirflowSkipException

    event = types.SimpleNamespace(extra={})
    context = {"outlet_events": {tasks_module.CHAMPION: event}}
    with pytest.raises(AirflowSkipException, match="not promoted: labelled: challenger pr_auc"):
        tasks_module.announce_champion({"promoted": False, "reason": "labelled: challenger pr_auc 0.4 is worse"},
                                       context)
    assert event.extra == {}
    tasks_module.announce_champion({"promoted": True, "as_of": DAY, "champion_after": "ecdf_tail-00a41c8ef8e2",
                                    "champion_before": None, "reason": "no champion yet"}, context)
    assert event.extra["version"] == "ecdf_tail-00a41c8ef8e2" and event.extra["as_of"] == DAY


# ----------------------------------------------------------------------------- end to end (dag.test)


@pytest.fixture(scope="module")
def airflow_db(airflow_home):
    proc = subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
                          env=airflow_env(airflow_home), cwd=airflow_home, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return airflow_home


@pytest.fixture(scope="module")
def scenario(airflow_db, tmp_path_factory):
    """Simulated events (600 users, 10 days to 2026-11-21) and tests/airflow_env.py's scenario:
    score without a champion (fails, then skips when configured), retrain, retrain again,
    score, score the same day again."""
    work = tmp_path_factory.mktemp("dags_e2e")
    (work / "params.yaml").write_text(textwrap.dedent(f"""\
        storage: {{data: {work}/data, reports: {work}/reports, models: {work}/models}}
        simulate: {{n_users: 600, days: 10, end_date: "{DAY}", seed: 11, anomaly_rate: 0.1}}
        ingest: {{source: {work}/raw/events.parquet}}
        features: {{threads: 2}}
        score: {{top_k: 20}}
        warehouse: {{url: "duckdb:///{work}/params-wh.duckdb", experiment_url: "duckdb:///{work}/exp.duckdb"}}
    """))
    warehouse = f"duckdb:///{work}/wh.duckdb"
    env = airflow_env(airflow_db, PIPELINES_PARAMS=str(work / "params.yaml"),
                      AIRFLOW_CONN_PIPELINES_WAREHOUSE=warehouse,  # the connection wins over warehouse.url
                      PIPELINES_TEST_WAREHOUSE_URL=warehouse)
    sim = subprocess.run([sys.executable, "-m", "pipelines", "--params", str(work / "params.yaml"), "simulate",
                          "--events-out", str(work / "raw/events.parquet"),
                          "--labels-out", str(work / "raw/labels.parquet")],
                         env=env, cwd=work, capture_output=True, text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr[-2000:]
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "airflow_env.py"), "scenario", str(work)],
                          env=env, cwd=work, capture_output=True, text=True, timeout=420)
    log = proc.stdout + proc.stderr
    (work / "scenario.log").write_text(log)
    assert proc.returncode == 0, log[-6000:]
    result = json.loads((work / "scenario.json").read_text())
    result.update(log=log, work=work, warehouse=warehouse)
    return result


def _states(phase):
    return {task: info["state"] for task, info in phase["tasks"].items()}


@pytest.mark.slow
def test_scoring_without_a_champion_fails_once_with_the_one_line_reason(scenario):
    phase = scenario["phases"]["no_champion"]
    assert phase["state"] == "failed"
    assert _states(phase) == {"ingest": "success", "clean": "success", "features": "success", "sequences": "success",
                              "score": "failed", "publish": "upstream_failed"}
    assert phase["tasks"]["score"]["try_number"] == 1  # AirflowFailException: not retried
    reason = f"no champion model in {scenario['work']}/models yet: train and promote one first"
    assert f"AirflowFailException: {reason}" in scenario["log"]
    assert f"pipelines step {SCORE}.score for {DAY} (try 1) failed: {reason}" in scenario["log"]


@pytest.mark.slow
def test_scoring_without_a_champion_skips_when_configured(scenario):
    phase = scenario["phases"]["skip_without_champion"]
    assert phase["state"] == "success"
    assert _states(phase)["score"] == "skipped" and _states(phase)["publish"] == "skipped"
    assert phase["warehouse"]["rows"] == 0


@pytest.mark.slow
def test_retraining_promotes_and_publishes_the_champion_asset_only_when_promoted(scenario):
    first, again = scenario["phases"]["retrain"], scenario["phases"]["retrain_again"]
    # ecdf_tail does not want a GPU: the branch skipped train_on_gpu, everything after train_on_cpu ran
    assert first["state"] == "success"
    assert _states(first) == {**{task: "success" for task in RETRAIN_UPSTREAM}, "train_on_gpu": "skipped"}
    assert f"training for {DAY} goes to train_on_cpu: train.detector ecdf_tail does not want a GPU" in scenario["log"]
    # without labels evaluate skips, promote still decides; the same model again is not promoted
    assert again["state"] == "success"
    assert _states(again)["evaluate"] == "skipped" and _states(again)["promote"] == "success"
    assert _states(again)["train_on_cpu"] == "success" and _states(again)["train_on_gpu"] == "skipped"
    assert _states(again)["publish_champion"] == "skipped"
    champions = [e for e in scenario["asset_events"] if e["asset"] == "pipelines_champion"]
    assert len(champions) == 1 and champions[0]["run_id"] == first["run_id"]
    assert champions[0]["extra"]["as_of"] == DAY and champions[0]["extra"]["version"].startswith("ecdf_tail-")
    metrics = json.loads((scenario["work"] / "reports" / f"as_of={DAY}" / "metrics.json").read_text())
    assert metrics["model_version"] == champions[0]["extra"]["version"]  # evaluate ran with the labels Variable


@pytest.mark.slow
def test_scoring_publishes_the_days_rows_once_and_a_rerun_replaces_them(scenario):
    from pipelines.warehouse import read_table

    score, again = scenario["phases"]["score"], scenario["phases"]["score_again"]
    assert score["state"] == again["state"] == "success"
    assert score["warehouse"] == {"rows": 20, "run_ids": [score["run_id"]]}
    # a manual run without a logical date the morning after computes the same day and replaces it
    assert again["warehouse"] == {"rows": 20, "run_ids": [again["run_id"]]}
    assert again["run_id"] != score["run_id"]
    rows = read_table(scenario["warehouse"], "flagged_users")
    assert len(rows) == 20 and {str(d) for d in rows["as_of"]} == {DAY}
    assert not (scenario["work"] / "params-wh.duckdb").exists()  # the connection won over warehouse.url
    events = [e for e in scenario["asset_events"] if e["asset"] == "pipelines_daily_scores"]
    assert [e["run_id"] for e in events] == [score["run_id"], again["run_id"]]
    assert {e["partition_key"] for e in events} == {DAY}
    assert all(e["extra"]["rows"] == 20 and e["extra"]["as_of"] == DAY for e in events)
