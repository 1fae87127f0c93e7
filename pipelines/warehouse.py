"""The flagged_users table: embedded DuckDB by default, PostgreSQL through a SQLAlchemy URL.

- The schema is made by versioned migrations (`MIGRATIONS`, applied in order and recorded in
  `<schema>.schema_migrations`), run by the owner with `python -m pipelines warehouse migrate`.
  Writes run no DDL; on PostgreSQL a database that is behind stops publishing with one line
  that says to migrate. The embedded DuckDB default migrates itself (one process, one file, no
  roles), so it needs no setup.
- Re-publishing a day replaces that day's rows in one transaction that first takes a per-day
  lock, so a reader sees the old rows or the new ones, never a mix or a gap, and a writer that
  dies mid-load leaves the old day. Rows go in with COPY (PostgreSQL) or from Arrow (DuckDB),
  batch by batch, so publishing a million users never holds them all in pandas.
- On DuckDB a rerun of a day writes over the rows of the users the day keeps (INSERT ... ON
  CONFLICT DO UPDATE from a staged copy) and deletes only those it drops: a deleted row leaves
  DuckDB's indexes one at a time at the commit, so deleting a million-row day made a rerun ~7x
  slower than the first run.
- On PostgreSQL each table is partitioned by day: the day is COPYed into a staging table with
  no index, indexed in bulk, and swapped in for the old day's partition (two SECURITY DEFINER
  functions, so the writer still has no DDL rights); readers of the day wait from the swap to
  the commit (milliseconds), then see the new rows. The partitions and staging tables live in
  `<schema>_days` (migration 0009), where the reader has no rights: it reads the tables and
  the view (PostgreSQL checks only the table a query names), never a day partition by its name.
  A reader in the middle of a query on the table makes the swap wait: it waits in short tries
  (warehouse.swap_try_s) with back-off up to warehouse.swap_backoff_max_s, so readers that
  arrive meanwhile are not queued behind it for long.
- Names from configuration are checked and double-quoted; values are bound parameters.
- A database that is down, busy or locked raises TransientWarehouseError (retry later); a bad
  URL, name or missing migration raises UserError (fix the configuration).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io as _io
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import experiment_warehouse_target, section, warehouse_target
from pipelines.errors import TransientWarehouseError, UserError
from pipelines.schema import FLAGGED_USERS_COLUMNS

LOCK_WAIT_S = 60.0  # DuckDB: how long to wait for another process's lock on the file
# A Target or replace_day made without params.yaml gets the params schema's defaults, so the
# two cannot drift apart. PostgreSQL: how long to wait for another writer of the same day; the
# day's swap waits for readers of the table in tries of at most swap_try_s in the lock queue (a
# reader arriving meanwhile waits behind it that long at most), with back-off between tries up
# to swap_backoff_max_s, until lock_timeout_s is spent.
_PARAMS_DEFAULTS = section({}, "warehouse")
DEFAULT_LOCK_TIMEOUT_S = _PARAMS_DEFAULTS["lock_timeout_s"]
DEFAULT_SWAP_TRY_S = _PARAMS_DEFAULTS["swap_try_s"]
DEFAULT_SWAP_BACKOFF_MAX_S = _PARAMS_DEFAULTS["swap_backoff_max_s"]
_SWAP_FIRST_BACKOFF_S = 0.05  # doubled after each try, up to swap_backoff_max_s
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MIGRATIONS_TABLE = "schema_migrations"

FLAGGED_ARROW = pa.schema([
    ("as_of", pa.date32()),
    ("user_id", pa.string()),
    ("score", pa.float64()),
    ("rank", pa.int64()),
    ("reasons", pa.string()),
    ("anomaly_types", pa.string()),
    ("model_version", pa.string()),
    ("run_id", pa.string()),
    ("scored_at", pa.timestamp("us", tz="UTC")),
])
assert tuple(FLAGGED_ARROW.names) == FLAGGED_USERS_COLUMNS

USER_SCORES_ARROW = pa.schema([
    ("as_of", pa.date32()),
    ("user_id", pa.string()),
    ("score", pa.float64()),
    ("rank", pa.int64()),
    ("flagged", pa.bool_()),
    ("model_version", pa.string()),
    ("run_id", pa.string()),
    ("scored_at", pa.timestamp("us", tz="UTC")),
])


# ----------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    option: str | None = None  # applied only when this option is on (e.g. user_scores)
    dialect: str | None = None  # applied only on this backend ("postgresql"); None: on both

    def checksum(self) -> str:
        # of the templates, not the rendered SQL: the same migration under another name is the same
        return hashlib.sha256("\n;\n".join(self.statements).encode()).hexdigest()[:16]


# Both functions refuse anything but a day-partitioned table of their own schema ({schema_lit}),
# and the staging table's name is fixed by the parent and the day: the writer gets no general DDL.
_DAY_PARENT_CHECK = """
  SELECT n.nspname, c.relname INTO nsp, rel FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent AND c.relkind = 'p';
  IF nsp IS DISTINCT FROM {schema_lit} THEN
    RAISE EXCEPTION 'pipelines: % is not a day-partitioned table of schema %', parent, {schema_lit};
  END IF;"""

_STAGE_DAY_FUNCTION = """
CREATE OR REPLACE FUNCTION {fn_stage}(parent regclass, day date) RETURNS regclass
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE nsp text; rel text; staging text;
BEGIN""" + _DAY_PARENT_CHECK + """
  staging := rel || '_n' || to_char(day, 'YYYYMMDD');
  EXECUTE format('DROP TABLE IF EXISTS %I.%I', nsp, staging);
  -- no index yet: COPY appends without maintaining one; the CHECK lets ATTACH skip its scan
  EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS, CHECK (as_of = %L::date))',
                 nsp, staging, nsp, rel, day);
  RETURN format('%I.%I', nsp, staging)::regclass;
END $fn$"""

_STAGING_CHECK = """
  IF staging IS DISTINCT FROM to_regclass(format('%I.%I', nsp, rel || '_n' || to_char(day, 'YYYYMMDD'))) THEN
    RAISE EXCEPTION 'pipelines: % is not the staging table of % for %', staging, parent, day;
  END IF;"""

# the parent's indexes, built on the staged table in bulk
_BUILD_INDEXES = """
  FOR ix IN SELECT i.indexrelid, i.indisunique, i.indisprimary, i.indnatts FROM pg_catalog.pg_index i
            WHERE i.indrelid = parent ORDER BY i.indexrelid LOOP
    SELECT string_agg(pg_catalog.pg_get_indexdef(ix.indexrelid, k, false), ', ' ORDER BY k) INTO cols
      FROM generate_series(1, ix.indnatts) k;
    IF ix.indisprimary THEN
      EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (%s)', staging, cols);
    ELSE
      EXECUTE format('CREATE %s INDEX ON %s (%s)', CASE WHEN ix.indisunique THEN 'UNIQUE' ELSE '' END, staging, cols);
    END IF;
  END LOOP;"""

_PARTITION_NAME = """
  part := rel || '_p' || to_char(day, 'YYYYMMDD');"""

# the old day's partition out, the staged table in under its name
_SWAP_IN = """
  -- from here to the commit readers of the parent wait (milliseconds), then see the new day
  IF to_regclass(format('%I.%I', nsp, part)) IS NOT NULL THEN
    EXECUTE format('ALTER TABLE %s DETACH PARTITION %I.%I', parent, nsp, part);
    EXECUTE format('DROP TABLE %I.%I', nsp, part);
  END IF;
  EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES IN (%L)', parent, staging, day);
  EXECUTE format('ALTER TABLE %s RENAME TO %I', staging, part);"""


def _staged_day_function(function: str, declare: str, body: str) -> str:
    """A SECURITY DEFINER function `function`(parent, staging, day) that checks both tables
    (_DAY_PARENT_CHECK, _STAGING_CHECK), then runs `body`. Its text is part of migrations 0005
    and 0008, whose checksums are recorded: what it renders must never change
    (tests/test_warehouse.py pins it)."""
    return ("""
