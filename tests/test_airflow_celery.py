"""A real CeleryExecutor deployment on loopback, as a platform team would run it: PostgreSQL
for Airflow's metadata and the warehouse, Redis as the broker, the api-server, scheduler,
dag-processor, a default worker and a `gpu` worker, each its own process started here.

The test triggers retraining then scoring through the REST API v2 (as the UI does), checks
that training ran on the default worker for ecdf_tail and, once the parameters file names an
autoencoder (no new DAG), on the gpu worker, and nothing else ever did; it reads the flagged
users from PostgreSQL, then backfills three days with `airflow backfill create` and reruns one day.
Everything it starts is stopped, on failure too; every wait is bounded.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = ("127.0.0.1", 6379)
DAY = "2026-11-21"
BACKFILL = ("2026-11-18", "2026-11-19", "2026-11-20")
RETRAIN, SCORE = "pipelines_retrain_daily", "pipelines_score_daily"
TOP_K = 15
WORKERS = {"cpu": "cpu-worker-it", "gpu": "gpu-worker-it"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

# Each worker reports its own hostname (both run on this one machine): the task records it.
HOSTNAME_MODULE = '''import os


def hostname():
    return os.environ["PIPELINES_IT_HOSTNAME"]
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_services() -> None:
    """PostgreSQL and Redis must answer: a missing service fails the run, never skips it."""
    for host, port, name in (("127.0.0.1", 5432, "PostgreSQL"), (*REDIS, "Redis")):
        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError as exc:
            pytest.fail(f"{name} not reachable at {host}:{port}: {exc}")


def flush_redis_db(db: str) -> None:
    """Empty the broker database this test used (SELECT is per connection: one connection)."""
    import redis

    redis.Redis(host=REDIS[0], port=REDIS[1], db=int(db), socket_timeout=5).flushdb()


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.meta_db = f"airflow_it_{uuid.uuid4().hex[:10]}"
        self.warehouse_db = f"warehouse_it_{uuid.uuid4().hex[:10]}"
        self.redis_db = str(8 + secrets.randbelow(7))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_hex(8)
        self.token: str | None = None
        # every component must share these, or tokens from one are refused by another
        self.jwt_secret, self.secret_key = secrets.token_hex(32), secrets.token_hex(16)
        self.log_port = free_port()

    # -- set-up ------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        home = self.root / "airflow"
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(self.root / "py"),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "it_hostname.hostname",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.root / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.meta_db}",
            # psycopg 3 serves the async side too (Airflow would otherwise want asyncpg)
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC":
                f"postgresql+psycopg_async://postgres@127.0.0.1:5432/{self.meta_db}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS[0]}:{REDIS[1]}/{self.redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://postgres@127.0.0.1:5432/{self.meta_db}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            # longer than the training task's execution_timeout, or the broker redelivers it
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "10800",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.base,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": self.secret_key,
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            # only the runs this test asks for: no run for "yesterday" when a DAG is unpaused
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_port),
            "PIPELINES_PARAMS": str(self.root / "params.yaml"),
            "WAREHOUSE_URL": f"postgresql://postgres@127.0.0.1:5432/{self.warehouse_db}",
            "PIPELINES_LABELS": str(self.root / "raw" / "labels.parquet"),
            "PIPELINES_IT_HOSTNAME": socket.gethostname(),
            **extra,
        }

    def run(self, *cmd: str, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), env=self.env(), cwd=self.root, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                                 f"{proc.stderr[-3000:]}")
        return proc

    def start(self, name: str, *cmd: str, **env: str) -> None:
        log = open(self.logs / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen(list(cmd), env=self.env(**env), cwd=self.root, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
                         for p in sorted(self.logs.glob("*.log")))

    # -- the REST API v2 -------------------------------------------------------------------
    def api(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, method=method, headers=headers,
                                         data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def wait_for(self, what: str, check, timeout: float, every: float = 3.0):
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited ({proc.returncode}) while waiting for {what}\n{self.tail()}")
            try:
                result = check()
                if result:
                    return result
            except (urllib.error.URLError, ConnectionError, OSError, KeyError) as exc:
                last = exc
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({last})\n{self.tail()}")

    def trigger(self, dag_id: str, conf: dict) -> str:
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def finished(self, dag_id: str, run_id: str, timeout: float = 420) -> str:
        def state():
            s = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            return s if s in ("success", "failed") else None

        return self.wait_for(f"{dag_id} run {run_id}", state, timeout)

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        found = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti for ti in found}

    def task_log(self, dag_id: str, run_id: str, task_id: str) -> str:
        """The task's log files as the workers wrote them under AIRFLOW_HOME/logs."""
        run_dir = self.root / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        files = sorted(run_dir.glob("*.log"))
        assert files, f"no log of {task_id} under {run_dir}"
        return "".join(f.read_text(errors="replace") for f in files)

    def set_train(self, train: dict) -> None:
        """Change the train section of the parameters file every task reads when it runs."""
        params = yaml.safe_load((self.root / "params.yaml").read_text())
        params["train"] = train
        (self.root / "params.yaml").write_text(yaml.safe_dump(params))


