"""pipelines.warehouse: the flagged_users table on DuckDB and on a real PostgreSQL.

Re-running a day must replace that day's rows atomically (contract section 4): readers see the
old rows or the new ones, never a mix or a gap, and a failed write leaves the old rows.
PostgreSQL tables are made by `migrate` first, as a deployment does; DuckDB sets itself up.
Migrations, roles, killed writers and error classes: tests/test_warehouse_pg.py.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from types import SimpleNamespace

import duckdb
import pandas as pd
import pytest

from pipelines import warehouse
from pipelines.errors import TransientWarehouseError, UserError
from pipelines.schema import FLAGGED_USERS_COLUMNS
from pipelines.warehouse import Target, flagged_rows, migrate, parse_url, read_table, replace_day

D1, D2 = "2024-03-10", "2024-03-11"
REAL_DUCKDB_CONNECT = duckdb.connect


# --- backends -------------------------------------------------------------------------------------


class Backend:
    """A warehouse URL plus a reader that does not go through pipelines.warehouse."""

    def __init__(self, kind: str, url: str, table: str):
        self.kind, self.url, self.table = kind, url, table

    def rows(self, as_of: str | None = None) -> pd.DataFrame:
        where = f"WHERE as_of = DATE '{as_of}'" if as_of else ""
        query = f"SELECT * FROM {self.table} {where} ORDER BY as_of, rank"
        if self.kind == "duckdb":
            with REAL_DUCKDB_CONNECT(parse_url(self.url)[1]) as con:
                return con.sql(query).to_arrow_table().to_pandas()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as con:
            cur = con.execute(query)
            return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])

    def day(self, as_of: str) -> dict[str, str]:
        """user_id -> run_id for one day."""
        df = self.rows(as_of)
        return dict(zip(df["user_id"], df["run_id"]))


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request, tmp_path):
    table = f"flagged_{uuid.uuid4().hex[:10]}"
    if request.param == "duckdb":
        return Backend("duckdb", f"duckdb:///{tmp_path}/wh/warehouse.duckdb", table)
    return pg_backend(request.getfixturevalue("pg_url"), table)


def pg_backend(pg_url: str, table: str | None = None) -> Backend:
    table = table or f"flagged_{uuid.uuid4().hex[:10]}"
    migrate(Target(pg_url, table))
    return Backend("postgres", pg_url, table)


# --- both backends --------------------------------------------------------------------------------


def test_replace_day_writes_the_rows(backend, flagged):
    rows = flagged(D1, ["u1", "u2", "u3"], "run-1")
    assert replace_day(rows, backend.url, backend.table, D1) == 3
    got = backend.rows()
    assert list(got.columns) == list(FLAGGED_USERS_COLUMNS)
    assert got["user_id"].tolist() == ["u1", "u2", "u3"]
    assert got["rank"].tolist() == [1, 2, 3]
    assert got["score"].tolist() == pytest.approx([10.0, 9.0, 8.0])
    assert got["reasons"].iloc[1] == "refund_ratio_28d=1 (p99.9)"
    assert set(got["run_id"]) == {"run-1"} and set(got["anomaly_types"]) == {"refund_abuse"}
    assert {pd.Timestamp(d).date() for d in got["as_of"]} == {dt.date(2024, 3, 10)}
    assert pd.Timestamp(got["scored_at"].iloc[0]) == pd.Timestamp("2024-03-11T06:00:00Z")


def test_rerunning_a_day_replaces_it_and_leaves_other_days(backend, flagged):
    replace_day(flagged(D1, ["a", "b", "c"], "old"), backend.url, backend.table, D1)
    replace_day(flagged(D2, ["a", "z"], "other-day"), backend.url, backend.table, D2)
    # overlapping and new users, fewer rows than before
    replace_day(flagged(D1, ["c", "d"], "new"), backend.url, backend.table, D1)
    assert backend.day(D1) == {"c": "new", "d": "new"}
    assert backend.day(D2) == {"a": "other-day", "z": "other-day"}
    # a rerun with nobody flagged empties the day
    replace_day(flagged(D1, [], "empty"), backend.url, backend.table, D1)
    assert backend.day(D1) == {}
    assert len(backend.rows()) == 2


def test_a_failing_write_leaves_the_previous_rows(backend, flagged):
    replace_day(flagged(D1, ["a", "b"], "good"), backend.url, backend.table, D1)
    before = backend.rows(D1)
    duplicate = flagged(D1, ["x", "y", "x"], "broken")  # violates the primary key (as_of, user_id)
    # DuckDB's rerun finds it before writing and names the users; PostgreSQL's key refuses it,
    # and the error says so in one line (the key it met included)
    refusal = (r"more than one row for user\(s\) 'x'; a user has one row a day" if backend.kind == "duckdb"
               else r"the rows break the table's rules \(.*\(as_of, user_id\)=\(2024-03-10, x\).*the warehouse is unchanged")
    with pytest.raises(UserError, match=refusal) as raised:
        replace_day(duplicate, backend.url, backend.table, D1)
    assert "\n" not in str(raised.value)
    pd.testing.assert_frame_equal(backend.rows(D1), before)
    # a NOT NULL violation halfway through the rows is rolled back too, and is one line
    null_score = flagged(D1, ["p", "q", "r"], "broken")
    null_score["score"] = [1.0, None, 2.0]
    with pytest.raises(UserError, match=r"(?i)the rows break the table's rules \(.*null.*\)") as raised:
        replace_day(null_score, backend.url, backend.table, D1)
    assert "\n" not in str(raised.value)
    pd.testing.assert_frame_equal(backend.rows(D1), before)
    # and the table is still usable
    replace_day(flagged(D1, ["c"], "fixed"), backend.url, backend.table, D1)
    assert backend.day(D1) == {"c": "fixed"}


def test_a_first_run_with_a_repeated_user_is_one_line_and_writes_nothing(backend, flagged):
    """The day's first run has no rows to stage against: the table's key refuses a repeated
    user (DuckDB and PostgreSQL alike), in one line, and the day stays empty."""
    with pytest.raises(UserError, match=r"cannot write .*the rows break the table's rules \(.*x.*\)") as raised:
        replace_day(flagged(D2, ["x", "y", "x"], "broken"), backend.url, backend.table, D2)
    assert "\n" not in str(raised.value)
    assert backend.day(D2) == {}
    replace_day(flagged(D2, ["x", "y"], "fixed"), backend.url, backend.table, D2)
    assert backend.day(D2) == {"x": "fixed", "y": "fixed"}


def test_a_rerun_with_a_null_for_a_user_the_day_has_leaves_the_previous_rows(backend, flagged):
    """The rerun writes the new values over a kept user's row (DuckDB): NOT NULL still holds."""
    replace_day(flagged(D1, ["a", "b"], "good"), backend.url, backend.table, D1)
    before = backend.rows(D1)
    null_score = flagged(D1, ["a", "b"], "broken")
    null_score["score"] = [1.0, None]
    with pytest.raises(Exception, match="(?i)null"):
        replace_day(null_score, backend.url, backend.table, D1)
    pd.testing.assert_frame_equal(backend.rows(D1), before)