CREATE OR REPLACE FUNCTION """ + function + """(parent regclass, staging regclass, day date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET maintenance_work_mem = '256MB' AS $fn$
DECLARE """ + declare + """
BEGIN""" + _DAY_PARENT_CHECK + _STAGING_CHECK + body + """
END $fn$""")


# 0005: one function indexes the staged day and swaps it in
_SWAP_DAY_FUNCTION = _staged_day_function(
    "{fn_swap}", "nsp text; rel text; part text; ix record; cols text;",
    _PARTITION_NAME + """
  -- the parent's indexes, built in bulk on the staged day while readers still read the old one"""
    + _BUILD_INDEXES + _SWAP_IN)

# 0008: the staged day's indexes are built by a function of their own, before the swap and
# outside its retries (it takes no lock a reader of the table holds); the swap builds them
# only when nothing did (a caller of 0005's protocol), then only swaps.
_INDEX_DAY_FUNCTION = _staged_day_function(
    "{fn_index}", "nsp text; rel text; ix record; cols text;", """
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = staging) THEN
    RETURN;  -- indexed already
  END IF;""" + _BUILD_INDEXES)

_SWAP_ONLY_DAY_FUNCTION = _staged_day_function(
    "{fn_swap}", "nsp text; rel text; part text;", """
  PERFORM {fn_index}(parent, staging, day);  -- returns at once when the caller indexed it"""
    + _PARTITION_NAME + _SWAP_IN)


def _partition_by_day(key: str, view: str | None = None) -> str:
    """One PL/pgSQL block that turns the table `key` into a table partitioned by as_of, a
    partition per day it holds, keeping its rows, indexes, grants and (if given) the view on it."""
    return """
DO $mig$
DECLARE nsp text := {schema_lit}; rel text := {%(key)s_lit}; old text := rel || '_unpartitioned';
        view text := %(view)s; cols text; day date; g record; ix record; idx text;
        table_grants text[] := ARRAY[]::text[]; view_grants text[] := ARRAY[]::text[];
        index_defs text[] := ARRAY[]::text[]; view_def text; pk text;
BEGIN
  IF (SELECT c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = nsp AND c.relname = rel) = 'p' THEN
    RETURN;  -- already by day
  END IF;
  FOR g IN SELECT grantee, privilege_type FROM information_schema.role_table_grants
           WHERE table_schema = nsp AND table_name = rel AND grantee <> current_user LOOP
    table_grants := table_grants || format('GRANT %%s ON %%I.%%I TO %%s', g.privilege_type, nsp, rel,
                                          CASE WHEN g.grantee = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(g.grantee) END);
  END LOOP;
  FOR ix IN SELECT c.relname, pg_catalog.pg_get_indexdef(i.indexrelid) AS def FROM pg_catalog.pg_index i
            JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
            WHERE i.indrelid = format('%%I.%%I', nsp, rel)::regclass AND NOT i.indisprimary LOOP
    index_defs := index_defs || ix.def;
    EXECUTE format('DROP INDEX %%I.%%I', nsp, ix.relname);
  END LOOP;
  IF view IS NOT NULL AND to_regclass(format('%%I.%%I', nsp, view)) IS NOT NULL THEN
    view_def := pg_catalog.pg_get_viewdef(format('%%I.%%I', nsp, view)::regclass);
    FOR g IN SELECT grantee, privilege_type FROM information_schema.role_table_grants
             WHERE table_schema = nsp AND table_name = view AND grantee <> current_user LOOP
      view_grants := view_grants || format('GRANT %%s ON %%I.%%I TO %%s', g.privilege_type, nsp, view,
                                         CASE WHEN g.grantee = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(g.grantee) END);
    END LOOP;
    EXECUTE format('DROP VIEW %%I.%%I', nsp, view);
  END IF;
  EXECUTE format('ALTER TABLE %%I.%%I RENAME TO %%I', nsp, rel, old);
  SELECT conname INTO pk FROM pg_catalog.pg_constraint
    WHERE conrelid = format('%%I.%%I', nsp, old)::regclass AND contype = 'p';
  IF pk IS NOT NULL THEN  -- frees the name for the new table's key
    EXECUTE format('ALTER TABLE %%I.%%I RENAME CONSTRAINT %%I TO %%I', nsp, old, pk, old || '_pkey');
  END IF;
  EXECUTE format('CREATE TABLE %%I.%%I (LIKE %%I.%%I INCLUDING DEFAULTS, PRIMARY KEY (as_of, user_id)) '
                 'PARTITION BY LIST (as_of)', nsp, rel, nsp, old);
  FOREACH idx IN ARRAY index_defs LOOP  -- the same definitions, now on the partitioned table
    EXECUTE idx;  -- captured before the rename: they name the table as it is called again now
  END LOOP;
  FOR day IN EXECUTE format('SELECT DISTINCT as_of FROM %%I.%%I ORDER BY 1', nsp, old) LOOP
    EXECUTE format('CREATE TABLE %%I.%%I PARTITION OF %%I.%%I FOR VALUES IN (%%L)',
                   nsp, rel || '_p' || to_char(day, 'YYYYMMDD'), nsp, rel, day);
  END LOOP;
  EXECUTE format('INSERT INTO %%I.%%I SELECT * FROM %%I.%%I', nsp, rel, nsp, old);
  EXECUTE format('DROP TABLE %%I.%%I', nsp, old);
  FOREACH idx IN ARRAY table_grants LOOP EXECUTE idx; END LOOP;
  IF view_def IS NOT NULL THEN
    EXECUTE format('CREATE VIEW %%I.%%I AS %%s', nsp, view, view_def);
    FOREACH idx IN ARRAY view_grants LOOP EXECUTE idx; END LOOP;
  END IF;
END $mig$""" % {"key": key, "view": "{%s_lit}" % view if view else "NULL"}


# 0009/0010: a table's day partitions (and its staging tables) live in a schema of their own,
# <schema>_days (Target.days_schema), on which the reader has no USAGE: the default privileges
# that give the reader SELECT on whatever the owner creates in the table's schema covered every
# partition, so a reader could query flagged_users_p20261121 itself. PostgreSQL checks the
# rights of the table a query names and not those of its partitions, so the parent and the view
# read as before. The writer gets USAGE there and, as the owner's default privilege, INSERT on
# the staging tables fn_stage makes for its COPY (grant-writer); it cannot SELECT them.
_DAYS_SCHEMA_BLOCK = """
DO $mig$
DECLARE nsp text := {schema_lit}; days text := {days_lit}; rel text := {table_lit};
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = days) THEN
    IF NOT pg_catalog.has_database_privilege(current_database(), 'CREATE') THEN
      RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = format('the day partitions of %I.%I need the schema %I, which %I may not create',
                         nsp, rel, days, current_user),
        HINT = format('as a DBA run CREATE SCHEMA %I AUTHORIZATION %I; then migrate again', days, current_user);
    END IF;
    EXECUTE format('CREATE SCHEMA %I', days);
  ELSIF NOT pg_catalog.has_schema_privilege(days, 'CREATE') THEN
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
      MESSAGE = format('the day partitions of %I.%I go into the schema %I, where %I may not create tables',
                       nsp, rel, days, current_user),
      HINT = format('as a DBA run ALTER SCHEMA %I OWNER TO %I; then migrate again', days, current_user);
  END IF;
  EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', days);
END $mig$"""


def _move_days(key: str) -> str:
    """A PL/pgSQL block that moves the day partitions of the table `key` from its schema into the
    days schema, taking back every right on them but the owner's (a partition read nothing but
    its parent's rows; the reader's SELECT on it came from a grant in the table's schema)."""
    return """
DO $mig$
DECLARE nsp text := {schema_lit}; days text := {days_lit}; rel text := {%(key)s_lit}; p record; g record;
BEGIN
  FOR p IN SELECT c.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           WHERE i.inhparent = format('%%I.%%I', nsp, rel)::regclass AND n.nspname = nsp ORDER BY 1 LOOP
    EXECUTE format('ALTER TABLE %%I.%%I SET SCHEMA %%I', nsp, p.relname, days);  -- its indexes go with it
    FOR g IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c, LATERAL pg_catalog.aclexplode(c.relacl) a
             WHERE c.oid = format('%%I.%%I', days, p.relname)::regclass AND a.grantee <> c.relowner LOOP
      EXECUTE format('REVOKE ALL ON %%I.%%I FROM %%s', days, p.relname,
                     CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END);
    END LOOP;
  END LOOP;
END $mig$""" % {"key": key}


