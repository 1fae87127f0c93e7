"""The warehouse for real deployments, against this machine's PostgreSQL (a throwaway database,
see conftest.pg_url; these tests fail, never skip, when it does not answer): migrations from
empty and from the schema the old code made, roles (owner, writer, reader), a writer killed
mid-load, reserved-word names, passwords kept out of messages, transient vs configuration
errors, the CLI, and the whole pipeline published to PostgreSQL. DuckDB's counterparts
(self-migration, the cross-process lock) are here too."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import warehouse
from pipelines.errors import TransientWarehouseError, UserError
from pipelines.schema import FLAGGED_USERS_COLUMNS
from pipelines.stages import publish_stage, redact
from pipelines.warehouse import MIGRATIONS, Target, grant_reader, grant_writer, migrate, read_table, replace_day

import psycopg  # noqa: E402  a pinned dependency: a missing one fails the run, never skips it

D1, D2 = "2024-03-10", "2024-03-11"
REPO = Path(__file__).resolve().parents[1]
ALL = [f"{m.version:04d}_{m.name}" for m in MIGRATIONS if m.option is None]

# the DDL pipelines.warehouse ran before migrations, on every write, verbatim
OLD_DDL = """
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


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def pg(url: str):
    return psycopg.connect(url, autocommit=True)


def day(url: str, table: str, as_of: str, schema: str = "public") -> dict[str, str]:
    with pg(url) as con:
        return dict(con.execute(f'SELECT user_id, run_id FROM "{schema}"."{table}" WHERE as_of = %s',
                                [pd.Timestamp(as_of).date()]).fetchall())


def as_user(pg_url: str, role: str) -> str:
    return pg_url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# --- migrations ---------------------------------------------------------------------------------


def test_migrate_from_empty_creates_the_table_indexes_and_view_and_records_them(pg_url, flagged):
    schema = unique("wh")
    target = Target(pg_url, "flagged_users", schema)
    result = migrate(target)
    assert result["applied"] == ALL and result["schema"] == schema
    with pg(pg_url) as con:
        recorded = con.execute(f'SELECT version, name FROM "{schema}".schema_migrations WHERE subject = %s '
                               f'ORDER BY version', ["flagged_users"]).fetchall()
        assert [f"{v:04d}_{n}" for v, n in recorded] == ALL
        columns = [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "ORDER BY ordinal_position", [schema, "flagged_users"]).fetchall()]
        assert tuple(columns) == FLAGGED_USERS_COLUMNS
        pk = con.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                         "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
                         [f'"{schema}".flagged_users']).fetchall()
        assert {r[0] for r in pk} == {"as_of", "user_id"}
        indexes = {r[0] for r in con.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s", [schema])}
        for cols in ("(as_of, rank)", "(user_id, as_of)", "(score)"):
            assert any(cols in d for d in indexes), (cols, indexes)
        assert con.execute("SELECT count(*) FROM pg_views WHERE schemaname = %s AND viewname = %s",
                           [schema, "flagged_users_latest"]).fetchone()[0] == 1
        assert con.execute("SELECT to_regclass(%s)", [f'"{schema}".user_scores']).fetchone()[0] is None
    assert migrate(target)["applied"] == []  # idempotent
    # the optional table is a migration of its own, applied when switched on
    assert migrate(Target(pg_url, "flagged_users", schema, user_scores=True))["applied"] == [
        "0004_user_scores", "0007_user_scores_by_day", "0010_user_scores_days_schema"]
    with pg(pg_url) as con:  # both tables partitioned by day (a partition per day, swapped in)
        kinds = con.execute("SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = "
                            "c.relnamespace WHERE n.nspname = %s AND c.relname IN ('flagged_users', "
                            "'user_scores')", [schema]).fetchall()
        assert sorted(kinds) == [("flagged_users", "p"), ("user_scores", "p")]

    replace_day(flagged(D1, ["a", "b"], "r1"), pg_url, "flagged_users", D1, schema=schema)
    replace_day(flagged(D2, ["a"], "r2"), pg_url, "flagged_users", D2, schema=schema)
    latest = read_table(pg_url, "flagged_users_latest", schema=schema)  # the view: the newest day per user
    assert dict(zip(latest["user_id"], latest["run_id"])) == {"a": "r2", "b": "r1"}


def test_migrate_adopts_a_table_made_by_the_old_code(pg_url, flagged):
    table = unique("flagged")
    with pg(pg_url) as con:  # what the old publish did: DDL, then plain inserts
        con.execute(OLD_DDL.format(table=table))
        con.execute(f"INSERT INTO {table} VALUES (DATE '{D1}', 'old_user', 5.0, 1, 'x=1 (p99.0)', '', 'm', 'old', "
                    f"TIMESTAMPTZ '2024-03-11 06:00:00+00')")
    with pytest.raises(UserError, match=r"pending migrations: 0001_flagged_users.*python -m pipelines warehouse migrate"):
        replace_day(flagged(D2, ["n"], "new"), pg_url, table, D2)
    assert migrate(Target(pg_url, table))["applied"] == ALL
    assert day(pg_url, table, D1) == {"old_user": "old"}  # nothing lost
    replace_day(flagged(D2, ["n"], "new"), pg_url, table, D2)
    assert day(pg_url, table, D2) == {"n": "new"} and day(pg_url, table, D1) == {"old_user": "old"}
    assert set(read_table(pg_url, f"{table}_latest")["user_id"]) == {"old_user", "n"}


def test_duckdb_default_migrates_itself_and_adopts_an_old_file(tmp_path, flagged):
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(OLD_DDL.format(table="flagged_users"))
        con.execute(f"INSERT INTO flagged_users VALUES (DATE '{D1}', 'old_user', 5.0, 1, '', '', 'm', 'old', "
                    f"TIMESTAMPTZ '2024-03-11 06:00:00+00')")
    replace_day(flagged(D2, ["n"], "new"), f"duckdb:///{path}", "flagged_users", D2)  # no migrate step
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT version FROM main.schema_migrations ORDER BY version").fetchall() == \
            [(1,), (2,), (3,)]
        assert dict(con.execute("SELECT user_id, run_id FROM flagged_users_latest").fetchall()) == \
            {"old_user": "old", "n": "new"}
        assert {r[0] for r in con.execute("SELECT index_name FROM duckdb_indexes()").fetchall()} >= \
            {"flagged_users_as_of_rank_idx", "flagged_users_user_id_idx", "flagged_users_score_idx"}
    assert migrate(Target(f"duckdb:///{path}"))["applied"] == []


def test_migrate_refuses_a_table_with_other_columns_and_an_edited_migration(pg_url, monkeypatch):
    table = unique("clash")
    with pg(pg_url) as con:
        con.execute(f"CREATE TABLE {table} (id INTEGER)")
    with pytest.raises(UserError, match="not the contract's"):
        migrate(Target(pg_url, table))
    other = unique("flagged")
    migrate(Target(pg_url, other))
    edited = (MIGRATIONS[0], dataclasses.replace(MIGRATIONS[1], statements=("SELECT 1",)), *MIGRATIONS[2:])
    monkeypatch.setattr(warehouse, "MIGRATIONS", edited)
    with pytest.raises(UserError, match="0002_flagged_users_indexes has changed"):
        migrate(Target(pg_url, other))


def test_two_migrates_at_once_both_succeed(pg_url):
    target = Target(pg_url, "flagged_users", unique("wh"))
    results, errors = [], []

    def run():
        try:
            results.append(migrate(target)["applied"])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(results, key=len) == [[], ALL]  # the second waited for the first, then had nothing to do


def test_unmigrated_postgres_is_one_line_telling_to_migrate(pg_url, flagged):
    with pytest.raises(UserError) as info:
        replace_day(flagged(D1, ["a"], "r"), pg_url, unique("never_made"), D1)
    assert "\n" not in str(info.value) and "python -m pipelines warehouse migrate" in str(info.value)


# --- the day's replace ------------------------------------------------------------------------------


def test_rerunning_a_day_with_the_same_rows_is_idempotent(pg_url, flagged):
    table = unique("flagged")
    migrate(Target(pg_url, table))
    rows = flagged(D1, [f"u{i}" for i in range(50)], "same-run")
    replace_day(flagged(D2, ["other"], "other"), pg_url, table, D2)
    replace_day(rows, pg_url, table, D1)
    first = read_table(pg_url, table)
    replace_day(rows, pg_url, table, D1)
    pd.testing.assert_frame_equal(read_table(pg_url, table), first)
    assert len(first) == 51


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_streamed_input_arrow_batches_and_tables(kind, pg_url, tmp_path, flagged):
    url = f"duckdb:///{tmp_path}/s.duckdb" if kind == "duckdb" else pg_url
    table = unique("flagged")
    if kind == "postgres":
        migrate(Target(url, table))
    frame = flagged(D1, [f"u{i}" for i in range(1000)], "streamed")
    batches = pa.Table.from_pandas(frame, preserve_index=False).to_batches(max_chunksize=128)
    assert len(batches) > 5
    assert replace_day(iter(batches), url, table, D1) == 1000  # a one-shot iterator
    got = read_table(url, table, D1)
    assert got["user_id"].tolist() == frame["user_id"].tolist()
    assert got["score"].tolist() == frame["score"].tolist()  # floats at full precision through COPY
    assert replace_day(pa.Table.from_pandas(frame.head(10), preserve_index=False), url, table, D1) == 10
    assert replace_day(iter([]), url, table, D1) == 0  # an empty stream empties the day
    assert read_table(url, table, D1).empty


def test_text_survives_copy_exactly(pg_url, flagged):
    table = unique("flagged")
    migrate(Target(pg_url, table))
    rows = flagged(D1, ["a", "b", "c", "d"], "r")
    rows["reasons"] = ['x="1", y=2 (p99.0)', "line\nbreak, comma", "", None]
    rows["anomaly_types"] = ["", "a,b", "\\N", "naïve ✓"]
    replace_day(rows, pg_url, table, D1)
    got = read_table(pg_url, table, D1)
    assert got["reasons"].tolist()[:3] == rows["reasons"].tolist()[:3]
    with pg(pg_url) as con:  # None arrived as NULL, '' as ''
        assert con.execute(f"SELECT user_id FROM {table} WHERE reasons IS NULL").fetchall() == [("d",)]
        assert con.execute(f"SELECT user_id FROM {table} WHERE reasons = ''").fetchall() == [("c",)]
    assert got["anomaly_types"].tolist() == rows["anomaly_types"].tolist()  # '' stays '', not NULL


KILLED_WRITER = textwrap.dedent("""
    import pathlib, sys, time
    import pandas as pd
    from pipelines import warehouse

    url, table, flag = sys.argv[1:4]

    def pause(stage):
        if stage == "loaded":  # deleted and copied, inside the transaction: wait to be killed
            pathlib.Path(flag).write_text("paused")
            time.sleep(300)

    warehouse._checkpoint = pause
    n = 20000
    rows = pd.DataFrame({"as_of": [pd.Timestamp("2024-03-10").date()] * n,
                         "user_id": [f"new{i}" for i in range(n)], "score": [1.0] * n, "rank": range(1, n + 1),
                         "reasons": ["r"] * n, "anomaly_types": [""] * n, "model_version": ["m"] * n,
                         "run_id": ["killed"] * n, "scored_at": [pd.Timestamp("2024-03-11", tz="UTC")] * n})
    warehouse.replace_day(rows, url, table, "2024-03-10")
    """)


def test_a_writer_killed_mid_load_leaves_the_previous_day(pg_url, flagged, tmp_path):
    table = unique("flagged")
    migrate(Target(pg_url, table))
    old_users = [f"old{i}" for i in range(30)]
    replace_day(flagged(D1, old_users, "old"), pg_url, table, D1)
    flag = tmp_path / "paused"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, pg_url, table, str(flag)], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, "the writer exited before reaching its pause"
            assert time.monotonic() < deadline, "the writer never reached its pause"
            time.sleep(0.05)
        with pg(pg_url) as con:
            state = con.execute("SELECT state FROM pg_stat_activity WHERE application_name = "
                                "'pipelines-warehouse' AND datname = current_database()").fetchall()
        assert ("idle in transaction",) in state  # the new rows are in, uncommitted
        assert day(pg_url, table, D1) == {u: "old" for u in old_users}
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert day(pg_url, table, D1) == {u: "old" for u in old_users}
    # the day's lock died with the writer's session: the next run is not blocked
    replace_day(flagged(D1, ["after"], "after"), pg_url, table, D1, lock_timeout_s=30)
    assert day(pg_url, table, D1) == {"after": "after"}