def test_duckdb_rerun_with_repeated_users_is_one_line_naming_them(tmp_path, flagged):
    url = f"duckdb:///{tmp_path}/wh/warehouse.duckdb"
    replace_day(flagged(D1, ["a"], "good"), url, "flagged", D1)
    users = ["é-user", "b", "é-user", "c", "d", "e", "f", "g", "b", "c", "d", "e", "f", "g", "h"]
    with pytest.raises(UserError) as raised:
        replace_day(flagged(D1, users, "broken"), url, "flagged", D1)
    message = str(raised.value)
    assert "\n" not in message and f"for {D1}" in message
    # the first five in id order, and a sign there are more; the warehouse kept the day as it was
    assert "user(s) 'b', 'c', 'd', 'e', 'f', ...; " in message and "'g'" not in message and "'h'" not in message
    with pytest.raises(UserError, match="user\\(s\\) 'é-user'; "):
        replace_day(flagged(D1, ["é-user", "a", "é-user"], "broken"), url, "flagged", D1)
    with REAL_DUCKDB_CONNECT(parse_url(url)[1]) as con:
        assert con.execute("SELECT user_id, run_id FROM flagged").fetchall() == [("a", "good")]


def test_duckdb_rerun_updates_kept_users_in_place_with_user_scores(tmp_path, flagged):
    """A rerun of a day keeps the row (rowid, so its index entries) of each user the day had and
    still has, with the new values; deletes the rows of users it no longer has; inserts new users;
    other days and the flagged table as they should be. (A DELETE of the day then INSERT gave
    every row a new rowid: its commit took each old row out of the indexes, one at a time.) Both
    tables are reruns here, staged in turn in one transaction."""
    url = f"duckdb:///{tmp_path}/w.duckdb"
    target = Target(url, "flagged_users", None, True)

    def scores(day, users, run):
        return flagged(day, users, run).assign(flagged=True).drop(columns=["reasons", "anomaly_types"])

    warehouse.publish(target, D2, flagged(D2, ["a"], "other"), scores(D2, ["a", "z"], "other"))
    warehouse.publish(target, D1, flagged(D1, ["a", "b"], "old"), scores(D1, ["a", "b", "c"], "old"))
    # held open across the rerun: the database stays open in this process, so the writer's
    # close does not checkpoint, which compacts a table with deleted rows and renumbers rowids
    watch = REAL_DUCKDB_CONNECT(str(tmp_path / "w.duckdb"))

    def rows(table):
        return {(str(d), u): (rowid, run, score) for rowid, d, u, run, score in watch.execute(
            f"SELECT rowid, as_of, user_id, run_id, score FROM {table}").fetchall()}

    before = rows("user_scores")
    try:
        got = warehouse.publish(target, D1, flagged(D1, ["c", "a"], "new"), scores(D1, ["c", "a", "d"], "new"))
        after = rows("user_scores")
        flagged_after = rows("flagged_users")
    finally:
        watch.close()
    assert got == {"rows": 2, "user_scores_rows": 3}
    assert sorted(after) == [(D1, "a"), (D1, "c"), (D1, "d"), (D2, "a"), (D2, "z")]
    for user, score in (("c", 10.0), ("a", 9.0)):  # kept: same row, new values
        assert after[(D1, user)] == (before[(D1, user)][0], "new", score)
    assert after[(D1, "d")][1:] == ("new", 8.0)
    assert {k: v for k, v in after.items() if k[0] == D2} == {k: v for k, v in before.items() if k[0] == D2}
    assert {k: v[1:] for k, v in flagged_after.items()} == {
        (D1, "c"): ("new", 10.0), (D1, "a"): ("new", 9.0), (D2, "a"): ("other", 10.0)}