def flagged_counts(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute("SELECT CAST(as_of AS TEXT), count(*) FROM flagged_users GROUP BY 1").fetchall()
    return dict(rows)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import psycopg

    require_services()
    c = Cluster(tmp_path_factory.mktemp("celery"))
    (c.root / "py").mkdir()
    (c.root / "py" / "it_hostname.py").write_text(HOSTNAME_MODULE)
    (c.root / "passwords.json").write_text(json.dumps({"admin": c.password}))
    params = {
        "as_of": DAY,
        "storage": {"data": str(c.root / "data"), "reports": str(c.root / "reports"), "models": str(c.root / "models")},
        "simulate": {"n_users": 500, "days": 10, "seed": 3, "end_date": DAY, "anomaly_rate": 0.08},
        "ingest": {"source": str(c.root / "raw" / "events.parquet")},
        "features": {"threads": 1},
        "score": {"top_k": TOP_K},
    }
    (c.root / "params.yaml").write_text(yaml.safe_dump(params))
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{c.meta_db}"')
        admin.execute(f'CREATE DATABASE "{c.warehouse_db}"')
    try:
        c.run(sys.executable, "-m", "pipelines", "simulate", "--events-out", str(c.root / "raw" / "events.parquet"),
              "--labels-out", str(c.root / "raw" / "labels.parquet"))
        c.run("airflow", "db", "migrate", timeout=600)
        c.run(sys.executable, "-m", "pipelines", "warehouse", "migrate")  # the warehouse's schema, once
        c.run("airflow", "pools", "set", "gpu", "1", "GPU training slots")
        c.start("api-server", "airflow", "api-server")
        c.start("scheduler", "airflow", "scheduler")
        c.start("dag-processor", "airflow", "dag-processor")
        c.start("worker-cpu", "airflow", "celery", "worker", "-q", "default", "--celery-hostname",
                f"{WORKERS['cpu']}@%h", "--concurrency", "1", PIPELINES_IT_HOSTNAME=WORKERS["cpu"],
                AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()))
        c.start("worker-gpu", "airflow", "celery", "worker", "-q", "gpu", "--celery-hostname",
                f"{WORKERS['gpu']}@%h", "--concurrency", "1", PIPELINES_IT_HOSTNAME=WORKERS["gpu"],
                AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()))

        def login():
            c.token = c.api("POST", "/auth/token", {"username": "admin", "password": c.password}, auth=False)["access_token"]
            return c.token

        c.wait_for("the api-server to accept a login", login, timeout=180)
        for dag_id in (RETRAIN, SCORE):
            c.wait_for(f"{dag_id} to be parsed", lambda d=dag_id: c.api("GET", f"/api/v2/dags/{d}")["dag_id"], 240)
            c.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        yield c
    finally:
        c.stop()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            for db in (c.meta_db, c.warehouse_db):
                admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        flush_redis_db(c.redis_db)


