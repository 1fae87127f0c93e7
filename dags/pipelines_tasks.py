"""Task plumbing shared by the pipelines DAGs (retrain_daily.py, score_daily.py).

Each task is a thin call of one step function of pipelines/stages.py, the same functions DVC
and `python -m pipelines` run; between tasks only small dicts and paths travel (XCom), never
data. This module is not a DAG file (.airflowignore keeps the DAG processor from parsing it);
the DAG files import it from the DAGs folder, which Airflow puts on sys.path.

Importing it must stay cheap: only the standard library and the Task SDK at the top. The
pipeline (pandas, DuckDB, Great Expectations, torch) is imported inside the tasks.

    run date    the DAG run's `as_of` param when given, else the last UTC day that had ended at
                the run's data_interval_end (scheduled and backfilled runs: their interval's
                day), else at its run_after (manual runs without a logical date)
    parameters  the file named by $PIPELINES_PARAMS or Variable pipelines_params_path, else
                ./params.yaml, else the schema's defaults (pipelines.config.load_params)
    overrides   storage.data / storage.reports / storage.models / ingest.source from
                $PIPELINES_STORAGE_DATA ... or the Variables pipelines_storage_data ...
    labels      $PIPELINES_LABELS or Variable pipelines_labels (optional)
    warehouse   $WAREHOUSE_URL, else connection pipelines_warehouse, else warehouse.url
    S3          boto's chain (AWS_* variables, AWS_PROFILE, instance role); else, at task start,
                the Airflow connection $PIPELINES_AWS_CONN_ID / Variable pipelines_aws_conn_id
                (default aws_default) when it exists: login/password are the key pair, extra
                aws_session_token, region_name and endpoint_url (export_aws_connection)
    no champion $PIPELINES_SKIP_WITHOUT_CHAMPION / Variable pipelines_skip_without_champion
                true: scoring skips; otherwise it fails with the one-line reason
    training    choose_training_worker reads the same parameters when the run gets there and
                sends training to the gpu queue when train.detector wants a GPU
                (Detector.wants_gpu_for: the deep detectors, an ensemble with a deep member)
                and train.device is not cpu; otherwise to the default queue

The environment wins over Variables, as in Airflow's own secrets search path.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

log = logging.getLogger("pipelines.airflow")

OWNER = "fraud-pipelines"
# Training of a detector that wants a GPU runs only on Celery workers listening on this queue
# (`airflow celery worker -q gpu`), and at most as many at once as the pool has slots
# (`airflow pools set gpu 1 "GPU training slots"`); any other training runs on the default queue.
GPU_QUEUE = "gpu"
GPU_POOL = "gpu"
TRAIN_TIMEOUT = dt.timedelta(hours=2)  # the Celery visibility timeout must be longer than this

# One run per UTC day, at midnight, for the day that just ended: the run's data interval is
# [D 00:00, D+1 00:00) and its logical date is D, so `airflow backfill create --from-date D1
# --to-date D2` runs exactly the days D1..D2.
DAILY = CronDataIntervalTimetable("0 0 * * *", timezone="UTC")
START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

# A manual run can name its day: `airflow dags trigger <dag> --conf '{"as_of": "2026-11-21"}'`,
# or the field of the UI's trigger form.
RUN_PARAMS = {
    "as_of": Param(
        None,
        type=["null", "string"],
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        title="Run date (optional)",
        description="The UTC day to compute, YYYY-MM-DD. Empty: the day that ended before the run's "
                    "data interval end (or, without one, before the run was triggered).",
    ),
}

# Published when the gate promotes a model (extra: version, as_of, registry), and when a day's
# flagged users are in the warehouse (partition key: the day; extra: rows, table, scores path).
CHAMPION = Asset(name="pipelines_champion", uri="x-pipelines://registry/champion", group="pipelines")
SCORES = Asset(name="pipelines_daily_scores", uri="x-pipelines://scores", group="pipelines")


@dataclass(frozen=True)
class Setting:
    env: str
    variable: str


SETTINGS = {
    "params": Setting("PIPELINES_PARAMS", "pipelines_params_path"),
    "storage.data": Setting("PIPELINES_STORAGE_DATA", "pipelines_storage_data"),
    "storage.reports": Setting("PIPELINES_STORAGE_REPORTS", "pipelines_storage_reports"),
    "storage.models": Setting("PIPELINES_STORAGE_MODELS", "pipelines_storage_models"),
    "ingest.source": Setting("PIPELINES_INGEST_SOURCE", "pipelines_ingest_source"),
    "labels": Setting("PIPELINES_LABELS", "pipelines_labels"),
    "skip_without_champion": Setting("PIPELINES_SKIP_WITHOUT_CHAMPION", "pipelines_skip_without_champion"),
    "aws_conn_id": Setting("PIPELINES_AWS_CONN_ID", "pipelines_aws_conn_id"),
}
AWS_CONN_ID = "aws_default"  # the Amazon provider's default id, so an existing connection is found
WAREHOUSE_CONN_ID = "pipelines_warehouse"
_TRUE = {"1", "true", "yes", "on"}


# ----------------------------------------------------------------------------- failures


def one_line(exc: BaseException | str | None) -> str:
    """The first line of an error, with any user:password@ in a URL replaced by ***@."""
    if exc is None:
        return "unknown reason"
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, BaseException) and not isinstance(exc, (AirflowFailException, AirflowSkipException)):
        first = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return re.sub(r"(\b[a-zA-Z][\w+.-]*://)[^/\s@]+@", r"\1***@", first) or "unknown reason"


@contextlib.contextmanager
def airflow_errors() -> Iterator[None]:
    """A pipelines UserError (bad data or configuration) fails the task at once with its one-line
    message (AirflowFailException: no retry, the reason shows in the UI); anything else (a
    database or S3 that cannot be reached, ...) propagates and Airflow retries with back-off."""
    from pipelines.errors import UserError

    try:
        yield
    except UserError as exc:
        raise AirflowFailException(one_line(str(exc))) from None


def _run_date_or_unknown(context: dict) -> str:
    try:
        return run_date(context)
    except Exception:  # noqa: BLE001 - a callback must not fail
        return "an unknown date"


def _describe(context: dict) -> str:
    ti = context.get("task_instance") or context.get("ti")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", None) or getattr(context.get("task"), "task_id", "?")
    return f"{dag_id}.{task_id} for {_run_date_or_unknown(context)} (try {getattr(ti, 'try_number', '?')})"


def log_failure(context: dict) -> None:
    """on_failure_callback: one line with the step, the run date and the reason."""
    log.error("pipelines step %s failed: %s", _describe(context), one_line(context.get("exception")))


def log_retry(context: dict) -> None:
    """on_retry_callback: the same line for a failure Airflow will retry."""
    log.warning("pipelines step %s will be retried: %s", _describe(context), one_line(context.get("exception")))


DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,  # 2 min, then 4 min
    "max_retry_delay": dt.timedelta(minutes=30),
    "on_failure_callback": log_failure,
    "on_retry_callback": log_retry,
}


# ----------------------------------------------------------------------------- date and configuration


def run_date(context: dict) -> str:
    """The ISO day a run computes (see the module docstring)."""
    chosen = (context.get("params") or {}).get("as_of")
    if chosen:
        try:
            return dt.date.fromisoformat(str(chosen).strip()).isoformat()
        except ValueError:
            raise AirflowFailException(f"as_of must be a day like 2026-11-21, not {chosen!r}") from None
    end = context.get("data_interval_end")
    if end is None:
        end = getattr(context.get("dag_run"), "run_after", None)
    if end is None:
        raise AirflowFailException("no run date: the run has neither a data interval nor run_after; "
                                   "pass as_of in the run's conf")
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.timezone.utc)
    return (end.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()


def _variable(name: str) -> str | None:
    from airflow.sdk import Variable

    return Variable.get(name, default=None)


def setting(name: str) -> str | None:
    """A configured value: the environment variable, else the Airflow Variable, else None."""
    s = SETTINGS[name]
    value = os.environ.get(s.env)
    if value is None or not value.strip():
        value = _variable(s.variable)
    value = None if value is None else str(value).strip()
    return value or None


def warehouse_url() -> str | None:
    """None when $WAREHOUSE_URL is set (pipelines.config reads it itself) or no connection
    pipelines_warehouse exists (then warehouse.url of the parameters applies)."""
    if os.environ.get("WAREHOUSE_URL"):
        return None
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(WAREHOUSE_CONN_ID)
    except AirflowNotFoundException:
        return None
    return connection_url(conn)


def connection_url(conn: Any) -> str:
    """The warehouse URL of an Airflow connection: its extra `url` if set; a DuckDB file for
    conn_type duckdb (`duckdb:////abs/path.duckdb`); otherwise its URI (postgres://...)."""
    url = (conn.extra_dejson or {}).get("url")
    if url:
        return str(url)
    if conn.conn_type == "duckdb":
        return "duckdb:///" + "/".join(p for p in (conn.host, conn.schema) if p)
    return conn.get_uri()


def aws_environment(conn: Any) -> dict[str, str]:
    """boto's environment variables for an Airflow AWS connection, named as the Amazon provider
    names them (login/password, or extra aws_access_key_id/aws_secret_access_key; extra
    aws_session_token, region_name, endpoint_url, profile_name), so the same connection serves
    both. Only what the connection sets."""
    extra = conn.extra_dejson or {}
    pairs = {
        "AWS_ACCESS_KEY_ID": conn.login or extra.get("aws_access_key_id"),
        "AWS_SECRET_ACCESS_KEY": conn.password or extra.get("aws_secret_access_key"),
        "AWS_SESSION_TOKEN": extra.get("aws_session_token"),
        "AWS_DEFAULT_REGION": extra.get("region_name"),
        "AWS_ENDPOINT_URL": extra.get("endpoint_url"),
        "AWS_PROFILE": extra.get("profile_name"),
    }
    return {k: str(v) for k, v in pairs.items() if v}


_AWS_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def export_aws_connection() -> list[str]:
    """Put the AWS connection's settings in this task's environment, where boto3, s3fs and DVC
    read them; returns the variables set (names only: values are never logged).

    The environment wins, as for every setting: credentials already there (a key pair or a
    profile) are kept whole rather than mixed with the connection's, and an endpoint or region
    already set stays. No connection: boto's own chain (profile, instance role) applies."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    conn_id = setting("aws_conn_id") or AWS_CONN_ID
    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        return []
    wanted = aws_environment(conn)
    if any(os.environ.get(k) for k in _AWS_CREDENTIALS):
        wanted = {k: v for k, v in wanted.items() if k not in _AWS_CREDENTIALS}
    exported = sorted(k for k in wanted if not os.environ.get(k))
    for key in exported:
        os.environ[key] = wanted[key]
    if exported:
        if "s3fs" in sys.modules:  # a client built before this would keep the old settings
            sys.modules["s3fs"].S3FileSystem.clear_instance_cache()
        log.info("S3 settings from Airflow connection %s: %s", conn_id, ", ".join(exported))
    return exported


@dataclass(frozen=True)
class RunConfig:
    as_of: str
    params: dict[str, Any] = field(repr=False)
    params_source: str
    run_id: str
    labels: str | None = None
    skip_without_champion: bool = False
    warehouse_url: str | None = field(default=None, repr=False)
    context: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_context(cls, context: Any) -> "RunConfig":
        from pipelines.config import load_params, override

        path = setting("params")
        params = load_params(path, required=False)
        source = path or ("params.yaml" if os.path.exists("params.yaml") else "built-in defaults")
        for key in ("storage.data", "storage.reports", "storage.models", "ingest.source"):
            value = setting(key)
            if value:
                params = override(params, key, value, source=f"{SETTINGS[key].env}/{SETTINGS[key].variable}")
        return cls(
            as_of=run_date(context),
            params=params,
            params_source=source,
            run_id=str(context.get("run_id") or ""),
            labels=setting("labels"),
            skip_without_champion=(setting("skip_without_champion") or "").lower() in _TRUE,
            warehouse_url=warehouse_url(),
            context=context,
        )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def pipeline_step(fn: Callable[..., dict]) -> Callable[..., dict]:
    """Run `fn(cfg, *upstream_results)` for the current task: resolve the run date and the
    configuration, map a UserError to AirflowFailException, return a JSON-able dict."""

    @functools.wraps(fn)
    def run(*args: Any) -> dict:
        from pipelines import progress  # the step, run date and run id in every pipelines log line

        context = get_current_context()
        with airflow_errors():
            export_aws_connection()
            cfg = RunConfig.from_context(context)
            with progress.context(step=fn.__name__.removesuffix("_step"), as_of=cfg.as_of, run_id=cfg.run_id,
                                  embed=True):
                log.info("%s for %s, parameters from %s", fn.__name__, cfg.as_of, cfg.params_source)
                result = _jsonable(fn(cfg, *args))
                log.info("%s: %s", fn.__name__, result)
        return result

    return run


# ----------------------------------------------------------------------------- the steps


def _stages():
    from pipelines import stages  # pandas, DuckDB, GX: only where a task runs

    return stages


@pipeline_step
def ingest_step(cfg: RunConfig) -> dict:
    return _stages().ingest_stage(cfg.params, cfg.as_of)


@pipeline_step
def clean_step(cfg: RunConfig) -> dict:
    return _stages().clean_stage(cfg.params, cfg.as_of)


@pipeline_step
def features_step(cfg: RunConfig) -> dict:
    return _stages().features_stage(cfg.params, cfg.as_of)


@pipeline_step
def sequences_step(cfg: RunConfig) -> dict:
    return _stages().sequences_stage(cfg.params, cfg.as_of)


@pipeline_step
def train_step(cfg: RunConfig) -> dict:
    return _stages().train_stage(cfg.params, cfg.as_of, labels=cfg.labels)


def training_worker(params: dict[str, Any]) -> tuple[str, str]:
    """("gpu" or "cpu", why) for training with these parameters: gpu when train.detector wants a
    GPU for them (Detector.wants_gpu_for) and train.device is not cpu. Looking the class up
    imports the detector's module, never torch (the deep detectors import it inside methods)."""
    from pipelines.config import section
    from pipelines.detectors import get_detector_class

    train = section(params, "train")
    name, device = train["detector"], train["device"]
    wants = get_detector_class(name).wants_gpu_for(train)
    if wants and device == "cpu":
        return "cpu", f"train.detector {name} wants a GPU, but train.device is cpu"
    if wants:
        return "gpu", f"train.detector {name} wants a GPU (train.device {device})"
    return "cpu", f"train.detector {name} does not want a GPU"


def trained_model(*results: dict | None) -> dict:
    """The result of whichever training task ran (the other one was skipped by the branch)."""
    ran = [r for r in results if r]
    if len(ran) != 1:
        raise AirflowFailException(f"expected the result of exactly one training task, got {len(ran)}")
    return ran[0]


@pipeline_step
def evaluate_step(cfg: RunConfig, trained: dict) -> dict:
    if not cfg.labels:
        raise AirflowSkipException(f"no labels configured ({SETTINGS['labels'].env} or Variable "
                                   f"{SETTINGS['labels'].variable}): nothing to evaluate")
    return _stages().evaluate_stage(cfg.params, cfg.as_of, cfg.labels, model=trained["model_version"])


@pipeline_step
def promote_step(cfg: RunConfig, trained: dict) -> dict:
    return _stages().promote_stage(cfg.params, cfg.as_of, candidate=trained["model_version"], labels=cfg.labels)


def announce_champion(decision: dict, context: Any = None) -> dict:
    """Emit the champion Asset event only when the gate promoted; otherwise skip (no event)."""
    if not decision.get("promoted"):
        raise AirflowSkipException(f"not promoted: {decision.get('reason')}")
    context = context or get_current_context()
    event = {"version": decision["champion_after"], "as_of": decision["as_of"],
             "replaced": decision.get("champion_before"), "reason": decision.get("reason")}
    context["outlet_events"][CHAMPION].extra = event
    log.info("champion %s published for %s", event["version"], event["as_of"])
    return event


@pipeline_step
def score_step(cfg: RunConfig) -> dict:
    if cfg.skip_without_champion:
        from pipelines.layout import Layout
        from pipelines.registry import Registry

        models = Layout.from_params(cfg.params).models
        if Registry(models).champion_version(required=False) is None:
            raise AirflowSkipException(f"no champion model in {models} yet; skipped because "
                                       f"{SETTINGS['skip_without_champion'].env} is true")
    params = cfg.params
    if cfg.labels:  # the run report adds the labelled evaluation
        from pipelines.config import override

        params = override(params, "report.labels", cfg.labels, source=SETTINGS["labels"].env)
    # without a champion score_stage raises UserError("no champion model in ... yet: ...")
    info = _stages().score_stage(params, cfg.as_of)
    log.info("run report for %s: %s (drift: %s)", cfg.as_of, report_link(info["report"]), info["drift"])
    return info


def report_link(path: str) -> str:
    """Where the day's run report opens: a file:// URL for a local path, else the s3:// URI."""
    if "://" in path:
        return path
    return "file://" + os.path.abspath(path)


@pipeline_step
def publish_step(cfg: RunConfig, scored: dict) -> dict:
    info = _stages().publish_stage(cfg.params, cfg.as_of, scores_in=scored["out"], run_id=cfg.run_id,
                                   url=cfg.warehouse_url)
    event = cfg.context["outlet_events"][SCORES]
    event.extra = {"as_of": info["as_of"], "rows": info["rows"], "table": info["table"],
                   "warehouse": info["warehouse"], "scores": scored["out"], "model_version": scored["model_version"]}
    event.add_partitions(info["as_of"])
    return info


# ----------------------------------------------------------------------------- the tasks
# Each DAG calls these inside its own context, so both DAGs share one definition per step.


@task(task_id="ingest")
def ingest() -> dict:
    """Read the events source (ingest.source) into the day's partition; GX suite `raw`."""
    return ingest_step()


@task(task_id="clean")
def clean() -> dict:
    """Coerce types, drop exact duplicates, quarantine bad rows; GX suite `clean`."""
    return clean_step()


@task(task_id="features")
def features() -> dict:
    """Per-user features as of the end of the day (DuckDB); GX suite `features`."""
    return features_step()


@task(task_id="sequences")
def sequences() -> dict:
    """Each user's last events as tokens, for a sequence detector (DuckDB); GX suite `sequences`.
    Built every day, whatever the detector: the champion that scores may read them."""
    return sequences_step()


TRAIN_TASKS = {"gpu": "train_on_gpu", "cpu": "train_on_cpu"}
# after the branch one training task is skipped: the tasks after it run when nothing failed and
# something (the training that ran) succeeded
AFTER_TRAINING = "none_failed_min_one_success"


@task.branch(task_id="choose_training_worker")
def choose_training_worker() -> str:
    """Send training to the gpu queue or the default one, by the parameters of this run."""
    context = get_current_context()
    with airflow_errors():
        cfg = RunConfig.from_context(context)
        worker, why = training_worker(cfg.params)
    log.info("training for %s goes to %s: %s (parameters from %s)", cfg.as_of, TRAIN_TASKS[worker], why,
             cfg.params_source)
    return TRAIN_TASKS[worker]


@task(execution_timeout=TRAIN_TIMEOUT)
def train() -> dict:
    """Fit the configured detector and register it as a new version."""
    return train_step()


# one definition, two placements: the branch picks one, the other is skipped
train_on_gpu = train.override(task_id=TRAIN_TASKS["gpu"], queue=GPU_QUEUE, pool=GPU_POOL)
train_on_cpu = train.override(task_id=TRAIN_TASKS["cpu"])


@task(task_id="evaluate", trigger_rule=AFTER_TRAINING)
def evaluate(on_gpu: dict | None, on_cpu: dict | None) -> dict:
    """Held-out metrics of the new version; skipped when no labels are configured."""
    return evaluate_step(trained_model(on_gpu, on_cpu))


@task(task_id="promote", trigger_rule=AFTER_TRAINING)
def promote(on_gpu: dict | None, on_cpu: dict | None) -> dict:
    """The gate: the new version against the champion (runs when evaluate was skipped too)."""
    return promote_step(trained_model(on_gpu, on_cpu))


@task(task_id="publish_champion", outlets=[CHAMPION])
def publish_champion(decision: dict) -> dict:
    """The champion Asset event, only when the gate promoted; skipped otherwise."""
    return announce_champion(decision)


@task(task_id="score")
def score() -> dict:
    """Score, rank, explain and flag the day's users with the champion; GX suite `scores`.
    Also measures drift against the champion's training data and writes the day's run report
    (its path is in the task's log and in the result, key `report`)."""
    return score_step()


@task(task_id="publish", outlets=[SCORES])
def publish(scored: dict) -> dict:
    """Replace the day's rows of the flagged-users table in one transaction; the day's
    partition of the scores Asset."""
    return publish_step(scored)