def test_primary_key_is_as_of_and_user_id(backend, flagged):
    replace_day(flagged(D1, ["same"], "r1"), backend.url, backend.table, D1)
    replace_day(flagged(D2, ["same"], "r2"), backend.url, backend.table, D2)  # same user, other day: fine
    assert len(backend.rows()) == 2
    if backend.kind == "duckdb":
        with REAL_DUCKDB_CONNECT(parse_url(backend.url)[1]) as con:
            with pytest.raises(duckdb.ConstraintException):
                con.execute(f"INSERT INTO {backend.table} SELECT * FROM {backend.table} WHERE as_of = DATE '{D1}'")
    else:
        import psycopg

        with psycopg.connect(backend.url, autocommit=True) as con:
            with pytest.raises(psycopg.errors.UniqueViolation):
                con.execute(f"INSERT INTO {backend.table} SELECT * FROM {backend.table} WHERE as_of = DATE '{D1}'")


def test_rows_for_another_day_are_refused(backend, flagged):
    with pytest.raises(ValueError, match="as_of"):
        replace_day(flagged(D2, ["a"], "r"), backend.url, backend.table, D1)


@pytest.mark.parametrize("table", ["flagged users", "x;DROP TABLE y", "1abc", "", "a" * 64, "t-1"])
def test_bad_table_names_are_user_errors(backend, flagged, table):
    with pytest.raises(UserError, match="plain SQL name"):
        replace_day(flagged(D1, ["a"], "r"), backend.url, table, D1)
    with pytest.raises(UserError, match="plain SQL name"):
        read_table(backend.url, table)


def test_read_table_postgres(pg_url, flagged):
    table = pg_backend(pg_url).table
    replace_day(flagged(D1, ["a", "b"], "r1"), pg_url, table, D1)
    replace_day(flagged(D2, ["c"], "r2"), pg_url, table, D2)
    everything = read_table(pg_url, table)
    assert list(everything.columns) == list(FLAGGED_USERS_COLUMNS)
    assert everything["user_id"].tolist() == ["a", "b", "c"]
    one_day = read_table(pg_url, table, D2)
    assert one_day["user_id"].tolist() == ["c"] and one_day["run_id"].tolist() == ["r2"]
    assert read_table(pg_url, table, "2024-01-01").empty


def test_read_table_duckdb(tmp_path, flagged):
    url = f"duckdb:///{tmp_path}/w.duckdb"
    replace_day(flagged(D1, ["a", "b"], "r1"), url, "flagged_users", D1)
    replace_day(flagged(D2, ["c"], "r2"), url, "flagged_users", D2)
    everything = read_table(url, "flagged_users")
    assert list(everything.columns) == list(FLAGGED_USERS_COLUMNS)
    assert everything["user_id"].tolist() == ["a", "b", "c"]
    assert read_table(url, "flagged_users", D2)["user_id"].tolist() == ["c"]


def test_read_table_duckdb_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_table(f"duckdb:///{tmp_path}/nothing.duckdb", "flagged_users")


def test_unreachable_postgres_is_a_transient_error(flagged):
    url = "postgresql://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1
    with pytest.raises(TransientWarehouseError, match="cannot write to the warehouse at postgresql://postgres@"):
        replace_day(flagged(D1, ["a"], "r"), url, "flagged_users", D1)
    assert not issubclass(TransientWarehouseError, UserError)  # schedulers retry it, not a UserError


def test_parse_url():
    assert parse_url("duckdb:///data/w.duckdb") == ("duckdb", "data/w.duckdb")
    assert parse_url("duckdb:////abs/w.duckdb") == ("duckdb", "/abs/w.duckdb")
    assert parse_url("data/w.duckdb") == ("duckdb", "data/w.duckdb")
    assert parse_url("postgres://u@h/db") == ("sqlalchemy", "postgresql+psycopg://u@h/db")
    assert parse_url("postgresql://u@h:5432/db") == ("sqlalchemy", "postgresql+psycopg://u@h:5432/db")
    with pytest.raises(UserError, match="warehouse.url"):
        parse_url("mysql://u@h/db")