def retrain(cluster) -> dict[str, dict]:
    run_id = cluster.trigger(RETRAIN, {"as_of": DAY})
    state = cluster.finished(RETRAIN, run_id)
    tis = cluster.task_instances(RETRAIN, run_id)
    assert state == "success", {k: v["state"] for k, v in tis.items()}
    for ti in tis.values():
        ti["run_id"] = run_id
    return tis


def test_training_goes_to_the_worker_its_detector_wants_and_scoring_publishes(cluster):
    # ecdf_tail (the parameters file's detector) does not want a GPU: everything on the default worker
    tis = retrain(cluster)
    assert tis["train_on_gpu"]["state"] == "skipped"
    ran = {k: v for k, v in tis.items() if v["state"] == "success"}
    assert ran["train_on_cpu"]["queue"] == "default" and ran["train_on_cpu"]["pool"] == "default_pool"
    assert {"choose_training_worker", "train_on_cpu", "promote"} <= set(ran)
    assert {v["hostname"] for v in ran.values()} == {WORKERS["cpu"]}
    log = cluster.task_log(RETRAIN, tis["train_on_cpu"]["run_id"], "choose_training_worker")
    assert "goes to train_on_cpu: train.detector ecdf_tail does not want a GPU" in log

    # the same DAG, another detector in the parameters file: the autoencoder trains on the gpu worker
    cluster.set_train({"detector": "autoencoder", "autoencoder": {"epochs": 2, "progress": False}})
    tis = retrain(cluster)
    assert tis["train_on_cpu"]["state"] == "skipped"
    ran = {k: v for k, v in tis.items() if v["state"] == "success"}
    assert ran["train_on_gpu"]["hostname"] == WORKERS["gpu"] and ran["train_on_gpu"]["queue"] == "gpu"
    assert ran["train_on_gpu"]["pool"] == "gpu"
    others = {k: v["hostname"] for k, v in ran.items() if k != "train_on_gpu"}
    assert {"choose_training_worker", "promote"} <= set(others) and set(others.values()) == {WORKERS["cpu"]}, others
    log = cluster.task_log(RETRAIN, tis["train_on_gpu"]["run_id"], "choose_training_worker")
    assert "goes to train_on_gpu: train.detector autoencoder wants a GPU (train.device auto)" in log

    run_id = cluster.trigger(SCORE, {"as_of": DAY})
    assert cluster.finished(SCORE, run_id) == "success"
    tis = cluster.task_instances(SCORE, run_id)
    assert {v["hostname"] for v in tis.values() if v["state"] == "success"} == {WORKERS["cpu"]}
    url = cluster.env()["WAREHOUSE_URL"]
    assert flagged_counts(url)[DAY] == TOP_K


def test_backfill_three_days_then_rerun_one(cluster):
    if DAY not in flagged_counts(cluster.env()["WAREHOUSE_URL"]):
        pytest.fail("needs the champion and the day published by the previous test")
    cluster.run("airflow", "backfill", "create", "--dag-id", SCORE, "--from-date", BACKFILL[0], "--to-date",
                BACKFILL[-1], "--max-active-runs", "1")

    def backfilled():
        runs = cluster.api("GET", f"/api/v2/dags/{SCORE}/dagRuns?run_type=backfill&limit=50")["dag_runs"]
        done = [r for r in runs if r["state"] in ("success", "failed")]
        return runs if len(runs) == len(BACKFILL) and len(done) == len(runs) else None

    runs = cluster.wait_for("the three backfilled days", backfilled, timeout=600)
    assert {r["state"] for r in runs} == {"success"}, [(r["logical_date"], r["state"]) for r in runs]
    url = cluster.env()["WAREHOUSE_URL"]
    counts = flagged_counts(url)
    assert {day: counts.get(day) for day in BACKFILL} == {day: TOP_K for day in BACKFILL}
    for day in BACKFILL:
        assert (cluster.root / "data" / "scores" / f"as_of={day}" / "scores.parquet").exists()

    again = cluster.trigger(SCORE, {"as_of": BACKFILL[1]})
    assert cluster.finished(SCORE, again) == "success"
    assert flagged_counts(url) == counts