def test_a_writer_waiting_too_long_for_the_day_is_transient(pg_url, flagged):
    target = Target(pg_url, unique("flagged"))
    migrate(target)
    with pg(pg_url) as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [warehouse._lock_key(target, D1)])
        with pytest.raises(TransientWarehouseError, match="lock timeout"):
            replace_day(flagged(D1, ["a"], "r"), pg_url, target.table, D1, lock_timeout_s=0.3)
        replace_day(flagged(D2, ["a"], "r"), pg_url, target.table, D2, lock_timeout_s=0.3)  # another day: no wait
        holder.execute("ROLLBACK")


def test_the_day_lock_comes_before_anything_else(pg_url, flagged):
    """While another run holds the day, a second one waits on the lock holding nothing else:
    no table is touched (in particular no DDL is tried) before it has the day."""
    target = Target(pg_url, unique("flagged"))
    migrate(target)
    with pg(pg_url) as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [warehouse._lock_key(target, D1)])
        errors: list = []

        def write():
            try:
                replace_day(flagged(D1, ["a"], "r"), pg_url, target.table, D1)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            with pg(pg_url) as watcher:
                for _ in range(200):
                    pid = watcher.execute("SELECT pid FROM pg_stat_activity WHERE application_name = "
                                          "'pipelines-warehouse' AND wait_event = 'advisory'").fetchone()
                    if pid:
                        break
                    time.sleep(0.05)
                assert pid, "the writer never waited on the day's lock"
                held = watcher.execute("SELECT locktype, relation::regclass::text, granted FROM pg_locks "
                                       "WHERE pid = %s AND locktype NOT IN ('virtualxid')", pid).fetchall()
                assert held == [("advisory", None, False)], held
        finally:
            holder.execute("COMMIT")
            writer.join(timeout=30)
    assert not errors, errors
    assert day(pg_url, target.table, D1) == {"a": "r"}


def test_a_duckdb_writer_killed_mid_load_leaves_the_previous_day(tmp_path, flagged):
    url = f"duckdb:///{tmp_path}/killed.duckdb"
    old_users = [f"old{i}" for i in range(30)]
    replace_day(flagged(D1, old_users, "old"), url, "flagged_users", D1)
    flag = tmp_path / "paused"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, url, "flagged_users", str(flag)], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, "the writer exited before reaching its pause"
            assert time.monotonic() < deadline, "the writer never reached its pause"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    got = read_table(url, "flagged_users", D1)
    assert dict(zip(got["user_id"], got["run_id"])) == {u: "old" for u in old_users}
    replace_day(flagged(D1, ["after"], "after"), url, "flagged_users", D1)
    assert read_table(url, "flagged_users", D1)["user_id"].tolist() == ["after"]


# --- roles ----------------------------------------------------------------------------------------