# What each migration's checksum is (as recorded in schema_migrations at migrate) and the sha256
# of its SQL as rendered for Target("postgresql://u@h/db", user_scores on), taken from the code
# as it was applied (f72ccd7). A database refuses a migration whose checksum changed, so a
# refactoring of how the templates are built must leave every one of these as it is.
APPLIED_MIGRATIONS = {
    1: ("d77881fe0e95ed04", "0cb329c4cd7ef61137212cc2a2e987bab05581df1946e6bee59390d129e0de0d"),
    2: ("3a1495cf600355d6", "5e5a9cd54ea29af8f1b9641b595435bc93c9b871bd0bcef2dd5faeaf3072ad4b"),
    3: ("fe5546af3f93d527", "35e270fe552dc137c7729eb27ff94adda09a8b844860a477546d6a8fd52503ac"),
    4: ("76a1d120b2255811", "e407a0ad24015619bdf323853142acb30235e95a6d2e759e3573f4490d85ce53"),
    5: ("5b60c474d1a7d536", "824f27130128cd0fab1d3dadf6c6eef0890cb09800b8a63e604e9337ef0fb781"),
    6: ("e9a5ee400a81b8e2", "649ebc1357ecaeea45b2b87f2dc3c3220f843d70b8c83ca26078c3e6a06d789b"),
    7: ("7f064f75d52ec276", "d832c5605462ffd18a6e4c22fd03755a5b4893a9b9e1541721ba640b67d9115a"),
    8: ("045dc14822507e92", "e86595b6295f72c302eda6c41ca8b737e283c4f5e3acbf5a44992f026d16ad42"),
}


def test_applied_migrations_are_byte_for_byte_what_they_were():
    import hashlib

    names = Target("postgresql://u@h/db", "flagged_users", None, True).sql_names()
    got = {}
    for m in warehouse.MIGRATIONS:
        text = "\n;\n".join(m.statements)
        assert m.checksum() == hashlib.sha256(text.encode()).hexdigest()[:16]  # the checksum is of this text
        rendered = "\n;\n".join(s.format(**names) for s in m.statements)
        got[m.version] = (m.checksum(), hashlib.sha256(rendered.encode()).hexdigest())
    # a migration added later is not pinned here; every applied one is, unchanged
    assert {v: got[v] for v in APPLIED_MIGRATIONS} == APPLIED_MIGRATIONS


def test_an_edited_migration_is_refused(tmp_path, monkeypatch):
    """What the pins above guard against: migrate refuses a changed checksum."""
    url = f"duckdb:///{tmp_path}/w.duckdb"
    migrate(Target(url))
    first = warehouse.MIGRATIONS[0]
    edited = warehouse.Migration(first.version, first.name, (first.statements[0] + " ",))
    monkeypatch.setattr(warehouse, "MIGRATIONS", (edited,) + warehouse.MIGRATIONS[1:])
    with pytest.raises(UserError, match="0001_flagged_users has changed since it was applied"):
        migrate(Target(url))


def test_plain_path_is_a_duckdb_file(tmp_path, flagged):
    path = tmp_path / "nested" / "dir" / "w.duckdb"
    replace_day(flagged(D1, ["a"], "r"), str(path), "custom_table", D1)
    assert path.exists()
    with REAL_DUCKDB_CONNECT(str(path)) as con:
        assert con.sql("SELECT user_id FROM custom_table").fetchall() == [("a",)]


def test_flagged_rows_selects_flagged_users_in_contract_columns():
    scores = pd.DataFrame({
        "user_id": ["u1", "u2", "u3"],
        "score": [3.0, 2.0, 1.0],
        "rank": [1, 2, 3],
        "flagged": [True, False, True],
        "reasons": ["n_refund_7d=4 (p99.9)", "", "x=1 (p99.0)"],
        "model_version": ["m-1"] * 3,
        "as_of": [dt.date(2024, 3, 10)] * 3,
    })
    at = pd.Timestamp("2024-03-11T06:00:00Z")
    rows = flagged_rows(scores, "run-7", at)
    assert list(rows.columns) == list(FLAGGED_USERS_COLUMNS)
    assert rows["user_id"].tolist() == ["u1", "u3"]
    assert set(rows["run_id"]) == {"run-7"} and set(rows["scored_at"]) == {at}
    assert rows["anomaly_types"].tolist() == ["", ""]
    with_types = flagged_rows(scores.assign(anomaly_types=["refund_abuse", "", ""]), "r", at)
    assert with_types["anomaly_types"].tolist() == ["refund_abuse", ""]
    assert rows.index.tolist() == [0, 1]


# --- readers during a replace ---------------------------------------------------------------------


class Checkpoints:
    """Stands in for warehouse._checkpoint: the writer thread stops at chosen stages inside its
    transaction until the test has looked."""

    def __init__(self, stages=("loaded",)):
        self.stages = stages
        self.reached = threading.Semaphore(0)
        self.go_on = threading.Semaphore(0)
        self.seen: list[str] = []

    def __call__(self, stage: str) -> None:
        if stage in self.stages and threading.current_thread().name == "writer":
            self.seen.append(stage)
            self.reached.release()
            assert self.go_on.acquire(timeout=20), "test never released the writer"

    def wait(self) -> None:
        assert self.reached.acquire(timeout=20), "writer never reached its checkpoint"

    def release(self) -> None:
        self.go_on.release()