# The writers granted before 0009 (the roles grant-writer gave EXECUTE on fn_stage) publish on
# without a new grant: USAGE on the days schema, INSERT on the staging tables fn_stage makes there.
_DAYS_WRITERS_BLOCK = """
DO $mig$
DECLARE days text := {days_lit}; stage regprocedure := '{fn_stage}(regclass, date)'::regprocedure;
        maker regrole; g record;
BEGIN
  SELECT f.proowner::regrole INTO maker FROM pg_catalog.pg_proc f WHERE f.oid = stage;
  FOR g IN SELECT DISTINCT a.grantee::regrole::text AS role
           FROM pg_catalog.pg_proc f, LATERAL pg_catalog.aclexplode(f.proacl) a
           WHERE f.oid = stage AND a.privilege_type = 'EXECUTE' AND a.grantee <> f.proowner AND a.grantee <> 0 LOOP
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %s', days, g.role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %s IN SCHEMA %I GRANT INSERT ON TABLES TO %s',
                   maker, days, g.role);
  END LOOP;
END $mig$"""

_DAYS_STAGE_FUNCTION = """
CREATE OR REPLACE FUNCTION {fn_stage}(parent regclass, day date) RETURNS regclass
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE nsp text; rel text; days text := {days_lit}; staging text;
BEGIN""" + _DAY_PARENT_CHECK + """
  staging := rel || '_n' || to_char(day, 'YYYYMMDD');
  EXECUTE format('DROP TABLE IF EXISTS %I.%I', days, staging);
  -- no index yet: COPY appends without maintaining one; the CHECK lets ATTACH skip its scan
  EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS, CHECK (as_of = %L::date))',
                 days, staging, nsp, rel, day);
  RETURN format('%I.%I', days, staging)::regclass;
END $fn$"""

_DAYS_STAGING_CHECK = """
  IF staging IS DISTINCT FROM to_regclass(format('%I.%I', days, rel || '_n' || to_char(day, 'YYYYMMDD'))) THEN
    RAISE EXCEPTION 'pipelines: % is not the staging table of % for %', staging, parent, day;
  END IF;"""

# the old day's partition found among the parent's, wherever it is: in the days schema, or in
# the table's own (a partition of another table of the schema that 0009 has not moved yet)
_DAYS_SWAP_IN = """
  SELECT i.inhrelid::regclass INTO old FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent AND c.relname = part;
  -- from here to the commit readers of the parent wait (milliseconds), then see the new day
  IF old IS NOT NULL THEN
    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, old);
    EXECUTE format('DROP TABLE %s', old);
  END IF;
  EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES IN (%L)', parent, staging, day);
  EXECUTE format('ALTER TABLE %s RENAME TO %I', staging, part);"""


def _days_staged_function(function: str, declare: str, body: str) -> str:
    """_staged_day_function for 0009: the staging table is the one in the days schema."""
    return ("""
CREATE OR REPLACE FUNCTION """ + function + """(parent regclass, staging regclass, day date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET maintenance_work_mem = '256MB' AS $fn$
DECLARE days text := {days_lit}; """ + declare + """
BEGIN""" + _DAY_PARENT_CHECK + _DAYS_STAGING_CHECK + body + """
END $fn$""")


_DAYS_INDEX_FUNCTION = _days_staged_function(
    "{fn_index}", "nsp text; rel text; ix record; cols text;", """
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = staging) THEN
    RETURN;  -- indexed already
  END IF;""" + _BUILD_INDEXES)

_DAYS_SWAP_FUNCTION = _days_staged_function(
    "{fn_swap}", "nsp text; rel text; part text; old regclass;", """
  PERFORM {fn_index}(parent, staging, day);  -- returns at once when the caller indexed it"""
    + _PARTITION_NAME + _DAYS_SWAP_IN)