@pytest.fixture
def roles(pg_url):
    """An owner role (LOGIN CREATEROLE, owns the schema, no superuser) and names for the writer
    and the reader. Roles are cluster-wide: unique names, dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {k: f"pipelines_test_{k}_{suffix}" for k in ("owner", "writer", "reader")}
    schema = f"wh_{suffix}"
    with pg(pg_url) as admin:
        admin.execute(f'CREATE ROLE "{names["owner"]}" LOGIN CREATEROLE')
        admin.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{names["owner"]}"')
        # the schema of its day partitions (0009), made by the DBA too: the owner may not create schemas
        admin.execute(f'CREATE SCHEMA "{schema}_days" AUTHORIZATION "{names["owner"]}"')
    try:
        yield {**names, "schema": schema}
    finally:
        with pg(pg_url) as admin:
            existing = [n for n in names.values()
                        if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [n]).fetchone()]
            # one at a time: listing a default ACL's grantor and grantee in one DROP OWNED trips
            # PostgreSQL ("could not find tuple for default ACL")
            for n in existing:
                admin.execute(f'DROP OWNED BY "{n}" CASCADE')
            for n in existing:
                admin.execute(f'DROP ROLE "{n}"')


def denied(con, statement: str, params: list | None = None) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        con.execute(statement, params)


def test_owner_writer_and_reader(pg_url, roles, flagged):
    s, owner, writer, reader = roles["schema"], roles["owner"], roles["writer"], roles["reader"]
    owner_target = Target(as_user(pg_url, owner), "flagged_users", s)
    assert migrate(owner_target)["applied"] == ALL
    assert grant_writer(owner_target, writer)["created"] is True
    assert grant_reader(owner_target, reader)["created"] is True
    assert grant_reader(owner_target, reader)["created"] is False  # idempotent
    with pg(pg_url) as admin:
        admin.execute(f"CREATE TABLE public.{s}_unrelated (x int)")
        admin.execute(f'CREATE SCHEMA "{s}_other" AUTHORIZATION "{owner}"')
    with pg(as_user(pg_url, owner)) as con:  # something else of the owner's, in another schema
        con.execute(f'CREATE TABLE "{s}_other".secrets (x int)')

    # the writer publishes (so a write runs no DDL) ...
    writer_url = as_user(pg_url, writer)
    assert replace_day(flagged(D1, ["a", "b"], "w1"), writer_url, "flagged_users", D1, schema=s) == 2
    assert replace_day(flagged(D1, ["c"], "w2"), writer_url, "flagged_users", D1, schema=s) == 1
    # ... and can do no DDL
    with pg(writer_url) as con:
        denied(con, f'CREATE TABLE "{s}".mine (x int)')
        denied(con, f'DROP TABLE "{s}".flagged_users')
        denied(con, f'ALTER TABLE "{s}".flagged_users ADD COLUMN extra int')
        denied(con, f'CREATE INDEX writer_idx ON "{s}".flagged_users (run_id)')
        denied(con, f'TRUNCATE "{s}".flagged_users')
        denied(con, f'DROP VIEW "{s}".flagged_users_latest')
        denied(con, f'INSERT INTO "{s}".schema_migrations VALUES (\'x\', 99, \'x\', \'x\', now())')
        denied(con, "CREATE TABLE public.mine (x int)")
        # its staging and swap functions work on the schema's day-partitioned tables only
        for other in (f'"{s}".schema_migrations', f"public.{s}_unrelated"):
            with pytest.raises(psycopg.errors.RaiseException, match="not a day-partitioned table"):
                con.execute(f'SELECT "{s}".pipelines_stage_day(%s::regclass, %s)', [other, D1])
        with pytest.raises(psycopg.errors.RaiseException, match="not the staging table"):
            con.execute(f'SELECT "{s}".pipelines_swap_day(%s::regclass, %s::regclass, %s)',
                        [f'"{s}".flagged_users', f'"{s}_days".flagged_users_p20240310', D1])
    with pytest.raises(UserError, match="permission denied"):  # a pending migration needs the owner
        migrate(Target(writer_url, "flagged_users", s, user_scores=True))

    # the reader reads the table and its view, nothing else, and changes nothing
    with pg(as_user(pg_url, reader)) as con:
        assert con.execute(f'SELECT user_id FROM "{s}".flagged_users').fetchall() == [("c",)]
        assert con.execute(f'SELECT user_id FROM "{s}".flagged_users_latest').fetchall() == [("c",)]
        denied(con, f'INSERT INTO "{s}".flagged_users SELECT * FROM "{s}".flagged_users')
        denied(con, f"UPDATE \"{s}\".flagged_users SET score = 0")
        denied(con, f'DELETE FROM "{s}".flagged_users')
        denied(con, f'TRUNCATE "{s}".flagged_users')
        denied(con, f'DROP TABLE "{s}".flagged_users')
        denied(con, f'DROP VIEW "{s}".flagged_users_latest')
        denied(con, f'CREATE TABLE "{s}".mine (x int)')
        denied(con, f'CREATE VIEW "{s}".mine AS SELECT 1 AS x')
        denied(con, "CREATE TABLE public.mine (x int)")
        denied(con, f"CREATE SCHEMA {s}_mine")
        denied(con, f"SELECT * FROM public.{s}_unrelated")
        denied(con, f'SELECT * FROM "{s}_other".secrets')
        denied(con, f'SELECT "{s}".pipelines_stage_day(%s::regclass, %s)', [f'"{s}".flagged_users', D2])
        denied(con, f'SELECT "{s}".pipelines_index_day(%s::regclass, %s::regclass, %s)',
               [f'"{s}".flagged_users', f'"{s}".flagged_users', D1])
        denied(con, f'SELECT * FROM "{s}".schema_migrations')  # the tables and views, not the record
    assert read_table(as_user(pg_url, reader), "flagged_users", D1, schema=s)["user_id"].tolist() == ["c"]

    # a table a later migration adds is covered by the default privileges, with no new grant
    assert migrate(Target(as_user(pg_url, owner), "flagged_users", s, user_scores=True))["applied"] == \
        ["0004_user_scores", "0007_user_scores_by_day", "0010_user_scores_days_schema"]
    replace_day(flagged(D2, ["a"], "w3"), writer_url, "flagged_users", D2, schema=s,
                user_scores=flagged(D2, ["a"], "w3").assign(flagged=True).drop(columns=["reasons"]))
    with pg(as_user(pg_url, reader)) as con:
        assert con.execute(f'SELECT user_id FROM "{s}".user_scores').fetchall() == [("a",)]
        assert con.execute(f'SELECT user_id FROM "{s}".flagged_users WHERE as_of = %s', [D2]).fetchall() == [("a",)]
        assert ("a",) in con.execute(f'SELECT user_id FROM "{s}".flagged_users_latest').fetchall()
        denied(con, f'DELETE FROM "{s}".user_scores')
        denied(con, f'SELECT * FROM "{s}".schema_migrations')  # still not, after the later migration

    # grant-reader on a role that could write takes the writing away
    grant_reader(owner_target, writer)
    with pytest.raises(UserError, match="permission denied"):
        replace_day(flagged(D1, ["x"], "w4"), writer_url, "flagged_users", D1, schema=s)


def test_a_migration_record_made_again_gives_no_role_its_default_privileges(pg_url, roles, flagged):
    """The owner's default privileges would give the reader SELECT (and the writer INSERT,
    DELETE) on any table migrate creates later, the migration record included when it has to
    be made again: migrate takes those back, and only grant-writer gives the writer its SELECT."""
    s, owner, writer, reader = roles["schema"], roles["owner"], roles["writer"], roles["reader"]
    owner_target = Target(as_user(pg_url, owner), "flagged_users", s)
    migrate(owner_target)
    grant_writer(owner_target, writer), grant_reader(owner_target, reader)
    with pg(as_user(pg_url, owner)) as con:
        con.execute(f'DROP TABLE "{s}".schema_migrations')
        # what the default privileges give a table the owner creates now
        con.execute(f'CREATE TABLE "{s}".probe (x int)')
        assert con.execute("SELECT has_table_privilege(%s, %s, 'SELECT')", [reader, f'"{s}".probe']).fetchone()[0]
        con.execute(f'DROP TABLE "{s}".probe')
    assert migrate(owner_target)["applied"] == ALL  # re-recorded (every statement is safe to rerun)
    record = f'"{s}".schema_migrations'
    with pg(pg_url) as admin:
        rights = {(role, right): admin.execute("SELECT has_table_privilege(%s, %s, %s)", [role, record, right]).fetchone()[0]
                  for role in (reader, writer) for right in ("SELECT", "INSERT", "DELETE")}
    assert not any(rights.values()), rights
    writer_url = as_user(pg_url, writer)
    with pytest.raises(UserError, match="grant-writer"):
        replace_day(flagged(D1, ["a"], "w"), writer_url, "flagged_users", D1, schema=s)
    grant_writer(owner_target, writer)
    assert replace_day(flagged(D1, ["a"], "w"), writer_url, "flagged_users", D1, schema=s) == 1
    with pg(as_user(pg_url, reader)) as con:
        denied(con, f"SELECT * FROM {record}")
        assert con.execute(f'SELECT user_id FROM "{s}".flagged_users').fetchall() == [("a",)]


def day_scores(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(flagged=True).drop(columns=["reasons", "anomaly_types"])


def test_upgrading_a_populated_schema_to_day_partitions_keeps_rows_indexes_view_and_grants(
        pg_url, roles, flagged, monkeypatch):
    """A deployment at migration 4 (one plain table, days of rows, a reader and a writer granted)
    upgrades to one partition per day: nothing lost, the reader and writer keep their rights."""
    s, owner, writer, reader = roles["schema"], roles["owner"], roles["writer"], roles["reader"]
    owner_url = as_user(pg_url, owner)
    target = Target(owner_url, "flagged_users", s, user_scores=True)
    before = tuple(m for m in MIGRATIONS if m.version <= 4)
    monkeypatch.setattr(warehouse, "MIGRATIONS", before)
    assert [a.split("_")[0] for a in migrate(target)["applied"]] == ["0001", "0002", "0003", "0004"]
    grant_writer(target, writer), grant_reader(target, reader)
    writer_url = as_user(pg_url, writer)
    with pg(writer_url) as con:  # rows as the publisher before 0005 wrote them: into the one table
        for d, users in ((D1, ["a", "b"]), (D2, ["b", "c", "d"])):
            for rank, u in enumerate(users, 1):
                con.execute(f'INSERT INTO "{s}".flagged_users VALUES (%s, %s, 1.0, %s, %s, %s, %s, %s, now())',
                            [d, u, rank, "x=1 (p99.0)", "", "m", "plain"])
                con.execute(f'INSERT INTO "{s}".user_scores VALUES (%s, %s, 1.0, %s, true, %s, %s, now())',
                            [d, u, rank, "m", "plain"])
    monkeypatch.setattr(warehouse, "MIGRATIONS", MIGRATIONS)
    with pytest.raises(UserError, match="pending migrations: 0005_day_partition_functions"):
        replace_day(flagged(D1, ["x"], "x"), writer_url, "flagged_users", D1, schema=s,
                    user_scores=day_scores(flagged(D1, ["x"], "x")))

    assert [a.split("_")[0] for a in migrate(target)["applied"]] == ["0005", "0006", "0007", "0008", "0009", "0010"]
    with pg(as_user(pg_url, reader)) as con:
        for table in ("flagged_users", "user_scores"):
            assert sorted(con.execute(f'SELECT as_of::text, user_id, run_id FROM "{s}".{table}').fetchall()) == [
                (D1, "a", "plain"), (D1, "b", "plain"), (D2, "b", "plain"), (D2, "c", "plain"), (D2, "d", "plain")]
        assert sorted(con.execute(f'SELECT user_id, as_of::text FROM "{s}".flagged_users_latest').fetchall()) == [
            ("a", D1), ("b", D2), ("c", D2), ("d", D2)]
        denied(con, f'DELETE FROM "{s}".flagged_users')
    with pg(pg_url) as admin:
        parts = admin.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                              "WHERE i.inhparent = %s::regclass ORDER BY 1", [f'"{s}".flagged_users']).fetchall()
        assert parts == [("flagged_users_p20240310",), ("flagged_users_p20240311",)]
        indexes = {r[0] for r in admin.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND "
                                               "tablename = 'flagged_users'", [s])}
        for cols in ("(as_of, user_id)", "(as_of, rank)", "(user_id, as_of)", "(score)"):
            assert any(cols in d for d in indexes), (cols, indexes)
        assert admin.execute("SELECT to_regclass(%s)", [f'"{s}".flagged_users_unpartitioned']).fetchone()[0] is None
    # the writer replaces a migrated day through a swap, the other day untouched
    replace_day(flagged(D1, ["z"], "swapped"), writer_url, "flagged_users", D1, schema=s,
                user_scores=day_scores(flagged(D1, ["z"], "swapped")))
    assert day(pg_url, "flagged_users", D1, s) == {"z": "swapped"}
    assert day(pg_url, "flagged_users", D2, s) == {u: "plain" for u in "bcd"}
    assert day(pg_url, "user_scores", D1, s) == {"z": "swapped"}


def partitions(pg_url: str, schema: str, table: str) -> list[tuple[str, str]]:
    """(schema, name) of each partition of schema.table."""
    with pg(pg_url) as admin:
        return admin.execute("SELECT n.nspname, c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                             "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = %s::regclass "
                             "ORDER BY 2", [f'"{schema}"."{table}"']).fetchall()


def test_the_reader_reads_tables_and_views_but_no_day_partition_or_staging_table(pg_url, roles, flagged,
                                                                                  monkeypatch):
    """The day partitions and staging tables live in <schema>_days, where the reader has no
    USAGE: it reads the tables and the view (PostgreSQL checks only the table a query names),
    not a partition or a staging table by its name. The writer COPYs into its staging table but
    may not read the partitions either."""
    s, owner, writer, reader = roles["schema"], roles["owner"], roles["writer"], roles["reader"]
    days = f"{s}_days"
    owner_target = Target(as_user(pg_url, owner), "flagged_users", s, user_scores=True)
    migrate(owner_target)
    grant_writer(owner_target, writer), grant_reader(owner_target, reader)
    writer_url, reader_url = as_user(pg_url, writer), as_user(pg_url, reader)

    staged: list[tuple] = []
    real_stage = warehouse._pg_stage

    def stage_and_look(cur, target, key, schema, as_of, batches):
        staging = real_stage(cur, target, key, schema, as_of, batches)
        # inside the writer's transaction, where the staging table exists
        cur.execute("SELECT %s::regclass::text, has_table_privilege(%s, %s::regclass, 'SELECT'), "
                    "has_table_privilege(%s, %s::regclass, 'SELECT'), has_table_privilege(%s, %s::regclass, 'INSERT')",
                    [staging, reader, staging, writer, staging, writer, staging])
        staged.append(cur.fetchone())
        with pg(reader_url) as con:  # by its name, while it exists
            denied(con, f"SELECT * FROM {staging}")
        return staging

    monkeypatch.setattr(warehouse, "_pg_stage", stage_and_look)
    for d, users in ((D1, ["a", "b"]), (D2, ["b", "c"])):
        rows = flagged(d, users, "w")
        replace_day(rows, writer_url, "flagged_users", d, schema=s, user_scores=day_scores(rows))
    assert staged == [(f'{days}.flagged_users_n20240310', False, False, True),
                      (f'{days}.user_scores_n20240310', False, False, True),
                      (f'{days}.flagged_users_n20240311', False, False, True),
                      (f'{days}.user_scores_n20240311', False, False, True)]
    for table in ("flagged_users", "user_scores"):
        assert partitions(pg_url, s, table) == [(days, f"{table}_p20240310"), (days, f"{table}_p20240311")]

    with pg(reader_url) as con:
        assert sorted(con.execute(f'SELECT as_of::text, user_id FROM "{s}".flagged_users').fetchall()) == [
            (D1, "a"), (D1, "b"), (D2, "b"), (D2, "c")]
        assert sorted(con.execute(f'SELECT user_id FROM "{s}".flagged_users WHERE as_of = %s', [D2]).fetchall()) == \
            [("b",), ("c",)]  # pruned to one partition, still read through the parent
        assert sorted(con.execute(f'SELECT user_id, as_of::text FROM "{s}".flagged_users_latest').fetchall()) == [
            ("a", D1), ("b", D2), ("c", D2)]
        assert len(con.execute(f'SELECT * FROM "{s}".user_scores').fetchall()) == 4
        for table in ("flagged_users", "user_scores"):
            for part in (f"{table}_p20240310", f"{table}_p20240311"):
                denied(con, f'SELECT * FROM "{days}"."{part}"')
                with pytest.raises(psycopg.errors.UndefinedTable):  # and not in the tables' schema
                    con.execute(f'SELECT * FROM "{s}"."{part}"')
    with pg(writer_url) as con:
        denied(con, f'SELECT * FROM "{days}".flagged_users_p20240310')
        denied(con, f'CREATE TABLE "{days}".mine (x int)')
    with pg(pg_url) as admin:
        assert admin.execute("SELECT has_schema_privilege(%s, %s, 'USAGE'), has_schema_privilege(%s, %s, 'USAGE')",
                             [reader, days, writer, days]).fetchone() == (False, True)
    assert read_table(reader_url, "flagged_users", D1, schema=s)["user_id"].tolist() == ["a", "b"]

    # grant-reader on the writer takes the days schema away from it too, grant-writer gives it back
    grant_reader(owner_target, writer)
    with pg(pg_url) as admin:
        assert admin.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", [writer, days]).fetchone() == (False,)
        assert admin.execute("SELECT count(*) FROM pg_default_acl d, aclexplode(d.defaclacl) a WHERE "
                             "d.defaclnamespace = %s::regnamespace AND a.grantee = %s::regrole",
                             [f'"{days}"', writer]).fetchone() == (0,)
    grant_writer(owner_target, writer)
    rows = flagged(D1, ["z"], "again")
    replace_day(rows, writer_url, "flagged_users", D1, schema=s, user_scores=day_scores(rows))
    assert day(pg_url, "flagged_users", D1, s) == {"z": "again"}


def test_upgrading_from_version_8_moves_the_days_out_of_the_readers_reach(pg_url, roles, flagged, monkeypatch):
    """A deployment at migration 8 (partitions in the tables' schema, which the reader could
    SELECT directly) upgrades: the days move into <schema>_days with their rows and indexes, the
    reader reads them through the tables and the view only, and the writer publishes on without
    a new grant. The owner may not create schemas: until the DBA makes <schema>_days, migrate
    stops with one line saying so, and changes nothing."""
    s, owner, writer, reader = roles["schema"], roles["owner"], roles["writer"], roles["reader"]
    days = f"{s}_days"
    with pg(pg_url) as admin:  # as a deployment of that version was set up: no days schema
        admin.execute(f'DROP SCHEMA "{days}"')
    owner_url, writer_url, reader_url = (as_user(pg_url, r) for r in (owner, writer, reader))
    target = Target(owner_url, "flagged_users", s, user_scores=True)
    monkeypatch.setattr(warehouse, "MIGRATIONS", tuple(m for m in MIGRATIONS if m.version <= 8))
    migrate(target)
    grant_writer(target, writer), grant_reader(target, reader)
    for d, users in ((D1, ["a", "b"]), (D2, ["b", "c", "d"])):
        rows = flagged(d, users, "v8")
        replace_day(rows, writer_url, "flagged_users", d, schema=s, user_scores=day_scores(rows))
    assert partitions(pg_url, s, "flagged_users") == [(s, "flagged_users_p20240310"), (s, "flagged_users_p20240311")]
    with pg(reader_url) as con:  # the weakness 0009 removes
        assert len(con.execute(f'SELECT * FROM "{s}".flagged_users_p20240310').fetchall()) == 2
        assert len(con.execute(f'SELECT * FROM "{s}".user_scores_p20240311').fetchall()) == 3
    monkeypatch.setattr(warehouse, "MIGRATIONS", MIGRATIONS)

    with pytest.raises(UserError, match="pending migrations: 0009_days_schema, 0010_user_scores_days_schema"):
        replace_day(flagged(D1, ["x"], "x"), writer_url, "flagged_users", D1, schema=s,
                    user_scores=day_scores(flagged(D1, ["x"], "x")))
    with pytest.raises(UserError) as info:
        migrate(target)
    message = str(info.value)
    assert "\n" not in message, message
    assert f"(as a DBA run CREATE SCHEMA {days} AUTHORIZATION {owner}; then migrate again)" in message, message
    assert partitions(pg_url, s, "flagged_users")[0] == (s, "flagged_users_p20240310")  # nothing changed
    with pg(pg_url) as admin:  # the DBA's part of the upgrade
        admin.execute(f'CREATE SCHEMA "{days}" AUTHORIZATION "{owner}"')
    assert migrate(target)["applied"] == ["0009_days_schema", "0010_user_scores_days_schema"]

    with pg(pg_url) as admin:
        for table in ("flagged_users", "user_scores"):
            assert partitions(pg_url, s, table) == [(days, f"{table}_p20240310"), (days, f"{table}_p20240311")]
            assert admin.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
                                 [s, f"{table}_p%"]).fetchone() == (0,)
        moved = {r[0] for r in admin.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND "
                                             "tablename = 'flagged_users_p20240311'", [days])}
        for cols in ("(as_of, user_id)", "(as_of, rank)", "(user_id, as_of)", "(score)"):
            assert any(cols in d for d in moved), (cols, moved)
    with pg(reader_url) as con:
        assert sorted(con.execute(f'SELECT as_of::text, user_id, run_id FROM "{s}".flagged_users').fetchall()) == [
            (D1, "a", "v8"), (D1, "b", "v8"), (D2, "b", "v8"), (D2, "c", "v8"), (D2, "d", "v8")]
        assert len(con.execute(f'SELECT * FROM "{s}".user_scores').fetchall()) == 5
        assert sorted(con.execute(f'SELECT user_id, as_of::text FROM "{s}".flagged_users_latest').fetchall()) == [
            ("a", D1), ("b", D2), ("c", D2), ("d", D2)]
        for part in ("flagged_users_p20240310", "user_scores_p20240311"):
            denied(con, f'SELECT * FROM "{days}"."{part}"')
    with pg(pg_url) as admin:  # the reader's SELECT on the moved partitions is gone, not only out of reach
        assert admin.execute("SELECT bool_or(has_table_privilege(%s, c.oid, 'SELECT')) FROM pg_class c "
                             "WHERE c.relnamespace = %s::regnamespace", [reader, f'"{days}"']).fetchone() == (False,)

    # the writer granted at version 8 reruns a day and adds one, with no new grant
    for d, users in ((D1, ["z"]), ("2024-03-12", ["y"])):
        rows = flagged(d, users, "v9")
        replace_day(rows, writer_url, "flagged_users", d, schema=s, user_scores=day_scores(rows))
    assert day(pg_url, "flagged_users", D1, s) == {"z": "v9"}
    assert day(pg_url, "flagged_users", D2, s) == {u: "v8" for u in "bcd"}
    assert day(pg_url, "user_scores", "2024-03-12", s) == {"y": "v9"}
    assert [p[0] for p in partitions(pg_url, s, "user_scores")] == [days] * 3
    with pg(reader_url) as con:
        assert con.execute(f'SELECT user_id FROM "{s}".flagged_users WHERE as_of = %s', ["2024-03-12"]).fetchall() == \
            [("y",)]
        denied(con, f'SELECT * FROM "{days}".flagged_users_p20240312')
    assert migrate(target)["applied"] == []


def test_a_days_schema_of_someone_else_is_refused_in_one_line(pg_url, roles):
    s, owner = roles["schema"], roles["owner"]
    with pg(pg_url) as admin:  # made by the DBA, but not given to the owner
        admin.execute(f'DROP SCHEMA "{s}_days"')
        admin.execute(f'CREATE SCHEMA "{s}_days"')
    with pytest.raises(UserError) as info:
        migrate(Target(as_user(pg_url, owner), "flagged_users", s))
    assert "\n" not in str(info.value)
    assert f"(as a DBA run ALTER SCHEMA {s}_days OWNER TO {owner}; then migrate again)" in str(info.value)
    with pg(pg_url) as admin:
        admin.execute(f'DROP SCHEMA "{s}_days"')


def test_grants_need_a_migrated_schema_and_postgres(pg_url, tmp_path):
    with pytest.raises(UserError, match="warehouse migrate"):
        grant_reader(Target(pg_url, unique("nothing")), "whoever")
    with pytest.raises(UserError, match="only on PostgreSQL"):
        grant_reader(Target(f"duckdb:///{tmp_path}/x.duckdb"), "whoever")
    with pytest.raises(UserError, match="plain SQL name"):
        grant_reader(Target(pg_url), 'bad"name')


# --- names, passwords, errors -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
@pytest.mark.parametrize("schema, table", [("order", "user"), ("select", "table"), (None, "group")])
def test_reserved_words_as_names(kind, schema, table, pg_url, tmp_path, flagged):
    url = f"duckdb:///{tmp_path}/r.duckdb" if kind == "duckdb" else pg_url  # PostgreSQL: one database a session
    target = Target(url, table, schema)
    migrate(target)
    replace_day(flagged(D1, ["a", "b"], "r"), url, table, D1, schema=schema)
    replace_day(flagged(D1, ["b"], "again"), url, table, D1, schema=schema)
    assert read_table(url, table, D1, schema=schema)["user_id"].tolist() == ["b"]
    assert read_table(url, f"{table}_latest", schema=schema)["run_id"].tolist() == ["again"]


@pytest.mark.parametrize("name", ["flagged users", 'x";DROP TABLE y;--', "1abc", "", "a" * 64, "t-1", "é"])
def test_bad_names_are_refused_before_any_sql(name, pg_url):
    for make in (lambda: Target(pg_url, name), lambda: Target(pg_url, "ok", name),
                 lambda: Target(pg_url, "ok", None, True, name)):
        with pytest.raises(UserError, match="plain SQL name"):
            make()
    with pytest.raises(UserError, match="too long"):
        Target(pg_url, "a" * 60)  # its index names would pass 63 characters
    with pytest.raises(UserError, match="the schema of its day partitions"):
        Target(pg_url, "ok", "s" * 60)  # its days schema, s..s_days, would
    assert Target("duckdb:///x.duckdb", "ok", "s" * 60).schema == "s" * 60  # DuckDB has none


@pytest.mark.parametrize("url, secret", [
    ("postgresql://wh:p%40ss%40word@127.0.0.1:1/db", ["p%40ss", "ss%40word", "p@ss", "word"]),
    ("postgresql://wh:p@ss@word@127.0.0.1:1/db", ["p@ss", "ss@word", "word@"]),
    ("postgres://wh:s3cret/x@127.0.0.1:1/db", ["s3cret"]),
])
def test_passwords_never_appear(url, secret, flagged, tmp_path):
    shown = [redact(url), warehouse.redact(url), Target(url).safe_url]
    with pytest.raises((TransientWarehouseError, UserError)) as info:
        replace_day(flagged(D1, ["a"], "r"), url, "flagged_users", D1)
    shown.append(str(info.value))
    with pytest.raises((TransientWarehouseError, UserError)) as info:
        migrate(Target(url))
    shown.append(str(info.value))
    for text in shown:
        assert "127.0.0.1" in text or "@" in text, text
        for s in secret:
            assert s not in text, (s, text)
    assert redact("postgresql://wh:p%40ss@db:5432/warehouse") == "postgresql://wh:***@db:5432/warehouse"
    assert redact("duckdb:///data/w.duckdb") == "duckdb:///data/w.duckdb"
    assert redact("data/w.duckdb") == "data/w.duckdb"


def test_transient_and_configuration_errors_are_told_apart(pg_url, flagged):
    for exc in (psycopg.errors.SerializationFailure(), psycopg.errors.DeadlockDetected(),
                psycopg.errors.LockNotAvailable(), psycopg.errors.AdminShutdown(),
                psycopg.errors.TooManyConnections(), psycopg.OperationalError("connection refused")):
        assert warehouse.is_transient(exc), exc
    for exc in (psycopg.errors.InsufficientPrivilege(), psycopg.errors.UndefinedTable(),
                psycopg.errors.UniqueViolation(), psycopg.errors.SyntaxError(),
                psycopg.OperationalError('FATAL:  database "x" does not exist'),
                psycopg.OperationalError('FATAL:  password authentication failed for user "x"')):
        assert not warehouse.is_transient(exc), exc
    # real ones: a server that is not there is transient; a database that does not exist is configuration
    with pytest.raises(TransientWarehouseError, match="Connection refused"):
        migrate(Target("postgresql://postgres@127.0.0.1:1/db"))
    with pytest.raises(UserError, match="does not exist"):
        migrate(Target(pg_url.rsplit("/", 1)[0] + "/" + unique("no_such_db")))
    with pytest.raises(UserError, match="warehouse.url"):
        Target("mysql://u@h/db")


CONFIG_STATES = {"28P01": psycopg.errors.InvalidPassword, "28000": psycopg.errors.InvalidAuthorizationSpecification,
                 "3D000": psycopg.errors.InvalidCatalogName}
TRANSIENT_STATES = {"08000": psycopg.errors.ConnectionException, "08006": psycopg.errors.ConnectionFailure,
                    "08001": psycopg.errors.SqlclientUnableToEstablishSqlconnection,
                    "08P01": psycopg.errors.ProtocolViolation, "40001": psycopg.errors.SerializationFailure,
                    "40P01": psycopg.errors.DeadlockDetected, "55P03": psycopg.errors.LockNotAvailable,
                    "57014": psycopg.errors.QueryCanceled, "57P01": psycopg.errors.AdminShutdown,
                    "57P02": psycopg.errors.CrashShutdown, "57P03": psycopg.errors.CannotConnectNow,
                    "53300": psycopg.errors.TooManyConnections}


@pytest.mark.parametrize("state, error", [*CONFIG_STATES.items(), *TRANSIENT_STATES.items()])
def test_errors_with_a_sqlstate_are_classified_by_it_not_by_their_text(state, error):
    transient = state in TRANSIENT_STATES
    assert error.sqlstate == state
    # the text says the opposite of the SQLSTATE: the SQLSTATE wins
    text = 'FATAL:  database "x" does not exist' if transient else "sorry, too many clients already"
    for exc in (error(), error(text)):
        assert warehouse.is_transient(exc) is transient, (state, str(exc))
    target = Target("postgresql://wh:s3cret@127.0.0.1:5432/db")
    with pytest.raises(TransientWarehouseError if transient else UserError) as info:
        with warehouse._pg_errors(target, "migrate"):
            raise error(text)
    assert "\n" not in str(info.value) and "s3cret" not in str(info.value)
    if not transient:
        assert "check the" in str(info.value) and "warehouse.url" in str(info.value)


class _PgconnStandIn:  # what psycopg attaches to a failed connection attempt, as far as is_transient reads it
    def __init__(self, needs_password: bool):
        self.needs_password = needs_password


def test_connection_failures_without_a_sqlstate():
    """libpq gives no SQLSTATE for a failed connection attempt: psycopg's timeout class and the
    server asking for a password are used first, then the text."""
    assert warehouse.is_transient(psycopg.errors.ConnectionTimeout("connection timeout expired"))
    assert not warehouse.is_transient(psycopg.OperationalError(
        "connection failed: fe_sendauth: no password supplied", pgconn=_PgconnStandIn(needs_password=True)))
    assert warehouse.is_transient(psycopg.OperationalError(
        "server closed the connection unexpectedly", pgconn=_PgconnStandIn(needs_password=False)))
    for busy in ("FATAL:  sorry, too many clients already",
                 "FATAL:  remaining connection slots are reserved for non-replication superuser connections",
                 "FATAL:  the database system is starting up", "FATAL:  the database system is shutting down",
                 "FATAL:  the database system is in recovery mode"):
        assert warehouse.is_transient(psycopg.OperationalError(f"connection failed: {busy}")), busy
    for config in ('FATAL:  role "nobody" does not exist', 'FATAL:  role "r" is not permitted to log in',
                   'FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "u", database "d"',
                   "failed to resolve host 'db.invalid': [Errno -2] Name or service not known",
                   'invalid connection option "nope"', "FATAL:  permission denied for database \"d\""):
        assert not warehouse.is_transient(psycopg.OperationalError(f"connection failed: {config}")), config
    assert not warehouse.is_transient(ValueError("connection refused"))  # not psycopg's: not retried


def unused_loopback_port() -> int:
    import socket

    with socket.socket() as sock:  # bound, never listened on, then closed: nothing accepts on it
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_real_connection_failures_exit_2_or_75(pg_url, tmp_path):
    base = pg_url.rsplit("/", 1)[0]
    for url, code, says in ((f"{base}/{unique('no_such_db')}", 2, "does not exist"),
                            (base.replace("postgres@", f"{unique('no_such_role')}@") + "/postgres", 2,
                             "does not exist"),
                            (f"postgresql://postgres:pw%40x@127.0.0.1:{unused_loopback_port()}/db", 75,
                             "Connection refused")):
        proc = cli("warehouse", "migrate", "--warehouse", url, cwd=tmp_path)
        assert proc.returncode == code, (url, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and says in proc.stderr, proc.stderr
        assert "pw%40x" not in proc.stderr and "pw@x" not in proc.stderr


# --- publish_stage: batches, user_scores ------------------------------------------------------------


def write_scores(path: Path, n: int, flagged_every: int = 10) -> pd.DataFrame:
    scores = pd.DataFrame({
        "user_id": [f"u{i:06d}" for i in range(n)], "score": [float(n - i) for i in range(n)],
        "rank": list(range(1, n + 1)), "flagged": [i % flagged_every == 0 for i in range(n)],
        "reasons": [f"f={i} (p99.0)" for i in range(n)], "model_version": ["m-1"] * n,
        "as_of": [pd.Timestamp(D1).date()] * n, "anomaly_types": [""] * n})
    pq.write_table(pa.Table.from_pandas(scores, preserve_index=False), path, row_group_size=50_000)
    return scores


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_publish_stage_streams_flagged_rows_and_optionally_every_score(kind, pg_url, tmp_path):
    scores = write_scores(tmp_path / "scores.parquet", 150_000)
    url = f"duckdb:///{tmp_path}/p.duckdb" if kind == "duckdb" else pg_url
    table, schema = unique("flagged"), (None if kind == "duckdb" else unique("wh"))
    params = {"storage": {"reports": str(tmp_path / "reports")},
              "warehouse": {"url": url, "table": table, "schema": schema, "user_scores": True,
                            "user_scores_table": unique("scores")}}
    if kind == "postgres":
        with pytest.raises(UserError, match="warehouse migrate"):
            publish_stage(params, D1, scores_in=str(tmp_path / "scores.parquet"), run_id="r1")
        migrate(Target.from_params(params))
    info = publish_stage(params, D1, scores_in=str(tmp_path / "scores.parquet"), run_id="r1")
    assert info["rows"] == 15_000 and info["user_scores_rows"] == 150_000 and info["run_id"] == "r1"
    got = read_table(url, table, D1, schema=schema)
    assert got["user_id"].tolist() == scores.loc[scores["flagged"], "user_id"].tolist()
    everyone = read_table(url, params["warehouse"]["user_scores_table"], D1, schema=schema)
    assert len(everyone) == 150_000 and int(everyone["flagged"].sum()) == 15_000
    assert set(everyone["run_id"]) == {"r1"}
    # scores of another day are refused, and the day stays as it was
    other = tmp_path / "other.parquet"
    pq.write_table(pq.read_table(tmp_path / "scores.parquet").set_column(
        6, "as_of", pa.array([pd.Timestamp(D2).date()] * 150_000, pa.date32())), other)
    with pytest.raises(UserError, match="as of 2024-03-11, not 2024-03-10"):
        publish_stage(params, D1, scores_in=str(other), run_id="r2")
    assert set(read_table(url, table, D1, schema=schema)["run_id"]) == {"r1"}


# --- DuckDB: one writer process at a time ---------------------------------------------------------------

HOLD_LOCK = textwrap.dedent("""
    import pathlib, sys, time
    import duckdb
    path, ready, release = sys.argv[1:4]
    con = duckdb.connect(path)
    pathlib.Path(ready).write_text("locked")
    while not pathlib.Path(release).exists():
        time.sleep(0.05)
    con.close()
    """)


def test_duckdb_reader_meeting_another_process_lock_retries_then_says_so(tmp_path, flagged, monkeypatch):
    url = f"duckdb:///{tmp_path}/locked.duckdb"
    replace_day(flagged(D1, ["a"], "r"), url, "flagged_users", D1)
    ready, release = tmp_path / "ready", tmp_path / "release"
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "locked.duckdb"), str(ready),
                             str(release)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the lock holder did not start"
            time.sleep(0.05)
        monkeypatch.setattr(warehouse, "LOCK_WAIT_S", 0.5)
        started = time.monotonic()
        with pytest.raises(TransientWarehouseError, match="locked by another process") as info:
            read_table(url, "flagged_users")
        assert time.monotonic() - started >= 0.5 and "\n" not in str(info.value)
        with pytest.raises(TransientWarehouseError, match="locked by another process"):
            replace_day(flagged(D1, ["b"], "r"), url, "flagged_users", D1)
        # with time to wait, the reader gets in once the other process lets go
        monkeypatch.setattr(warehouse, "LOCK_WAIT_S", 30)
        threading.Timer(1.0, release.write_text, args=("go",)).start()
        assert read_table(url, "flagged_users")["user_id"].tolist() == ["a"]
    finally:
        release.write_text("go")
        proc.wait(timeout=30)


# --- the CLI ------------------------------------------------------------------------------------------


def test_cli_migrate_grant_and_exit_codes(pg_url, roles, tmp_path):
    owner_url = as_user(pg_url, roles["owner"])
    env = {"WAREHOUSE_URL": owner_url}
    # without params.yaml: the default schema, public, where (PostgreSQL 15) only its owner may create
    proc = cli("warehouse", "migrate", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "permission denied for schema public" in proc.stderr, proc.stderr
    params = tmp_path / "params.yaml"
    params.write_text(f"warehouse: {{schema: {roles['schema']}}}\n")
    proc = cli("--params", str(params), "warehouse", "migrate", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["applied"] == ALL
    assert json.loads(cli("--params", str(params), "warehouse", "migrate", cwd=tmp_path, env=env).stdout)["applied"] == []
    proc = cli("--params", str(params), "warehouse", "grant-reader", roles["reader"], cwd=tmp_path, env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["rights"] == "SELECT", proc.stderr
    proc = cli("--params", str(params), "warehouse", "grant-writer", roles["writer"], cwd=tmp_path, env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["rights"] == "SELECT, INSERT, DELETE", proc.stderr

    down = cli("warehouse", "migrate", "--warehouse", "postgresql://postgres:pw%40x@127.0.0.1:1/db", cwd=tmp_path)
    assert down.returncode == 75, down.stderr
    assert down.stderr.count("\n") == 1 and "Traceback" not in down.stderr and "pw" not in down.stderr
    assert down.stderr.startswith("error (temporary, retry later): cannot migrate the warehouse at postgresql://postgres:***@")
    bad = cli("warehouse", "migrate", "--warehouse", "mysql://u@h/db", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def scram_verifier_matches(verifier: str, password: str) -> bool:
    """Whether a stored SCRAM-SHA-256 verifier (RFC 5802/7677, as pg_authid keeps it) is the
    password's: its StoredKey recomputed from the password, salt and iteration count."""
    import base64
    import hashlib
    import hmac

    method, salt_part, keys = verifier.split("$")
    iterations, salt = salt_part.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return method == "SCRAM-SHA-256" and base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key