def run_writer(fn, name: str = "writer") -> tuple[threading.Thread, list]:
    errors: list = []

    def target():
        try:
            fn()
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread, errors


def _assert_old_then_new(backend, read, flagged, old_day, monkeypatch, swap_waits=None):
    """Readers see the old day at every stop inside the replace's transaction. PostgreSQL swaps
    the day's partition in at the end (`swap_waits`): from then to the commit a reader waits on
    the table's lock, and when the commit lets it go on it gets the whole new day."""
    checkpoints = Checkpoints(stages=("loaded", "before_commit"))
    monkeypatch.setattr(warehouse, "_checkpoint", checkpoints)
    thread, errors = run_writer(lambda: replace_day(flagged(D1, ["n1", "n2", "n3"], "new"), backend.url,
                                                    backend.table, D1))
    new_day = {"n1": "new", "n2": "new", "n3": "new"}
    for stage in ("loaded", "before_commit"):
        checkpoints.wait()
        if stage == "before_commit" and swap_waits is not None:
            waiting, got = swap_waits()
            checkpoints.release()
            waiting.join(timeout=20)
            assert not waiting.is_alive() and got == [new_day], got
            continue
        # inside the replace's transaction, the new rows staged: readers still see every old row
        assert read() == old_day, f"a reader saw a partial replace at {stage}"
        checkpoints.release()
    thread.join(timeout=20)
    assert not thread.is_alive() and not errors, errors
    assert checkpoints.seen == ["loaded", "before_commit"]
    assert read() == new_day


def test_postgres_reader_sees_old_rows_until_the_replace_commits(pg_url, flagged, monkeypatch):
    import psycopg

    backend = pg_backend(pg_url)
    replace_day(flagged(D1, ["o1", "o2"], "old"), backend.url, backend.table, D1)
    old_day = backend.day(D1)
    reader = psycopg.connect(pg_url, autocommit=True)  # another connection, open across the replace
    try:
        def read():
            got = dict(reader.execute(f"SELECT user_id, run_id FROM {backend.table} WHERE as_of = %s",
                                      [dt.date(2024, 3, 10)]).fetchall())
            latest = dict(reader.execute(f"SELECT user_id, run_id FROM {backend.table}_latest").fetchall())
            assert latest == got, "the latest view disagrees with the table"
            via_project = read_table(backend.url, backend.table, D1)  # the project's reader, its own connection
            assert dict(zip(via_project["user_id"], via_project["run_id"])) == got
            return got

        def swap_waits():
            """A reader started after the swap: it waits on the lock, holding no partial day."""
            got: list = []
            waiting = threading.Thread(target=lambda: got.append(read()), daemon=True)
            waiting.start()
            for _ in range(400):
                state = reader_watch.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [reader.info.backend_pid]).fetchone()
                if state and state[0] == "Lock":
                    break
                time.sleep(0.05)
            assert state and state[0] == "Lock", f"the reader did not wait on the swap's lock: {state}"
            assert waiting.is_alive() and got == []
            return waiting, got

        with psycopg.connect(pg_url, autocommit=True) as reader_watch:
            _assert_old_then_new(backend, read, flagged, old_day, monkeypatch, swap_waits)
    finally:
        reader.close()


def test_duckdb_reader_sees_old_rows_until_the_replace_commits(tmp_path, flagged, monkeypatch):
    backend = Backend("duckdb", f"duckdb:///{tmp_path}/w.duckdb", "flagged_users")
    replace_day(flagged(D1, ["o1", "o2"], "old"), backend.url, backend.table, D1)
    old_day = backend.day(D1)
    # one reader connection to the same file, held open across the replace
    reader = REAL_DUCKDB_CONNECT(parse_url(backend.url)[1])
    try:
        def read():
            return dict(reader.execute(f"SELECT user_id, run_id FROM {backend.table} WHERE as_of = ?",
                                       [dt.date(2024, 3, 10)]).fetchall())

        _assert_old_then_new(backend, read, flagged, old_day, monkeypatch)
    finally:
        reader.close()