# Never edit an applied migration (migrate refuses a changed checksum): add the next number.
# Placeholders are quoted, schema-qualified names. Migration 1 is the DDL the pipeline used to
# run on every write, so a table made by that code is adopted as it is.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "flagged_users", ("""
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
        )""",)),
    # by day (the primary key leads with as_of too; this one also gives the day in rank order),
    # by user (a user's history) and by score
    Migration(2, "flagged_users_indexes", (
        "CREATE INDEX IF NOT EXISTS {ix_day} ON {table} (as_of, rank)",
        "CREATE INDEX IF NOT EXISTS {ix_user} ON {table} (user_id, as_of)",
        "CREATE INDEX IF NOT EXISTS {ix_score} ON {table} (score)",
    )),
    Migration(3, "flagged_users_latest_view", ("""
        CREATE OR REPLACE VIEW {latest} AS
        SELECT DISTINCT ON (user_id)
               as_of, user_id, score, rank, reasons, anomaly_types, model_version, run_id, scored_at
        FROM {table}
        ORDER BY user_id, as_of DESC""",)),
    Migration(4, "user_scores", ("""
        CREATE TABLE IF NOT EXISTS {scores} (
            as_of DATE NOT NULL,
            user_id VARCHAR NOT NULL,
            score DOUBLE PRECISION NOT NULL,
            rank BIGINT NOT NULL,
            flagged BOOLEAN NOT NULL,
            model_version VARCHAR NOT NULL,
            run_id VARCHAR NOT NULL,
            scored_at TIMESTAMP WITH TIME ZONE NOT NULL,
            PRIMARY KEY (as_of, user_id)
        )""", "CREATE INDEX IF NOT EXISTS {ix_scores_user} ON {scores} (user_id, as_of)"), option="user_scores"),
    # PostgreSQL: one partition per day, so that a day is loaded into a table of its own with no
    # index to maintain row by row (COPY runs at the server's bare rate), indexed in bulk, and
    # swapped in; replacing a day drops the old partition instead of deleting rows (no vacuum
    # debt). The writer stays without DDL rights: two SECURITY DEFINER functions do the staging
    # and the swap, for the schema's day-partitioned tables only.
    Migration(5, "day_partition_functions", (_STAGE_DAY_FUNCTION, _SWAP_DAY_FUNCTION,
                                             "REVOKE ALL ON FUNCTION {fn_stage}(regclass, date) FROM PUBLIC",
                                             "REVOKE ALL ON FUNCTION {fn_swap}(regclass, regclass, date) FROM PUBLIC"),
              dialect="postgresql"),
    Migration(6, "flagged_users_by_day", (_partition_by_day("table", "latest"),), dialect="postgresql"),
    Migration(7, "user_scores_by_day", (_partition_by_day("scores"),), option="user_scores", dialect="postgresql"),
    # PostgreSQL: the staged day indexed by a function of its own, so that the swap, retried in
    # short tries while readers hold the table, does not rebuild the indexes on every try
    Migration(8, "day_index_function", (_INDEX_DAY_FUNCTION, _SWAP_ONLY_DAY_FUNCTION,
                                        "REVOKE ALL ON FUNCTION {fn_index}(regclass, regclass, date) FROM PUBLIC"),
              dialect="postgresql"),
    # PostgreSQL: the day partitions and staging tables in <schema>_days, out of the reader's reach
    Migration(9, "days_schema", (_DAYS_SCHEMA_BLOCK, _move_days("table"), _DAYS_STAGE_FUNCTION,
                                 _DAYS_INDEX_FUNCTION, _DAYS_SWAP_FUNCTION, _DAYS_WRITERS_BLOCK),
              dialect="postgresql"),
    Migration(10, "user_scores_days_schema", (_move_days("scores"),), option="user_scores", dialect="postgresql"),
)


# ----------------------------------------------------------------------------- targets


def _name(value: str, what: str) -> str:
    """A configured SQL name, folded to lower case as unquoted SQL folds it (so a table the old
    unquoted DDL made is found), then always double-quoted: reserved words work too."""
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise UserError(f"{what} {value!r} must be a plain SQL name (letters, digits, underscores, "
                        f"at most 63, not starting with a digit)")
    return value.lower()


def _quote(name: str) -> str:
    return f'"{name}"'  # safe: _name admits no quote character


@dataclass(frozen=True)
class Target:
    """Where the tables live: a URL, a schema (None: the backend's default, `public` on
    PostgreSQL, `main` on DuckDB), the flagged-users table and the optional user_scores table;
    and how the PostgreSQL swap of a day waits for readers of them (swap_try_s a try,
    back-off up to swap_backoff_max_s; see _pg_swap)."""

    url: str
    table: str = "flagged_users"
    schema: str | None = None
    user_scores: bool = False
    user_scores_table: str = "user_scores"
    swap_try_s: float = DEFAULT_SWAP_TRY_S
    swap_backoff_max_s: float = DEFAULT_SWAP_BACKOFF_MAX_S

    def __post_init__(self):
        kind, target = parse_url(self.url)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "location", target)
        object.__setattr__(self, "table", _name(self.table, "warehouse.table"))
        object.__setattr__(self, "user_scores_table", _name(self.user_scores_table, "warehouse.user_scores_table"))
        schema = self.schema if self.schema is not None else ("main" if kind == "duckdb" else "public")
        object.__setattr__(self, "schema", _name(schema, "warehouse.schema"))
        for derived in self.names().values():
            if len(derived) > 63:
                raise UserError(f"warehouse.table {self.table!r} is too long: {derived!r} (derived from it) "
                                f"exceeds 63 characters")
        for key in ("swap_try_s", "swap_backoff_max_s"):  # params.yaml's are checked with tighter bounds
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise UserError(f"warehouse.{key} must be a number of seconds above 0 (got {value!r})")
        if kind != "duckdb" and len(self.days_schema) > 63:  # DuckDB has no days schema
            raise UserError(f"warehouse.schema {self.schema!r} is too long: {self.days_schema!r}, the schema of "
                            f"its day partitions, exceeds 63 characters")

    @classmethod
    def from_params(cls, params: dict, url: str | None = None, experiment: bool = False) -> Target:
        default_url, table = experiment_warehouse_target(params) if experiment else warehouse_target(params)
        w = section(params, "warehouse")
        return cls(url or default_url, table, w["schema"], bool(w["user_scores"]), w["user_scores_table"],
                   w["swap_try_s"], w["swap_backoff_max_s"])

    def names(self) -> dict[str, str]:
        t, u = self.table, self.user_scores_table
        return {"table": t, "latest": f"{t}_latest", "ix_day": f"{t}_as_of_rank_idx",
                "ix_user": f"{t}_user_id_idx", "ix_score": f"{t}_score_idx", "scores": u,
                "ix_scores_user": f"{u}_user_id_idx", "fn_stage": "pipelines_stage_day",
                "fn_swap": "pipelines_swap_day", "fn_index": "pipelines_index_day",
                # PostgreSQL's day partitions and what the by-day migration renames: not templates,
                # listed so that their length is checked with the rest
                "~part": f"{t}_p20261121", "~staging": f"{t}_n20261121", "~old": f"{t}_unpartitioned",
                "~scores_part": f"{u}_p20261121", "~scores_old": f"{u}_unpartitioned"}

    @property
    def days_schema(self) -> str:
        """PostgreSQL: the schema of the tables' day partitions and staging tables (0009), which
        the reader may not use."""
        return f"{self.schema}_days"

    def sql_names(self) -> dict[str, str]:
        """Quoted names for the migration templates: tables, views and functions
        schema-qualified, indexes bare (an index lives in its table's schema), and `*_lit` the
        schema and tables as SQL string literals (for PL/pgSQL)."""
        s = _quote(self.schema)
        names = {k: (_quote(v) if k.startswith("ix_") else f"{s}.{_quote(v)}")
                 for k, v in self.names().items() if not k.startswith("~")}
        # checked identifiers (letters, digits, _): safe inside quotes
        literals = {"schema": self.schema, "table": self.table, "latest": f"{self.table}_latest",
                    "scores": self.user_scores_table}
        names.update({f"{k}_lit": f"'{v}'" for k, v in literals.items()})
        names.update({"days": _quote(self.days_schema), "days_lit": f"'{self.days_schema}'"})
        return names

    def qualified(self, key: str = "table") -> str:
        return self.sql_names()[key]

    def options(self) -> set[str]:
        return {"user_scores"} if self.user_scores else set()

    def wanted(self, options: set[str] | None = None) -> list[Migration]:
        options = self.options() if options is None else options
        return [m for m in MIGRATIONS if (m.option is None or m.option in options)
                and (m.dialect is None or m.dialect == ("duckdb" if self.kind == "duckdb" else "postgresql"))]

    @property
    def safe_url(self) -> str:
        return redact(self.url)


def parse_url(url: str) -> tuple[str, str]:
    """('duckdb', file path) or ('sqlalchemy', URL)."""
    if url.startswith("duckdb:///"):
        return "duckdb", url[len("duckdb:///"):]
    if url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)
        return "sqlalchemy", url
    if "://" not in url:
        return "duckdb", url
    raise UserError(f"warehouse.url {redact(url)!r}: use duckdb:///path/file.duckdb or postgresql://user@host/db")


def redact(url: str) -> str:
    """The URL with its password hidden, as SQLAlchemy renders it. A password with an unescaped
    `@` (which SQLAlchemy would read as part of the host) hides everything before the last `@`."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = str(url)
    try:
        parsed = make_url(text)
    except (ArgumentError, ValueError):
        parsed = None
    if parsed is not None and "@" not in (parsed.host or "") and "@" not in (parsed.database or ""):
        return parsed.render_as_string(hide_password=True)
    if "://" in text and "@" in text:
        scheme, rest = text.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return text


# ----------------------------------------------------------------------------- rows


def flagged_rows(scores: pd.DataFrame, run_id: str, scored_at: pd.Timestamp) -> pd.DataFrame:
    rows = scores.loc[scores["flagged"]].copy()
    rows["run_id"] = run_id
    rows["scored_at"] = scored_at
    if "anomaly_types" not in rows.columns:
        rows["anomaly_types"] = ""
    return rows[list(FLAGGED_USERS_COLUMNS)].reset_index(drop=True)


def flagged_batches(batches: Iterable[pa.RecordBatch], run_id: str, scored_at) -> Iterator[pa.RecordBatch]:
    """Score batches (the score step's columns) -> the flagged users among them, as table rows."""
    for batch in batches:
        batch = batch.filter(pc.fill_null(batch.column("flagged"), False))
        if batch.num_rows:
            yield _with_run(batch, run_id, scored_at, FLAGGED_ARROW)


def score_batches(batches: Iterable[pa.RecordBatch], run_id: str, scored_at) -> Iterator[pa.RecordBatch]:
    """Score batches -> user_scores rows (every user, flagged or not)."""
    for batch in batches:
        if batch.num_rows:
            yield _with_run(batch, run_id, scored_at, USER_SCORES_ARROW)


def _with_run(batch: pa.RecordBatch, run_id: str, scored_at, schema: pa.Schema) -> pa.RecordBatch:
    n, names = batch.num_rows, batch.schema.names
    added = {"run_id": pa.array([run_id] * n, pa.string()),
             "scored_at": pa.array([pd.Timestamp(scored_at).to_pydatetime()] * n, pa.timestamp("us", tz="UTC"))}
    if "anomaly_types" not in names:  # scores from before the reviewer's hint existed
        added["anomaly_types"] = pa.array([""] * n, pa.string())
    columns = {name: batch.column(name) for name in names if name not in added} | added
    kept = [f.name for f in schema if f.name in columns]
    return _conform(pa.RecordBatch.from_arrays([columns[k] for k in kept], names=kept), schema)


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """The batch with exactly the schema's columns, in order, cast to its types."""
    missing = [f.name for f in schema if f.name not in batch.schema.names]
    if missing:
        raise ValueError(f"rows to write lack column(s) {', '.join(missing)}")
    arrays = []
    for field in schema:
        column = batch.column(field.name)
        if column.type != field.type:
            # timestamps may arrive in ns: dropping sub-microsecond digits is intended
            column = pc.cast(column, field.type, safe=not pa.types.is_timestamp(field.type))
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _batches(rows: Any, schema: pa.Schema, as_of: dt.date, counter: list[int]) -> Iterator[pa.RecordBatch]:
    """Any accepted input (a DataFrame, an Arrow table or batch, or an iterable of those) as
    conformed record batches, each checked to be of `as_of`; counts rows into counter[0]."""
    if isinstance(rows, (pd.DataFrame, pa.Table, pa.RecordBatch)):
        rows = [rows]
    day = pa.scalar(as_of, pa.date32())
    for part in rows:
        if isinstance(part, pd.DataFrame):
            part = pa.Table.from_pandas(part, preserve_index=False)
        for batch in part.to_batches() if isinstance(part, pa.Table) else [part]:
            if batch.num_rows == 0:
                continue
            batch = _conform(batch, schema)
            same_day = pc.sum(pc.equal(batch.column("as_of"), day)).as_py() or 0
            if same_day != batch.num_rows:
                raise ValueError("every row written for a day must carry that as_of")
            counter[0] += batch.num_rows
            yield batch


# ----------------------------------------------------------------------------- public API


def replace_day(rows: Any, url: str, table: str, as_of, *, schema: str | None = None,
                user_scores: Any = None, user_scores_table: str = "user_scores",
                lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S, swap_try_s: float = DEFAULT_SWAP_TRY_S,
                swap_backoff_max_s: float = DEFAULT_SWAP_BACKOFF_MAX_S) -> int:
    """Atomically make `rows` the only rows of `table` for `as_of`; returns the rows written.

    `rows` (and `user_scores`, every user's score when that table is wanted) may be a pandas
    DataFrame, a pyarrow Table or RecordBatch, or an iterable of those, consumed once."""
    target = Target(url, table, schema, user_scores is not None, user_scores_table, swap_try_s, swap_backoff_max_s)
    return publish(target, as_of, rows, user_scores, lock_timeout_s=lock_timeout_s)["rows"]


def publish(target: Target, as_of, rows: Any, user_scores: Any = None,
            lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> dict[str, int]:
    """replace_day on a Target: {"rows": flagged rows written, "user_scores_rows": ...}."""
    as_of = pd.Timestamp(as_of).date()
    if user_scores is not None and not target.user_scores:
        raise ValueError("user_scores rows given for a target without the user_scores table")
    counts = {"rows": [0], "user_scores_rows": [0]}
    flagged = _batches(rows, FLAGGED_ARROW, as_of, counts["rows"])
    scores = _batches(user_scores, USER_SCORES_ARROW, as_of, counts["user_scores_rows"]) \
        if user_scores is not None else None
    if target.kind == "duckdb":
        _duckdb_replace(target, as_of, flagged, scores)
    else:
        _pg_replace(target, as_of, flagged, scores, lock_timeout_s)
    result = {"rows": counts["rows"][0]}
    if scores is not None:
        result["user_scores_rows"] = counts["user_scores_rows"][0]
    return result


def read_table(url: str, table: str, as_of=None, *, schema: str | None = None) -> pd.DataFrame:
    target = Target(url, table, schema)
    where, args = ("WHERE as_of = ?", [pd.Timestamp(as_of).date()]) if as_of is not None else ("", [])
    query = f"SELECT * FROM {target.qualified()} {where} ORDER BY as_of, rank"
    if target.kind == "duckdb":
        path = target.location
        if path != ":memory:" and not Path(path).exists():
            raise UserError(f"{path}: warehouse file not found; run the publish step first")
        import duckdb

        with _connect_duckdb(path, read_only=True) as con:
            try:
                return con.sql(query, params=args).to_arrow_table().to_pandas()
            except duckdb.CatalogException as exc:
                raise UserError(f"{path}: no table {target.schema}.{target.table}; run the publish step first") from exc
    with _pg_errors(target, "read from"), _pg_connect(target) as con:
        cur = con.execute(query.replace("?", "%s"), args)
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def migrate(target: Target) -> dict[str, Any]:
    """Apply the pending migrations in order, each recorded in schema_migrations; safe to rerun
    and to run twice at once (the second waits, then finds nothing to do)."""
    if target.kind == "duckdb":
        with _connect_duckdb(_duckdb_path(target)) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                applied = _migrate(_DuckSession(con), target)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
    else:
        with _pg_errors(target, "migrate"), _pg_connect(target) as con:
            session = _PgSession(con)
            session.exec("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", [_lock_key(target, "migrate")])
            applied = _migrate(session, target)
            con.commit()
    return {"warehouse": target.safe_url, "schema": target.schema, "table": target.table, "applied": applied,
            "version": max(m.version for m in target.wanted())}


def grant_reader(target: Target, role: str, password: str | None = None) -> dict[str, Any]:
    """Create the PostgreSQL role `role` (LOGIN; with `password` when given, else none: grant the
    role to people, or set one later) if it does not exist, and make its rights exactly: read
    every table and view in the schema, now and later (default privileges of the schema's
    owner), but not the migration record (schema_migrations), and nothing in the days schema
    (the day partitions). A `password` is set on an existing role too."""
    return _grant(target, role, "reader", password)


def grant_writer(target: Target, role: str, password: str | None = None) -> dict[str, Any]:
    """Like grant_reader, for the publishing role: SELECT, INSERT and DELETE on the schema's
    tables (not the migration record), USAGE on the days schema and INSERT on the staging
    tables made there (for its COPY), no DDL."""
    return _grant(target, role, "writer", password)


def password_from_env(variable: str) -> str:
    """The password in environment variable `variable` (`--password-env`): never taken from the
    command line, where other users of the machine and shell histories see it."""
    value = os.environ.get(variable, "")
    if not value:
        raise UserError(f"--password-env {variable!r}: that environment variable is not set or is empty; "
                        f"put the role's password in it (export {variable}=...) or leave --password-env out")
    return value


# ----------------------------------------------------------------------------- migration engine


class _DuckSession:
    def __init__(self, con):
        self.con = con

    def exec(self, sql: str, params: list | None = None) -> None:
        self.con.execute(sql, params or [])

    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def schema_exists(self, schema: str) -> bool:
        return bool(self.rows("SELECT 1 FROM duckdb_schemas() WHERE database_name = current_database() "
                              "AND schema_name = ?", [schema]))

    def table_exists(self, schema: str, table: str) -> bool:
        return bool(self.rows("SELECT 1 FROM duckdb_tables() WHERE database_name = current_database() "
                              "AND schema_name = ? AND table_name = ?", [schema, table]))

    def seal_migration_record(self, schema: str) -> None:
        """DuckDB has no roles: nothing to take back."""


class _PgSession:
    def __init__(self, con):
        self.con = con

    def exec(self, sql: str, params: list | None = None) -> None:
        self.con.execute(sql.replace("?", "%s"), params or None)

    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.execute(sql.replace("?", "%s"), params or None).fetchall()

    def schema_exists(self, schema: str) -> bool:
        return bool(self.rows("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = ?", [schema]))

    def table_exists(self, schema: str, table: str) -> bool:
        # the catalog, not information_schema: that hides tables the role has no right on, and
        # a missing right must read as one, not as a database that was never migrated
        return bool(self.rows("SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = ? AND tablename = ?",
                              [schema, table]))

    def seal_migration_record(self, schema: str) -> None:
        """A migration record just created (a new schema, or one whose record was dropped) gets
        the owner's default privileges in the schema, i.e. the reader's SELECT and the writer's
        INSERT and DELETE of an earlier grant: take them all back. Only a rerun grant-writer gives
        the writer its SELECT on it again (fail closed: publish says which command to run)."""
        record = f"{_quote(schema)}.{_quote(_MIGRATIONS_TABLE)}"
        grantees = self.rows(
            "SELECT DISTINCT a.grantee::regrole::text FROM pg_catalog.pg_class c, "
            "LATERAL pg_catalog.aclexplode(c.relacl) a WHERE c.oid = ?::regclass AND a.grantee <> c.relowner "
            "AND a.grantee <> 0", [record])
        for (grantee,) in grantees:  # regrole::text is already quoted where it needs to be
            self.exec(f"REVOKE ALL ON {record} FROM {grantee}")
        self.exec(f"REVOKE ALL ON {record} FROM PUBLIC")


def _applied(session, target: Target) -> dict[int, str] | None:
    """version -> checksum of what is recorded for this table; None without a migration record."""
    if not session.table_exists(target.schema, _MIGRATIONS_TABLE):
        return None
    return dict(session.rows(f"SELECT version, checksum FROM {_quote(target.schema)}.{_quote(_MIGRATIONS_TABLE)} "
                             f"WHERE subject = ?", [target.table]))


def _pending(session, target: Target) -> list[Migration]:
    applied = _applied(session, target) or {}
    return [m for m in target.wanted() if m.version not in applied]


def _migrate(session, target: Target) -> list[str]:
    s = _quote(target.schema)
    # checked first: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when it exists
    if not session.schema_exists(target.schema):
        session.exec(f"CREATE SCHEMA {s}")
    record_is_new = not session.table_exists(target.schema, _MIGRATIONS_TABLE)
    session.exec(f"""CREATE TABLE IF NOT EXISTS {s}.{_quote(_MIGRATIONS_TABLE)} (
        subject VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        name VARCHAR NOT NULL,
        checksum VARCHAR NOT NULL,
        applied_at TIMESTAMP WITH TIME ZONE NOT NULL,
        PRIMARY KEY (subject, version))""")
    if record_is_new:
        session.seal_migration_record(target.schema)
    applied = _applied(session, target) or {}
    for m in MIGRATIONS:
        if m.version in applied and applied[m.version] != m.checksum():
            raise UserError(f"warehouse migration {m.version:04d}_{m.name} has changed since it was applied to "
                            f"{target.schema}.{target.table}; add a new migration instead of editing one")
    if session.table_exists(target.schema, target.table):  # before any index or view is built on it
        _check_columns(session, target)
    done = []
    names = target.sql_names()
    for m in target.wanted():
        if m.version in applied:
            continue
        for statement in m.statements:
            session.exec(statement.format(**names))
        session.exec(f"INSERT INTO {s}.{_quote(_MIGRATIONS_TABLE)} (subject, version, name, checksum, applied_at) "
                     f"VALUES (?, ?, ?, ?, ?)", [target.table, m.version, m.name, m.checksum(),
                                                 dt.datetime.now(dt.timezone.utc)])
        done.append(f"{m.version:04d}_{m.name}")
    _check_columns(session, target)
    return done


def _check_columns(session, target: Target) -> None:
    columns = [r[0] for r in session.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
        "AND table_schema = ? AND table_name = ? ORDER BY ordinal_position", [target.schema, target.table])]
    if tuple(columns) != FLAGGED_USERS_COLUMNS:
        raise UserError(f"{target.schema}.{target.table} exists with columns {', '.join(columns)}, not the "
                        f"contract's {', '.join(FLAGGED_USERS_COLUMNS)}; rename it or pick another warehouse.table")


def _behind_message(target: Target, pending: list[Migration]) -> str:
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
    return (f"the warehouse at {target.safe_url} is not set up for {target.schema}.{target.table} "
            f"(pending migrations: {names}); run `python -m pipelines warehouse migrate` as the owner role")


# ----------------------------------------------------------------------------- DuckDB


def _duckdb_path(target: Target) -> str:
    path = target.location
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return path


def _connect_duckdb(path: str, read_only: bool = False, wait_s: float | None = None):
    """DuckDB lets one process write a file at a time: another process that meets the lock
    waits with back-off, then gets a one-line (transient) error instead of a traceback."""
    import duckdb

    wait_s = LOCK_WAIT_S if wait_s is None else wait_s
    delay, waited = 0.05, 0.0
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise UserError(f"{path}: cannot open the warehouse file: {str(exc).splitlines()[0]}") from exc
            if waited >= wait_s:
                raise TransientWarehouseError(f"{path}: the warehouse file is locked by another process "
                                              f"(waited {waited:.0f} s); try again when it has finished") from exc
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 1.0)


