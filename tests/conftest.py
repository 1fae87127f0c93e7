"""Shared fixtures: hand-built typed event logs, a small simulated data set, warehouse rows,
and a throwaway PostgreSQL database for the warehouse tests."""
from __future__ import annotations

import os
import socket
import uuid
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest

from pipelines.schema import EVENT_DTYPES, FLAGGED_USERS_COLUMNS

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# A step slower than PIPELINES_PROGRESS_SECONDS (30 s) says so at INFO off a terminal: on a
# loaded CI machine that would add lines to the stderr that tests hold to one line or compare
# between runs. Tests of progress set their own.
os.environ.setdefault("PIPELINES_PROGRESS_SECONDS", "3600")

# The as-of day of the hand-built logs; `at(days_before, hour)` places an event relative to it.
AS_OF = pd.Timestamp("2024-03-10", tz="UTC")


def _typed_events(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows (dicts with at least event_time, user_id, event_type) -> a frame shaped like clean()'s
    output: every contract column, the schema's dtypes, a unique event_id per row."""
    df = pd.DataFrame(rows).reindex(columns=list(EVENT_DTYPES))
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    df["quantity"] = df["quantity"].fillna(1)
    df = df.astype(EVENT_DTYPES)
    df["event_id"] = pd.Series([f"ev{i}" for i in range(len(df))], dtype="str")
    return df


@pytest.fixture
def make_events() -> Callable[[list[dict[str, Any]]], pd.DataFrame]:
    return _typed_events


@pytest.fixture
def at() -> Callable[..., pd.Timestamp]:
    """at(days_before_as_of, hour=12, minute=0) -> a UTC timestamp relative to AS_OF."""

    def _at(days_before: float, hour: float = 12, minute: float = 0) -> pd.Timestamp:
        return AS_OF - pd.Timedelta(days=days_before) + pd.Timedelta(hours=hour, minutes=minute)

    return _at


@pytest.fixture
def as_of() -> str:
    return AS_OF.date().isoformat()


# --- a small simulated data set (session-scoped: built once; tests must not mutate it) ---------


@pytest.fixture(scope="session")
def sim() -> tuple[pd.DataFrame, pd.DataFrame]:
    from pipelines.simulate import simulate

    return simulate({"n_users": 600, "days": 10, "seed": 11, "end_date": "2026-11-21", "anomaly_rate": 0.1})


@pytest.fixture(scope="session")
def sim_clean(sim) -> pd.DataFrame:
    from pipelines.clean import clean

    clean_events, _, report = clean(sim[0])
    assert report["identity_holds"]
    return clean_events


@pytest.fixture(scope="session")
def sim_features(sim_clean) -> pd.DataFrame:
    from pipelines.features import build_features

    return build_features(sim_clean, {"threads": 2})


# --- a synthetic feature matrix for detector tests --------------------------------------------


@pytest.fixture(scope="session")
def normal_features() -> pd.DataFrame:
    """400 ordinary users on a handful of features named like the real ones (several windows of
    one base signal included), no user far from the rest."""
    rng = np.random.default_rng(1234)
    n = 400
    return pd.DataFrame(
        {
            "n_view_1d": rng.poisson(5, n).astype("float64"),
            "n_view_7d": rng.poisson(30, n).astype("float64"),
            "refund_ratio_28d": rng.beta(1, 20, n),
            "distinct_devices_28d": rng.integers(1, 3, n).astype("float64"),
            "typical_gap_s_1d": rng.lognormal(8, 0.4, n),
            "account_age_days": rng.uniform(30, 400, n),
        }
    )


# --- warehouse rows -----------------------------------------------------------------------------


def _flagged(day: str, users: list[str], run_id: str, score0: float = 10.0) -> pd.DataFrame:
    n = len(users)
    return pd.DataFrame(
        {
            "as_of": [pd.Timestamp(day).date()] * n,
            "user_id": pd.Series(users, dtype="str"),
            "score": [score0 - i for i in range(n)],
            "rank": np.arange(1, n + 1, dtype="int64"),
            "reasons": [f"refund_ratio_28d={i} (p99.9)" for i in range(n)],
            "anomaly_types": ["refund_abuse"] * n,
            "model_version": ["robust_zscore-abc"] * n,
            "run_id": [run_id] * n,
            "scored_at": [pd.Timestamp("2024-03-11T06:00:00Z")] * n,
        }
    )[list(FLAGGED_USERS_COLUMNS)]


@pytest.fixture
def flagged() -> Callable[..., pd.DataFrame]:
    """flagged(day, users, run_id) -> rows shaped like warehouse.flagged_rows' output."""
    return _flagged


# --- PostgreSQL: one throwaway database per test session ----------------------------------------


@pytest.fixture(scope="session")
def pg_url():
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        # a service the tests need is down: fail loudly, never skip (CI must not pass without it)
        pytest.fail(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {str(exc).splitlines()[0]}")
    name = f"pipelines_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- s3:// through a local moto server (loopback only) ----------------------------------------


@pytest.fixture
def s3(monkeypatch, tmp_path):
    """A bucket `events` on a moto S3 server on 127.0.0.1, with boto3 and s3fs pointed at it (through
    AWS_ENDPOINT_URL). Yields a boto3 S3 client for arranging and inspecting objects."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto keeps its buckets in this process across servers: start every test from an empty store
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST"), timeout=10)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    import boto3
    import s3fs

    # fsspec caches filesystems by their arguments: no client may outlive the server it points at
    clear_s3fs_cache = s3fs.S3FileSystem.clear_instance_cache
    clear_s3fs_cache()
    client = boto3.client("s3")
    client.create_bucket(Bucket="events")
    try:
        yield client
    finally:
        clear_s3fs_cache()
        server.stop()