def test_concurrent_readers_never_see_a_mix_or_a_gap(backend, flagged):
    """Two threads: one replaces the day over and over with alternating row sets, the other
    reads it as fast as it can. Every read must be exactly one complete set."""
    sets = {"A": [f"a{i}" for i in range(30)], "B": [f"b{i}" for i in range(12)]}
    replace_day(flagged(D2, ["steady"], "steady"), backend.url, backend.table, D2)
    replace_day(flagged(D1, sets["A"], "A"), backend.url, backend.table, D1)
    cycles = 24
    done = threading.Event()

    def write():
        try:
            for i in range(cycles):
                run = "B" if i % 2 == 0 else "A"
                replace_day(flagged(D1, sets[run], run), backend.url, backend.table, D1)
        finally:
            done.set()

    if backend.kind == "duckdb":
        reader = REAL_DUCKDB_CONNECT(parse_url(backend.url)[1])

        def read():
            return reader.execute(f"SELECT as_of, user_id, run_id FROM {backend.table}").fetchall()
    else:
        import psycopg

        reader = psycopg.connect(backend.url, autocommit=True)

        def read():
            return reader.execute(f"SELECT as_of, user_id, run_id FROM {backend.table}").fetchall()

    bad, reads = [], 0
    thread, errors = run_writer(write)
    try:
        while not done.is_set() or reads < 5:
            rows = read()
            reads += 1
            day = {(u, r) for d, u, r in rows if str(d) == D1}
            steady = {(u, r) for d, u, r in rows if str(d) == D2}
            runs = {r for _, r in day}
            ok = len(runs) == 1 and sorted(u for u, _ in day) == sorted(sets[next(iter(runs))])
            if not ok or steady != {("steady", "steady")}:
                bad.append((len(day), runs, steady))
    finally:
        thread.join(timeout=60)
        reader.close()
    assert not errors, errors
    assert not bad, f"{len(bad)} of {reads} reads saw a partial day, e.g. {bad[:3]}"
    assert reads >= 5
    assert backend.day(D1) == {u: "A" for u in sets["A"]}  # the last cycle wrote A


def test_postgres_overlapping_reruns_of_a_day_both_succeed(pg_url, flagged, monkeypatch):
    import psycopg

    backend = pg_backend(pg_url)
    users = [f"u{i}" for i in range(5)]
    replace_day(flagged(D1, users, "old"), backend.url, backend.table, D1)
    checkpoints = Checkpoints()  # only the thread named "writer" stops
    monkeypatch.setattr(warehouse, "_checkpoint", checkpoints)

    first, first_errors = run_writer(lambda: replace_day(flagged(D1, users, "first"), backend.url, backend.table, D1))
    checkpoints.wait()  # the first re-run has deleted the day and copied its rows, not yet committed
    second, second_errors = run_writer(
        lambda: replace_day(flagged(D1, users, "second"), backend.url, backend.table, D1), name="writer2")
    try:
        with psycopg.connect(backend.url, autocommit=True) as con:  # wait until the second one blocks
            for _ in range(200):
                waiting = con.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND wait_event_type = 'Lock' AND wait_event = 'advisory'").fetchone()[0]
                if waiting:
                    break
                threading.Event().wait(0.05)
            assert waiting, "the second re-run never waited on the day's lock"
    finally:
        checkpoints.release()
        first.join(timeout=20)
        second.join(timeout=20)
    assert not first_errors, first_errors
    assert not second_errors, second_errors
    assert backend.day(D1) == {u: "second" for u in users}


# --- PostgreSQL: a long reader and the swap ----------------------------------------------------------


def _writer_queued_on(watch, table: str) -> bool:
    """Whether the publishing connection waits in the lock queue of `table` (its swap's try)."""
    return bool(watch.execute(
        "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE a.application_name = "
        "'pipelines-warehouse' AND a.datname = current_database() AND l.locktype = 'relation' "
        "AND NOT l.granted AND l.relation = %s::regclass", [table]).fetchone())


def _long_reader(pg_url: str, table: str):
    """A connection in an open transaction that has read the day: it holds the table's
    ACCESS SHARE lock until it ends, as a long report query would."""
    import psycopg

    con = psycopg.connect(pg_url)  # not autocommit: the transaction stays open
    rows = dict(con.execute(f"SELECT user_id, run_id FROM {table} WHERE as_of = %s", [dt.date(2024, 3, 10)]).fetchall())
    return con, rows


def _wait_until_queued(pg_url: str, table: str, thread: threading.Thread, errors: list) -> None:
    """Polls until the publishing thread waits in `table`'s lock queue (behind a long reader)."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as watch:
        for _ in range(600):
            if _writer_queued_on(watch, table):
                return
            if not thread.is_alive():
                break
            time.sleep(0.05)
    pytest.fail(f"the publish never waited for the lock of {table}: {errors}")


def _second_reader(pg_url: str, query: str) -> list[tuple]:
    """A reader of day D1 that arrives while the swap waits: its statement_timeout, a little
    above one try of the swap, cancels it if it queues behind the swap for longer."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as second:
        second.execute("SELECT set_config('statement_timeout', %s, false)",
                       [f"{int((warehouse.DEFAULT_SWAP_TRY_S + 1.5) * 1000)}ms"])
        return second.execute(query, [dt.date(2024, 3, 10)]).fetchall()


class SwapRetries:
    """Stands in for warehouse._checkpoint: counts the swap's rolled-back tries."""

    def __init__(self):
        self.count = 0
        self.first = threading.Event()

    def __call__(self, stage: str) -> None:
        if stage == "swap_retry":
            self.count += 1
            self.first.set()