def _duckdb_replace(target: Target, as_of: dt.date, flagged: Iterator[pa.RecordBatch],
                    scores: Iterator[pa.RecordBatch] | None) -> None:
    with _connect_duckdb(_duckdb_path(target)) as con:
        session = _DuckSession(con)
        # The embedded default sets itself up: the file lock already makes this process the
        # only writer, so migrating here cannot race another publisher.
        if _pending(session, target):
            con.execute("BEGIN TRANSACTION")
            try:
                _migrate(session, target)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        con.execute("BEGIN TRANSACTION")
        import duckdb

        try:
            _duckdb_load(con, target, "table", FLAGGED_ARROW, as_of, flagged)
            _checkpoint("loaded")
            if scores is not None:
                _duckdb_load(con, target, "scores", USER_SCORES_ARROW, as_of, scores)
            _checkpoint("before_commit")
        except BaseException as exc:
            con.execute("ROLLBACK")
            if isinstance(exc, duckdb.ConstraintException):  # a repeated user, a NULL score: the rows' fault
                raise UserError(broken_rows_message(f"cannot write {as_of} to the warehouse at {target.safe_url}",
                                                    str(exc).removeprefix("Constraint Error: "))) from None
            raise
        # outside the rollback: a COMMIT that fails (a full disk) has ended the transaction
        # itself, and a ROLLBACK then would replace its error with "no transaction is active"
        con.execute("COMMIT")


