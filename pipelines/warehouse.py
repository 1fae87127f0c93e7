"""The flagged_users table: embedded DuckDB by default, PostgreSQL through a SQLAlchemy URL.

Re-scoring a day replaces that day's rows in one transaction, so a reader sees the old rows
or the new ones, never a mix or a gap.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd

from pipelines.errors import UserError
from pipelines.schema import FLAGGED_USERS_COLUMNS

LOCK_WAIT_S = 60.0
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    as_of DATE NOT NULL,
    user_id VARCHAR NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    rank BIGINT NOT NULL,
    reasons VARCHAR,
    anomaly_types VARCHAR,
    model_version VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    scored_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (as_of, user_id)
)"""


def flagged_rows(scores: pd.DataFrame, run_id: str, scored_at: pd.Timestamp) -> pd.DataFrame:
    rows = scores.loc[scores["flagged"]].copy()
    rows["run_id"] = run_id
    rows["scored_at"] = scored_at
    if "anomaly_types" not in rows.columns:
        rows["anomaly_types"] = ""
    return rows[list(FLAGGED_USERS_COLUMNS)].reset_index(drop=True)


def replace_day(rows: pd.DataFrame, url: str, table: str, as_of) -> int:
    """Atomically make `rows` the only rows of `table` for `as_of`. Returns rows written."""
    _check_identifier(table)
    as_of = pd.Timestamp(as_of).date()
    if len(rows) and not (pd.to_datetime(rows["as_of"]).dt.date == as_of).all():
        raise ValueError("every row written for a day must carry that as_of")
    kind, target = parse_url(url)
    if kind == "duckdb":
        return _replace_day_duckdb(rows, target, table, as_of)
    return _replace_day_sqlalchemy(rows, target, table, as_of)


def read_table(url: str, table: str, as_of=None) -> pd.DataFrame:
    _check_identifier(table)
    kind, target = parse_url(url)
    where, args = ("WHERE as_of = ?", [pd.Timestamp(as_of).date()]) if as_of is not None else ("", [])
    query = f"SELECT * FROM {table} {where} ORDER BY as_of, rank"
    if kind == "duckdb":
        if target != ":memory:" and not Path(target).exists():
            raise UserError(f"{target}: warehouse file not found; run the publish step first")
        with _connect_duckdb(target, read_only=True) as con:
            return con.sql(query, params=args).to_arrow_table().to_pandas()
    from sqlalchemy import create_engine, text

    engine = create_engine(target)
    try:
        with engine.connect() as conn:
            params = {"as_of": args[0]} if args else {}
            return pd.read_sql(text(query.replace("?", ":as_of")), conn, params=params)
    finally:
        engine.dispose()


def parse_url(url: str) -> tuple[str, str]:
    """('duckdb', file path) or ('sqlalchemy', URL)."""
    if url.startswith("duckdb:///"):
        return "duckdb", url[len("duckdb:///") :]
    if url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)
        return "sqlalchemy", url
    if "://" not in url:
        return "duckdb", url
    raise UserError(f"warehouse.url {url!r}: use duckdb:///path/file.duckdb or postgresql://user@host/db")


def _check_identifier(table: str) -> None:
    if not _IDENTIFIER.match(table):
        raise UserError(f"warehouse.table {table!r} must be a plain SQL name (letters, digits, underscores)")


def _connect_duckdb(path: str, read_only: bool = False, wait_s: float = LOCK_WAIT_S):
    """DuckDB lets one process write a file at a time: another process that meets the lock
    waits with back-off, then gets a one-line error instead of a traceback."""
    import duckdb

    delay, waited = 0.05, 0.0
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if waited >= wait_s:
                raise UserError(f"{path}: the warehouse file is locked by another process "
                                f"(waited {waited:.0f} s); try again when it has finished") from exc
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 1.0)


def _replace_day_duckdb(rows: pd.DataFrame, path: str, table: str, as_of) -> int:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with _connect_duckdb(path) as con:
        con.execute(_DDL.format(table=table))
        con.register("incoming", rows)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"DELETE FROM {table} WHERE as_of = ?", [as_of])
            con.execute(f"INSERT INTO {table} ({', '.join(FLAGGED_USERS_COLUMNS)}) "
                        f"SELECT {', '.join(FLAGGED_USERS_COLUMNS)} FROM incoming")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return len(rows)


def _replace_day_sqlalchemy(rows: pd.DataFrame, url: str, table: str, as_of) -> int:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(url)
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    placeholders = ", ".join(f":{c}" for c in FLAGGED_USERS_COLUMNS)
    try:
        with engine.begin() as conn:  # one transaction: delete and insert commit together
            conn.execute(text(_DDL.format(table=table)))
            # Two runs of one day at once would each delete only what their snapshot saw and
            # then collide on the primary key: take turns per (table, day) instead.
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"{table}/{as_of}"})
            conn.execute(text(f"DELETE FROM {table} WHERE as_of = :as_of"), {"as_of": as_of})
            if records:
                conn.execute(
                    text(f"INSERT INTO {table} ({', '.join(FLAGGED_USERS_COLUMNS)}) VALUES ({placeholders})"), records
                )
    except OperationalError as exc:
        raise UserError(f"cannot write to the warehouse at {engine.url.render_as_string(hide_password=True)}: "
                        f"{str(exc.orig).splitlines()[0]}") from exc
    finally:
        engine.dispose()
    return len(rows)