@pytest.fixture
def held_day(pg_url, flagged, monkeypatch):
    """A PostgreSQL table whose day D1 is o1, o2 of run "old", the swap's tries counted
    (SwapRetries as warehouse._checkpoint), and a long reader of the day (_long_reader) that
    holds the table until the test ends its transaction; closed at teardown."""
    backend = pg_backend(pg_url)
    replace_day(flagged(D1, ["o1", "o2"], "old"), backend.url, backend.table, D1)
    retries = SwapRetries()
    monkeypatch.setattr(warehouse, "_checkpoint", retries)
    old_day = {"o1": "old", "o2": "old"}
    reader, seen = _long_reader(pg_url, backend.table)
    try:
        assert seen == old_day
        yield SimpleNamespace(backend=backend, retries=retries, reader=reader, old_day=old_day)
    finally:
        reader.close()


def test_postgres_swap_waits_in_short_tries_so_readers_behind_it_get_through(pg_url, flagged, held_day):
    """A reader holds the day open; the publish's swap waits for it. A second reader that
    arrives then must not queue behind the swap for the swap's whole budget (120 s here): its
    statement_timeout, a little above one try, would cancel it. When the first reader ends,
    the publish completes with the new day, staged rows kept across the tries."""
    backend, retries, first = held_day.backend, held_day.retries, held_day.reader
    old_day, new_day = held_day.old_day, {"n1": "new", "n2": "new", "n3": "new"}
    thread, errors = run_writer(lambda: replace_day(flagged(D1, list(new_day), "new"), backend.url,
                                                    backend.table, D1, lock_timeout_s=120))
    _wait_until_queued(pg_url, backend.table, thread, errors)
    got = dict(_second_reader(pg_url, f"SELECT user_id, run_id FROM {backend.table} WHERE as_of = %s"))
    assert got == old_day  # it got through, and saw the whole old day
    assert retries.first.wait(timeout=30), "the swap never gave up a try"
    assert thread.is_alive() and not errors, errors  # still retrying, within its budget
    first.rollback()  # the first reader ends: the next try gets the lock
    thread.join(timeout=60)
    assert not thread.is_alive() and not errors, errors
    assert backend.day(D1) == new_day


def test_postgres_swap_gives_up_after_lock_timeout_and_keeps_the_old_day(flagged, held_day, monkeypatch):
    backend, retries = held_day.backend, held_day.retries
    started = time.monotonic()
    with pytest.raises(TransientWarehouseError, match="lock timeout") as info:
        replace_day(flagged(D1, ["n1"], "new"), backend.url, backend.table, D1, lock_timeout_s=1.0, swap_try_s=0.2)
    assert time.monotonic() - started >= 1.0 and retries.count >= 2, retries.count
    assert "\n" not in str(info.value)
    held_day.reader.close()  # the long reader ends
    assert backend.day(D1) == held_day.old_day
    replace_day(flagged(D1, ["n1"], "new"), backend.url, backend.table, D1, lock_timeout_s=5)  # nothing left over
    assert backend.day(D1) == {"n1": "new"} and retries.count >= 2


def test_postgres_a_reader_of_user_scores_does_not_hold_up_readers_of_flagged_users(pg_url, flagged, monkeypatch):
    """Both tables swap in one try: a try that gets flagged_users and then waits on user_scores
    gives flagged_users back when it is rolled back, so its readers get through."""
    import psycopg

    table = f"flagged_{uuid.uuid4().hex[:10]}"
    scores = f"scores_{uuid.uuid4().hex[:10]}"
    target = Target(pg_url, table, None, True, scores)
    migrate(target)

    def publish(run: str):
        rows = flagged(D1, ["a", "b"], run)
        return warehouse.publish(target, D1, rows, rows.assign(flagged=True).drop(columns=["reasons", "anomaly_types"]),
                                 lock_timeout_s=120)

    publish("old")
    retries = SwapRetries()
    monkeypatch.setattr(warehouse, "_checkpoint", retries)
    first, _ = _long_reader(pg_url, scores)
    try:
        thread, errors = run_writer(lambda: publish("new"))
        _wait_until_queued(pg_url, scores, thread, errors)
        assert {r[0] for r in _second_reader(pg_url, f"SELECT run_id FROM {table} WHERE as_of = %s")} == {"old"}
        assert retries.first.wait(timeout=30) and thread.is_alive()
        first.rollback()
        thread.join(timeout=60)
        assert not thread.is_alive() and not errors, errors
    finally:
        first.close()
    with psycopg.connect(pg_url, autocommit=True) as con:
        for t in (table, scores):
            assert {r[0] for r in con.execute(f"SELECT run_id FROM {t}").fetchall()} == {"new"}


# --- the swap's tries: params.yaml's warehouse section -------------------------------------------------