_DUCKDB_STAGED = "pipelines_staged_day"  # the rerun's temporary table (this connection's own)
_NAMED_DUPLICATES = 5  # a rerun's error names this many of the users with more than one row


def _duckdb_load(con, target: Target, key: str, schema: pa.Schema, as_of, batches) -> None:
    """Make `batches` the day's rows of the table, inside the caller's transaction.

    A day the table does not hold yet gets its rows by a plain INSERT. A day it holds (a rerun)
    is not deleted and inserted again: DuckDB takes each deleted row out of the table's ART
    indexes (the primary key, the user index) one at a time when the transaction commits, ~50 us
    a row, so a rerun of a 1M-row user_scores day committed in ~7x the first run's time
    (benchmarks/bench_warehouse_load.py). Instead the rows are staged in a temporary table (no
    index), the day's rows of users it lacks are deleted (rows only a rerun drops: usually none),
    and the rest are written by INSERT ... ON CONFLICT DO UPDATE: a user the day has keeps the
    row's key and index entries and gets the new values, a new user's row is inserted."""
    table, columns = target.qualified(key), ", ".join(schema.names)
    rerun = con.execute(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE as_of = ?)", [as_of]).fetchall()[0][0]
    failures: list[BaseException] = []

    def watched():
        try:
            yield from batches
        except BaseException as exc:  # DuckDB wraps it in its own error: kept to re-raise as it was
            failures.append(exc)
            raise

    con.register("incoming_rows", pa.RecordBatchReader.from_batches(schema, watched()))
    try:
        con.execute(f"CREATE TEMP TABLE {_DUCKDB_STAGED} AS SELECT {columns} FROM incoming_rows" if rerun else
                    f"INSERT INTO {table} ({columns}) SELECT {columns} FROM incoming_rows")
    except Exception:
        if failures:
            raise failures[0] from None
        raise
    con.unregister("incoming_rows")  # not after a failure: the aborted transaction refuses it
    if not rerun:
        return
    # ON CONFLICT would quietly keep one of two staged rows of a user: refused here instead,
    # as the primary key refuses it on a first run
    duplicates = [row[0] for row in con.execute(
        f"SELECT user_id FROM {_DUCKDB_STAGED} WHERE user_id IS NOT NULL GROUP BY user_id "
        f"HAVING count(*) > 1 ORDER BY user_id LIMIT {_NAMED_DUPLICATES + 1}").fetchall()]
    if duplicates:
        named = ", ".join(repr(u) for u in duplicates[:_NAMED_DUPLICATES])
        more = ", ..." if len(duplicates) > _NAMED_DUPLICATES else ""
        raise UserError(f"cannot write {table} for {as_of}: more than one row for user(s) {named}{more}; "
                        f"a user has one row a day: score the day again (or drop the repeated rows) and rerun; "
                        f"the warehouse is unchanged")
    con.execute(f"DELETE FROM {table} AS t WHERE t.as_of = ? AND NOT EXISTS "
                f"(SELECT 1 FROM {_DUCKDB_STAGED} n WHERE n.user_id = t.user_id)", [as_of])
    values = ", ".join(f"{c} = excluded.{c}" for c in schema.names if c not in ("as_of", "user_id"))
    con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {_DUCKDB_STAGED} "
                f"ON CONFLICT (as_of, user_id) DO UPDATE SET {values}")
    con.execute(f"DROP TABLE {_DUCKDB_STAGED}")