def stored_password(pg_url: str, role: str) -> str | None:
    with pg(pg_url) as admin:  # the superuser: pg_authid is not readable by others
        row = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role]).fetchone()
        return row[0] if row else None


def test_cli_grant_sets_the_password_from_an_environment_variable(pg_url, roles, tmp_path):
    """The server's loopback uses trust, so a login cannot prove a password: pg_authid holds
    the SCRAM verifier of exactly the secret (recomputed here), and the secret is in no output."""
    params = tmp_path / "params.yaml"
    params.write_text(f"warehouse: {{schema: {roles['schema']}}}\n")
    owner_url = as_user(pg_url, roles["owner"])
    base = ["--params", str(params), "-v", "warehouse"]
    assert cli(*base, "migrate", cwd=tmp_path, env={"WAREHOUSE_URL": owner_url}).returncode == 0
    secret = f"pw'\"\\$x;-- {uuid.uuid4().hex}"  # quotes, a backslash, a dollar, a space
    env = {"WAREHOUSE_URL": owner_url, "PIPELINES_TEST_ROLE_PW": secret}
    for command, role in (("grant-reader", roles["reader"]), ("grant-writer", roles["writer"])):
        assert stored_password(pg_url, role) is None  # no role yet
        proc = cli(*base, command, role, "--password-env", "PIPELINES_TEST_ROLE_PW", cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["password_set"] is True
        for text in (proc.stdout, proc.stderr):
            assert secret not in text and uuid_part(secret) not in text
        verifier = stored_password(pg_url, role)
        assert verifier and scram_verifier_matches(verifier, secret), verifier
        assert not scram_verifier_matches(verifier, secret + "x")
    # an existing role gets the new password; without the option it keeps the one it has
    env["PIPELINES_TEST_ROLE_PW"] = "another-" + uuid.uuid4().hex
    assert cli(*base, "grant-reader", roles["reader"], "--password-env", "PIPELINES_TEST_ROLE_PW",
               cwd=tmp_path, env=env).returncode == 0
    assert scram_verifier_matches(stored_password(pg_url, roles["reader"]), env["PIPELINES_TEST_ROLE_PW"])
    kept = stored_password(pg_url, roles["reader"])
    proc = cli(*base, "grant-reader", roles["reader"], cwd=tmp_path, env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["password_set"] is False
    assert stored_password(pg_url, roles["reader"]) == kept
    # a missing or empty variable: one line, exit 2, and nothing was changed
    for value in (None, ""):
        env_now = {k: v for k, v in env.items() if k != "PIPELINES_TEST_ROLE_PW"}
        if value is not None:
            env_now["PIPELINES_TEST_ROLE_PW"] = value
        run_env = {**{k: v for k, v in os.environ.items() if k != "PIPELINES_TEST_ROLE_PW"}, **env_now}
        proc = subprocess.run([sys.executable, "-m", "pipelines", *base, "grant-reader", roles["reader"],
                               "--password-env", "PIPELINES_TEST_ROLE_PW"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env=run_env)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "PIPELINES_TEST_ROLE_PW" in proc.stderr and "Traceback" not in proc.stderr
    assert stored_password(pg_url, roles["reader"]) == kept


def uuid_part(secret: str) -> str:
    return secret.rsplit(" ", 1)[1]


def test_the_password_never_reaches_the_server_only_its_verifier(pg_url, roles, monkeypatch):
    """Every statement grant_reader sends, as the server receives it: the SCRAM verifier, as a
    quoted literal, and never the password (so no statement log or pg_stat_activity shows it)."""
    sent: list[str] = []

    class Spy(psycopg.Connection):
        def execute(self, query, params=None, **kw):
            sent.append(query if isinstance(query, str) else query.as_string(self))
            return super().execute(query, params, **kw)

    owner_target = Target(as_user(pg_url, roles["owner"]), "flagged_users", roles["schema"])
    migrate(owner_target)
    real_connect = warehouse._pg_connect
    monkeypatch.setattr(warehouse, "_pg_connect", lambda target, autocommit=False: Spy.connect(
        warehouse._libpq_url(target), autocommit=autocommit))
    secret = "it's a $$secret$$ " + uuid.uuid4().hex
    result = grant_reader(owner_target, roles["reader"], password=secret)
    monkeypatch.setattr(warehouse, "_pg_connect", real_connect)
    assert result["password_set"] is True and secret not in json.dumps(result)
    assert sent and not any(secret in q or uuid_part(secret) in q for q in sent)
    verifier = stored_password(pg_url, roles["reader"])
    assert [q for q in sent if "PASSWORD" in q] == [f'ALTER ROLE "{roles["reader"]}" PASSWORD \'{verifier}\'']
    assert scram_verifier_matches(verifier, secret)
    with pytest.raises(UserError, match="password is empty"):
        grant_reader(owner_target, roles["reader"], password="")


@pytest.mark.slow
def test_whole_pipeline_publishes_to_postgres(pg_url, tmp_path):
    from pipelines.simulate import simulate

    events, labels = simulate({"n_users": 800, "days": 8, "seed": 5, "anomaly_rate": 0.05})
    events.to_parquet(tmp_path / "events.parquet")
    url = pg_url.replace("postgresql://", "postgres://")  # the short scheme works too
    schema = unique("wh")
    params = tmp_path / "params.yaml"
    params.write_text(f"warehouse: {{schema: {schema}}}\n")
    run = ["--params", str(params), "run", "--events", str(tmp_path / "events.parquet"), "--out", "out",
           "--warehouse", url, "--run-id", "first"]
    migrated = cli("--params", str(params), "warehouse", "migrate", "--warehouse", url, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    proc = cli(*run, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    published = summary["publish"]
    assert published["schema"] == schema and published["rows"] > 0 and published["run_id"] == "first"
    with pg(pg_url) as con:
        rows = con.execute(f'SELECT as_of, user_id, rank, run_id FROM "{schema}".flagged_users ORDER BY rank').fetchall()
    assert len(rows) == published["rows"] and {r[3] for r in rows} == {"first"}
    assert [r[2] for r in rows] == list(range(1, len(rows) + 1))
    assert str(rows[0][0]) == published["as_of"]
    shown = cli("--params", str(params), "show", "--warehouse", url, cwd=tmp_path)
    assert shown.returncode == 0 and f"flagged users on {published['as_of']}" in shown.stdout, shown.stderr


# --- the README's downstream SQL ------------------------------------------------------------------


def readme_queries() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Warehouse\n"):]
    section = section[:section.index("\n## ", 1)]
    blocks = [b.split("```", 1)[0] for b in section.split("```sql\n")[1:]]
    downstream = [b for b in blocks if "CREATE ROLE" not in b]
    assert len(downstream) == 1
    return [q.strip() for q in (downstream[0] + "\n").split(";\n") if q.strip()]


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_readme_downstream_sql_runs_and_counts(kind, pg_url, tmp_path, flagged):
    queries = readme_queries()
    assert len(queries) == 5
    rows = flagged("2026-11-21", ["u0010081", "u2", "u3"], "r")
    rows["reasons"] = ["events_per_session_1d=272 (p99.95); n_new_devices_7d=3 (p100.0)",
                       "events_per_session_1d=90 (p99.9)",
                       "login_failed at 2026-11-17 18:28:44 [new_device, new_ip] (p99.9); n_new_devices_7d=2 (p99.5)"]
    rows["anomaly_types"] = ["account_takeover,scraping_bot", "scraping_bot", ""]
    older = flagged("2026-11-20", ["u0010081"], "before")
    if kind == "duckdb":
        url = f"duckdb:///{tmp_path}/readme.duckdb"
        replace_day(rows, url, "flagged_users", "2026-11-21")
        replace_day(older, url, "flagged_users", "2026-11-20")
        con = duckdb.connect(str(tmp_path / "readme.duckdb"))
        run = lambda q: con.execute(q).fetchall()  # noqa: E731
    else:
        schema = unique("readme")
        migrate(Target(pg_url, "flagged_users", schema))
        replace_day(rows, pg_url, "flagged_users", "2026-11-21", schema=schema)
        replace_day(older, pg_url, "flagged_users", "2026-11-20", schema=schema)
        con = pg(pg_url)
        con.execute(f'SET search_path TO "{schema}"')
        run = lambda q: con.execute(q).fetchall()  # noqa: E731
    try:
        today, history, latest, per_signal, per_hint = (run(q) for q in queries)
    finally:
        con.close()
    assert [r[1] for r in today] == ["u0010081", "u2", "u3"]
    assert [str(r[0]) for r in history] == ["2026-11-21", "2026-11-20"]
    assert len(latest) == 1 and latest[0][7] == "r"
    assert [(s, int(n)) for s, n in per_signal] == [("events_per_session_1d", 2), ("n_new_devices_7d", 2),
                                                   ("login_failed", 1)]
    hints = {(str(d), h): int(n) for d, h, n in per_hint}
    assert hints[("2026-11-21", "scraping_bot")] == 2 and hints[("2026-11-21", "account_takeover")] == 1