def test_the_swap_settings_are_params_checked_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from pipelines.config import default_params, load_params, validate_params

    import inspect

    defaults = default_params()["warehouse"]
    assert (defaults["swap_try_s"], defaults["swap_backoff_max_s"], defaults["lock_timeout_s"]) == (0.5, 1.0, 600.0)
    shipped = load_params(Path(__file__).resolve().parents[1] / "params.yaml")["warehouse"]
    assert (shipped["swap_try_s"], shipped["swap_backoff_max_s"]) == (0.5, 1.0)
    # made in code without params.yaml (tests, replace_day, a hand-built dict): the schema's defaults
    for made in (Target("postgresql://u@h/db"), Target.from_params({"warehouse": {"url": "postgresql://u@h/db"}})):
        assert (made.swap_try_s, made.swap_backoff_max_s) == (0.5, 1.0)
    signature = inspect.signature(warehouse.replace_day).parameters
    assert [signature[k].default for k in ("swap_try_s", "swap_backoff_max_s", "lock_timeout_s")] == [0.5, 1.0, 600.0]
    for bad, says in (({"swap_try_s": 0}, "warehouse.swap_try_s: must be >= 0.01 (got 0)"),
                      ({"swap_try_s": 61}, "warehouse.swap_try_s: must be <= 60"),
                      ({"swap_try_s": "fast"}, "warehouse.swap_try_s: "),
                      ({"swap_backoff_max_s": 0.01}, "warehouse.swap_backoff_max_s: must be >= 0.05 (got 0.01)"),
                      ({"swap_backoff_max_s": 3600}, "warehouse.swap_backoff_max_s: must be <= 60")):
        with pytest.raises(UserError) as info:
            validate_params({"warehouse": bad})
        assert str(info.value).startswith(f"params.yaml: {says}") and "\n" not in str(info.value), str(info.value)
    # from the command line: exit 2 and that one line, before any warehouse is touched
    params = tmp_path / "params.yaml"
    params.write_text("warehouse:\n  swap_try_s: -1\n")
    proc = subprocess.run([sys.executable, "-m", "pipelines", "--params", str(params), "warehouse", "migrate",
                           "--warehouse", f"duckdb:///{tmp_path}/w.duckdb"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{params}: warehouse.swap_try_s: must be >= 0.01 (got -1)" in proc.stderr, proc.stderr
    assert not (tmp_path / "w.duckdb").exists()
    # a valid value lands on the Target publish uses; one made in code is checked too
    target = Target.from_params(validate_params({"warehouse": {"swap_try_s": 0.2, "swap_backoff_max_s": 0.3}}))
    assert (target.swap_try_s, target.swap_backoff_max_s) == (0.2, 0.3)
    with pytest.raises(UserError, match=r"warehouse.swap_try_s must be a number of seconds above 0 \(got 0\)"):
        Target("postgresql://u@h/db", swap_try_s=0)


class _RecordingCursor:
    """A cursor that records each statement and its parameters, then runs it."""

    def __init__(self, cur, sent: list):
        self._cur, self._sent = cur, sent

    def execute(self, query, params=None):
        self._sent.append((query, params))
        return self._cur.execute(query, params)

    def __getattr__(self, name):
        return getattr(self._cur, name)


def test_postgres_the_swap_settings_in_params_reach_the_swap(pg_url, tmp_path, held_day, monkeypatch):
    """publish_stage with warehouse.swap_try_s 0.2 and swap_backoff_max_s 0.1 against a day a
    reader holds: every try of the swap waits 200 ms in the lock queue (its lock_timeout) and
    the pauses between tries go 0.05, 0.1, 0.1, ... until lock_timeout_s is spent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.stages import publish_stage

    backend = held_day.backend
    n = 20
    scores = pd.DataFrame({"user_id": [f"n{i}" for i in range(n)], "score": [float(n - i) for i in range(n)],
                           "rank": list(range(1, n + 1)), "flagged": [True] * n, "reasons": ["f=1 (p99.0)"] * n,
                           "model_version": ["m-1"] * n, "as_of": [pd.Timestamp(D1).date()] * n,
                           "anomaly_types": [""] * n})
    pq.write_table(pa.Table.from_pandas(scores, preserve_index=False), tmp_path / "scores.parquet")
    params = {"storage": {"reports": str(tmp_path / "reports")},
              "warehouse": {"url": backend.url, "table": backend.table, "lock_timeout_s": 1.5,
                            "swap_try_s": 0.2, "swap_backoff_max_s": 0.1}}
    sent: list = []
    real_swap = warehouse._pg_swap
    monkeypatch.setattr(warehouse, "_pg_swap", lambda cur, *a: real_swap(_RecordingCursor(cur, sent), *a))
    pauses: list[float] = []
    monkeypatch.setattr(warehouse, "time", SimpleNamespace(monotonic=time.monotonic,
                                                           sleep=lambda s: (pauses.append(s), time.sleep(s))))
    with pytest.raises(TransientWarehouseError, match="for 1.5 s"):
        publish_stage(params, D1, scores_in=str(tmp_path / "scores.parquet"), run_id="new")
    waits = [p[0] for q, p in sent if "set_config('lock_timeout'" in q]
    # each try waits 200 ms, bar the last one or two that get what is left of the 1.5 s; the last
    # gives up instead of being retried
    assert waits.count("200ms") >= 3 and all(int(w.removesuffix("ms")) <= 200 for w in waits), waits
    assert held_day.retries.count == len(waits) - 1, (waits, held_day.retries.count)
    assert pauses[:2] == [0.05, 0.1] and max(pauses) == 0.1, pauses
    held_day.reader.close()
    assert backend.day(D1) == held_day.old_day