# ----------------------------------------------------------------------------- PostgreSQL


def _checkpoint(stage: str) -> None:
    """Called inside the replace's transaction ("loaded": the day's flagged rows are written,
    not committed; "swap_retry": a try of the swap met readers and was rolled back, the next
    follows after a back-off; "before_commit"). Tests replace it to pause a writer there; it does nothing."""


def _lock_key(target: Target, what: str) -> str:
    return f"pipelines.warehouse/{target.schema}.{target.table}/{what}"


def _libpq_url(target: Target) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(target.location)
    if "@" in (url.host or "") or "@" in (url.database or ""):
        raise UserError(f"warehouse.url {target.safe_url}: percent-encode special characters of the password "
                        f"(@ as %40)")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_connect(target: Target, autocommit: bool = False):
    import psycopg

    return psycopg.connect(_libpq_url(target), autocommit=autocommit, connect_timeout=10,
                           application_name="pipelines-warehouse")


# SQLSTATEs worth retrying: serialization failure, deadlock, lock not available (lock_timeout),
# query canceled (statement_timeout), server shutting down, crashed or starting (57P01-57P03),
# too many connections; class 08 is any connection exception.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300"}
# SQLSTATEs that say the configuration is wrong, whatever the error's class: a wrong password
# (28P01), a role that does not exist or may not log in (28000), no such database (3D000).
_CONFIG_SQLSTATES = {"28P01": "check the user and password in warehouse.url",
                     "28000": "check the user in warehouse.url (it must exist and may log in)",
                     "3D000": "check the database name in warehouse.url"}
# A connection attempt that fails carries no SQLSTATE in psycopg: the server does send one with
# its FATAL message, but libpq keeps it to itself (only PQping reads it) and hands over the
# message text, which is libpq's own for a network failure ("Connection refused") and the
# server's for a refusal. So those are told apart by their text, in English unless the server's
# lc_messages is another language; a text matched by neither list counts as transient (retried
# and reported, rather than sent back as a configuration problem it may not be). What the
# server says when it is busy or coming and going, matched first:
_TRANSIENT_CONNECT_FAILURES = ("too many clients", "connection slots are reserved", "the database system is starting up",
                               "the database system is shutting down", "the database system is in recovery mode",
                               "the database system is not yet accepting connections",
                               "the database system is not accepting connections")
# ... and what says the configuration is wrong (a database or role that does not exist, a
# password, pg_hba.conf, a host name that does not resolve, a malformed URL parameter):
_CONFIG_CONNECT_FAILURES = ("does not exist", "password authentication failed", "no pg_hba.conf entry",
                            "authentication failed", "no password supplied", "is not permitted to log in",
                            "permission denied for database", "failed to resolve host", "invalid")


def is_transient(exc: BaseException) -> bool:
    """Whether a psycopg error is worth retrying later, unchanged (not a configuration problem):
    by its SQLSTATE when it has one, by psycopg's connection-timeout class or the server asking
    for a password none was given for, and only then by the text of a failed connection."""
    import psycopg

    state = getattr(exc, "sqlstate", None)
    if state:
        if state in _CONFIG_SQLSTATES:
            return False
        return state in _TRANSIENT_SQLSTATES or state.startswith("08")
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if isinstance(exc, psycopg.errors.ConnectionTimeout):  # connect_timeout passed: the server did not answer
        return True
    pgconn = exc.pgconn
    if pgconn is not None and pgconn.needs_password:  # the server wants a password the URL lacks
        return False
    message = str(exc)
    if any(s in message for s in _TRANSIENT_CONNECT_FAILURES):
        return True
    return not any(s in message for s in _CONFIG_CONNECT_FAILURES)


class _pg_errors:
    """psycopg errors -> TransientWarehouseError or UserError, one line, password hidden."""

    def __init__(self, target: Target, doing: str):
        self.target, self.doing = target, doing

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        import psycopg

        if exc is None or not isinstance(exc, psycopg.Error):
            return False
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        message = f"cannot {self.doing} the warehouse at {self.target.safe_url}: {first}"
        if is_transient(exc):
            raise TransientWarehouseError(message) from exc
        hint = _CONFIG_SQLSTATES.get(getattr(exc, "sqlstate", None) or "")
        if hint:
            raise UserError(f"{message} ({hint})") from exc
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            # a migration that knows what is missing says so in its hint (0009: the days schema)
            server_hint = " ".join((getattr(exc.diag, "message_hint", None) or "").split())
            raise UserError(f"{message} ({server_hint})" if server_hint else
                            f"{message} (the role lacks a right: migrate needs the owner; publish needs "
                            f"`python -m pipelines warehouse grant-writer ROLE`)") from exc
        if isinstance(exc, (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)):
            raise UserError(f"{message}; run `python -m pipelines warehouse migrate`") from exc
        if isinstance(exc, (psycopg.OperationalError, psycopg.ProgrammingError, psycopg.InterfaceError)):
            raise UserError(message) from exc
        if isinstance(exc, psycopg.errors.IntegrityError):  # a repeated user, a NULL score: the rows' fault
            detail = getattr(exc.diag, "message_detail", None)
            raise UserError(broken_rows_message(f"cannot {self.doing} the warehouse at {self.target.safe_url}",
                                                f"{first}: {detail}" if detail else first)) from None
        return False


def broken_rows_message(doing: str, what: str) -> str:
    """One line for rows the table's constraints refuse (nothing was written)."""
    what = " ".join(what.split())
    return (f"{doing}: the rows break the table's rules ({what}); a user has one row a day with a score: "
            f"score the day again (or fix the scores file) and rerun; the warehouse is unchanged")


def _pg_replace(target: Target, as_of: dt.date, flagged: Iterator[pa.RecordBatch],
                scores: Iterator[pa.RecordBatch] | None, lock_timeout_s: float) -> None:
    with _pg_errors(target, "write to"), _pg_connect(target, autocommit=True) as con:
        # session setting, outside the transaction, so that the day lock is its first statement
        con.execute("SELECT set_config('lock_timeout', %s, false)", [f"{int(lock_timeout_s * 1000)}ms"])
        con.autocommit = False
        session = _PgSession(con)
        # Two runs of one day at once take turns here, before anything else touches the tables.
        session.exec("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", [_lock_key(target, str(as_of))])
        pending = _pending(session, target)
        if pending:
            raise UserError(_behind_message(target, pending))
        with con.cursor() as cur:
            staged = [("table", _pg_stage(cur, target, "table", FLAGGED_ARROW, as_of, flagged))]
            _checkpoint("loaded")
            if scores is not None:
                staged.append(("scores", _pg_stage(cur, target, "scores", USER_SCORES_ARROW, as_of, scores)))
            for key, staging in staged:  # in bulk, while readers still read the old day undisturbed
                cur.execute(f"SELECT {target.qualified('fn_index')}(%s::regclass, %s::regclass, %s)",
                            [target.qualified(key), staging, as_of])
            # readers of the day wait from the first swap to the commit, then see the new rows
            _pg_swap(cur, target, staged, as_of, lock_timeout_s)
        _checkpoint("before_commit")
        con.commit()


def _pg_swap(cur, target: Target, staged: list[tuple[str, str]], as_of, lock_timeout_s: float) -> int:
    """Swap the staged tables in, in tries: each waits at most target.swap_try_s for the tables' locks
    (a reader's transaction on the table holds one), then is rolled back to a savepoint, which
    gives up the place in the lock queue and any lock the try took but keeps the staged, indexed
    rows, and the next try follows after a back-off. Readers that arrive meanwhile wait behind
    a try at most, instead of behind a swap that waits the whole lock_timeout_s. Gives up with a
    TransientWarehouseError once lock_timeout_s (counted from the first try) is spent, so a
    steady stream of overlapping readers can keep a publish out; returns the tries taken."""
    import psycopg

    deadline = time.monotonic() + lock_timeout_s
    delay, tries = min(_SWAP_FIRST_BACKOFF_S, target.swap_backoff_max_s), 0
    while True:
        tries += 1
        wait_ms = max(1, int(min(target.swap_try_s, deadline - time.monotonic()) * 1000))
        cur.execute("SAVEPOINT pipelines_swap")
        cur.execute("SELECT set_config('lock_timeout', %s, true)", [f"{wait_ms}ms"])  # undone by the rollback
        try:
            for key, staging in staged:
                cur.execute(f"SELECT {target.qualified('fn_swap')}(%s::regclass, %s::regclass, %s)",
                            [target.qualified(key), staging, as_of])
        except psycopg.errors.LockNotAvailable as exc:
            cur.execute("ROLLBACK TO SAVEPOINT pipelines_swap")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransientWarehouseError(
                    f"cannot write to the warehouse at {target.safe_url}: the swap of {as_of} into "
                    f"{target.schema}.{target.table} found the table in use by readers for {lock_timeout_s:g} s "
                    f"({tries} tries, lock timeout, warehouse.lock_timeout_s); try again later") from exc
            _checkpoint("swap_retry")
            time.sleep(min(delay, left))
            delay = min(delay * 2, target.swap_backoff_max_s)
            continue
        cur.execute("RELEASE SAVEPOINT pipelines_swap")
        return tries


def _pg_stage(cur, target: Target, key: str, schema: pa.Schema, as_of, batches) -> str:
    """COPY the day's rows into a new, index-free table of its own (the day's staging table),
    as CSV rendered by Arrow (no Python per row); returns its name for the swap. CSV keeps NULL
    (unquoted empty) apart from '' (quoted) and floats at full precision."""
    import pyarrow.csv as pacsv

    cur.execute(f"SELECT {target.qualified('fn_stage')}(%s::regclass, %s)::text", [target.qualified(key), as_of])
    staging = cur.fetchone()[0]
    options = pacsv.WriteOptions(include_header=False, batch_size=8192)
    with cur.copy(f"COPY {staging} ({', '.join(schema.names)}) FROM STDIN (FORMAT csv, FREEZE)") as copy:
        for batch in batches:
            buffer = _io.BytesIO()
            pacsv.write_csv(batch, buffer, options)
            copy.write(buffer.getbuffer())
    return staging


# ----------------------------------------------------------------------------- roles


def _grant(target: Target, role: str, kind: str, password: str | None = None) -> dict[str, Any]:
    if password is not None and not password:
        raise UserError("the role's password is empty; give one or none")
    if target.kind == "duckdb":
        raise UserError("roles exist only on PostgreSQL: point --warehouse (or WAREHOUSE_URL) at postgresql://...")
    role = _name(role, "role name")
    r, s = _quote(role), _quote(target.schema)
    with _pg_errors(target, f"grant {kind} rights on"), _pg_connect(target) as con:
        session = _PgSession(con)
        session.exec("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", [_lock_key(target, "migrate")])
        pending = _pending(session, target)
        if pending:
            raise UserError(_behind_message(target, pending))
        owner = session.rows("SELECT tableowner FROM pg_tables WHERE schemaname = ? AND tablename = ?",
                             [target.schema, target.table])[0][0]
        created = not session.rows("SELECT 1 FROM pg_roles WHERE rolname = ?", [role])
        if created:
            session.exec(f"CREATE ROLE {r} LOGIN")
        if password is not None:
            _set_password(con, role, password)
        database, may_grant_connect = session.rows(
            "SELECT current_database(), has_database_privilege(current_database(), 'CONNECT WITH GRANT OPTION')")[0]
        if may_grant_connect:  # otherwise CONNECT is PUBLIC's (PostgreSQL's default) or the DBA's to grant
            session.exec(f"GRANT CONNECT ON DATABASE {_quote_any(database)} TO {r}")
        session.exec(f"GRANT USAGE ON SCHEMA {s} TO {r}")
        # start from nothing on the schema's tables, so a rerun also takes back what no longer applies
        session.exec(f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}")
        session.exec(f"ALTER DEFAULT PRIVILEGES FOR ROLE {_quote_any(owner)} IN SCHEMA {s} REVOKE ALL ON TABLES FROM {r}")
        rights = "SELECT" if kind == "reader" else "SELECT, INSERT, DELETE"
        session.exec(f"GRANT {rights} ON ALL TABLES IN SCHEMA {s} TO {r}")
        # new tables and views the owner makes in the schema (later migrations) are covered too
        session.exec(f"ALTER DEFAULT PRIVILEGES FOR ROLE {_quote_any(owner)} IN SCHEMA {s} GRANT {rights} ON TABLES TO {r}")
        # The day's staging, indexing and swap functions are the writer's only DDL; the default
        # privilege covers them when a later migration creates them (a writer granted before 0005/0008).
        give, to = ("GRANT", "TO") if kind == "writer" else ("REVOKE", "FROM")
        session.exec(f"ALTER DEFAULT PRIVILEGES FOR ROLE {_quote_any(owner)} IN SCHEMA {s} "
                     f"{give} EXECUTE ON FUNCTIONS {to} {r}")
        for function in (f"{target.qualified('fn_stage')}(regclass, date)",
                         f"{target.qualified('fn_swap')}(regclass, regclass, date)",
                         f"{target.qualified('fn_index')}(regclass, regclass, date)"):
            if session.rows("SELECT to_regprocedure(?) IS NOT NULL", [function])[0][0]:
                session.exec(f"{give} EXECUTE ON FUNCTION {function} {to} {r}")
        # The days schema (0009): the day partitions and the staging tables. The reader has no
        # right there at all, not even to look names up; the writer may look them up and COPY
        # into the staging table fn_stage makes (the owner's default privilege), not read them.
        # Before 0009 it does not exist, and 0009 carries the writers of that time over.
        if session.schema_exists(target.days_schema):
            d = _quote(target.days_schema)
            session.exec(f"REVOKE ALL ON SCHEMA {d} FROM {r}")
            session.exec(f"REVOKE ALL ON ALL TABLES IN SCHEMA {d} FROM {r}")
            session.exec(f"ALTER DEFAULT PRIVILEGES FOR ROLE {_quote_any(owner)} IN SCHEMA {d} "
                         f"REVOKE ALL ON TABLES FROM {r}")
            if kind == "writer":
                session.exec(f"GRANT USAGE ON SCHEMA {d} TO {r}")
                session.exec(f"ALTER DEFAULT PRIVILEGES FOR ROLE {_quote_any(owner)} IN SCHEMA {d} "
                             f"GRANT INSERT ON TABLES TO {r}")
        # The migration record is the owner's: the writer reads it (publish checks that the
        # database is not behind) but does not change it; the reader does not see it at all. Its
        # tables-and-views default privilege cannot exclude a table, but the record exists
        # before any grant (a grant needs a migrated schema), and migrate strips what a default
        # privilege gives on a record it has to create again (_seal_migration_record).
        record = f"{s}.{_quote(_MIGRATIONS_TABLE)}"
        session.exec(f"REVOKE INSERT, DELETE ON {record} FROM {r}" if kind == "writer" else
                     f"REVOKE SELECT ON {record} FROM {r}")
        con.commit()
    return {"warehouse": target.safe_url, "role": role, "kind": kind, "created": created, "schema": target.schema,
            "rights": rights, "owner": owner, "password_set": password is not None}


def _set_password(con, role: str, password: str) -> None:
    """ALTER ROLE ... PASSWORD takes no bound parameter, so the value goes in as a quoted
    literal (psycopg.sql.Literal, quoted by libpq for this connection). It is not the password
    but its SCRAM-SHA-256 verifier, computed here by libpq (PQencryptPasswordConn), so that the
    password itself never reaches the server: not its statement log, not pg_stat_activity."""
    from psycopg import sql

    verifier = con.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    con.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier.decode())))


def _quote_any(name: str) -> str:
    """A name read from the catalog (a database, the owner role): quoted with quotes doubled."""
    return '"' + name.replace('"', '""') + '"'
