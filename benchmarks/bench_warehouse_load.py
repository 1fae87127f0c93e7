"""Load rate into PostgreSQL: our replace_day beside raw COPY of the same rows (the ceiling)
and beside row-by-row inserts, on a throwaway database this script creates and drops.

    python benchmarks/bench_warehouse_load.py [--rows 1000000] [--row-by-row 20000]
        [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
    python benchmarks/bench_warehouse_load.py --publish-only [--publish-backends duckdb]

replace_day loads a day into a staging table of its own with no key or index (migration 0005),
builds the parent's key and three indexes on it in bulk, and swaps it in for the old day's
partition, all in one transaction; its figure is that whole replace, end to end. The ceiling
is raw COPY of CSV rendered before the clock starts into a bare table of the same columns (no
key, no index): what the server can take. A third line is raw COPY into the indexed table
itself (key and indexes maintained row by row), which is what a DELETE-then-COPY replace, the
code before 0005, was bound by. The three are run alternately, so that a busy moment of a
shared machine does not fall on one of them only. Row-by-row inserts run on a subset
(`--row-by-row`) and are reported as that subset's rate. Best of `--repeat`.

Then the publish step itself on a day of `--publish-users` users (a scores file with the top
100 flagged), each run in a fresh process for its own peak RSS: to PostgreSQL and DuckDB, with
`warehouse.user_scores` off (the flagged rows only) and on (every user's score too), a first
run, a rerun (which replaces the day the first wrote) and a rerun with half the users gone (which
deletes their user_scores rows). `--publish-only` runs these alone,
`--publish-backends` picks the backends.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.warehouse import FLAGGED_ARROW, Target, migrate, replace_day  # noqa: E402

DAY = dt.date(2026, 11, 21)


def make_rows(n: int) -> pa.Table:
    """Rows shaped like a real day's: ids, descending scores, three reasons of typical length."""
    reasons = [f"events_per_session_1d={i % 300} (p99.{i % 10}); n_new_devices_7d={i % 4} (p100.0); "
               f"median_gap_s_28d={i % 97}.19 (p0.{i % 10})" for i in range(n)]
    return pa.table({
        "as_of": pa.array([DAY] * n, pa.date32()),
        "user_id": pa.array([f"u{i:09d}" for i in range(n)]),
        "score": pa.array([40.0 - i * 1e-6 for i in range(n)], pa.float64()),
        "rank": pa.array(range(1, n + 1), pa.int64()),
        "reasons": pa.array(reasons),
        "anomaly_types": pa.array(["scraping_bot" if i % 3 else "" for i in range(n)]),
        "model_version": pa.array(["ecdf_tail-5b87b95bfe6d"] * n),
        "run_id": pa.array(["bench"] * n),
        "scored_at": pa.array([dt.datetime(2026, 11, 22, 6, tzinfo=dt.timezone.utc)] * n,
                              pa.timestamp("us", tz="UTC")),
    }, schema=FLAGGED_ARROW)


def duckdb_version() -> str:
    import duckdb

    return duckdb.__version__


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--row-by-row", type=int, default=20_000, help="rows for the row-by-row inserts")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--publish-users", type=int, default=1_000_000, help="users in the publish runs (0: skip them)")
    ap.add_argument("--publish-only", action="store_true", help="only the publish runs, not the load rates")
    ap.add_argument("--publish-backends", default="postgresql,duckdb",
                    help="comma-separated: postgresql, duckdb (default both)")
    args = ap.parse_args()
    backends = {b.strip().lower() for b in args.publish_backends.split(",") if b.strip()}
    if not backends or backends - {"postgresql", "duckdb"}:
        ap.error(f"--publish-backends {args.publish_backends!r}: give postgresql, duckdb or both")
    if args.publish_only and not args.publish_users:
        ap.error("--publish-only with --publish-users 0 runs nothing")

    import psycopg

    name = f"bench_warehouse_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        server = admin.execute("SHOW server_version").fetchone()[0]
        admin.execute(f'CREATE DATABASE "{name}"')
    url = args.admin_url.rsplit("/", 1)[0] + "/" + name
    machine = (f"machine: {os.cpu_count()} CPUs ({platform.machine()}, {platform.system()} {platform.release()}), "
               f"PostgreSQL {server} on {url.split('@')[-1].rsplit('/', 1)[0]}, Python {platform.python_version()}, "
               f"DuckDB {duckdb_version()}")
    try:
        if args.publish_only:
            publishes = publish_runs(args.publish_users, url, backends)
            print(machine)
            print_publishes(args.publish_users, publishes)
            return 0
        target = Target(url, "flagged_users")
        migrate(target)
        rows = make_rows(args.rows)
        table = target.qualified()
        columns = ", ".join(FLAGGED_ARROW.names)
        csv = io.BytesIO()
        pacsv.write_csv(rows, csv, pacsv.WriteOptions(include_header=False))
        csv = csv.getvalue()

        def raw_copy(into: str = table):
            with psycopg.connect(url) as con, con.cursor() as cur:
                cur.execute(f"DELETE FROM {into} WHERE as_of = %s", [DAY])
                with cur.copy(f"COPY {into} ({columns}) FROM STDIN (FORMAT csv)") as copy:
                    for start in range(0, len(csv), 1 << 20):
                        copy.write(csv[start:start + (1 << 20)])

        bare = f"{target.qualified().rsplit('.', 1)[0]}.bare"  # the same columns, no key, no index
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(f"CREATE TABLE {bare} (LIKE {table})")

        def ours():
            assert replace_day(iter(rows.to_batches(max_chunksize=65536)), url, "flagged_users", DAY) == args.rows

        subset = rows.slice(0, args.row_by_row).to_pylist()
        insert = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(FLAGGED_ARROW))})"

        def one_insert_per_row():
            with psycopg.connect(url) as con, con.cursor() as cur:
                cur.execute(f"DELETE FROM {table} WHERE as_of = %s", [DAY])
                for r in subset:
                    cur.execute(insert, list(r.values()))

        def executemany():  # what the code before COPY did (through SQLAlchemy)
            with psycopg.connect(url) as con, con.cursor() as cur:
                cur.execute(f"DELETE FROM {table} WHERE as_of = %s", [DAY])
                cur.executemany(insert, [list(r.values()) for r in subset])

        # an existing day being replaced, as in production; the two alternate, so that a busy
        # moment of a shared machine does not fall on one of them only
        ours()
        raw_copy(bare)
        copy_s, ours_s, bare_s = [], [], []
        for _ in range(args.repeat):
            copy_s.append(best(raw_copy, 1))
            ours_s.append(best(ours, 1))
            bare_s.append(best(lambda: raw_copy(bare), 1))
        indexed_rate, our_rate, bare_rate = (args.rows / min(t) for t in (copy_s, ours_s, bare_s))
        row_rate = args.row_by_row / best(one_insert_per_row, 1)
        many_rate = args.row_by_row / best(executemany, 1)
        ours()  # leave the full day there: check it is all in
        with psycopg.connect(url) as con:
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == args.rows
        csv_bytes = len(csv)
        del rows, csv, subset
        publishes = publish_runs(args.publish_users, url, backends) if args.publish_users else []
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(machine)
    print(f"rows: {args.rows:,} flagged_users rows ({csv_bytes / args.rows:.0f} bytes each as CSV), one day, "
          f"table with primary key + 3 indexes, replacing an existing day, best of {args.repeat}")
    print(f"  raw COPY into a bare table (ceiling)     {bare_rate:>11,.0f} rows/s")
    print(f"  raw COPY into the indexed table          {indexed_rate:>11,.0f} rows/s  (the pre-0005 replace's bound)")
    print(f"  replace_day (stage, COPY, index, swap)   {our_rate:>11,.0f} rows/s  ({our_rate / bare_rate:.0%} of the ceiling)")
    print(f"  executemany INSERT ({args.row_by_row:,} rows)        {many_rate:>12,.0f} rows/s")
    print(f"  one INSERT per row ({args.row_by_row:,} rows)        {row_rate:>12,.0f} rows/s")
    print(f"  target >= 200,000 rows/s: {'met' if our_rate >= 200_000 else 'MISSED'}")
    print_publishes(args.publish_users, publishes)
    return 0


def print_publishes(users: int, publishes: list[tuple[str, float, int, dict]]) -> None:
    if publishes:
        print(f"publish step, {users:,} users scored (100 flagged), fresh process each:")
        for label, seconds, rss, info in publishes:
            extra = f", {info['user_scores_rows']:,} user_scores rows" if "user_scores_rows" in info else ""
            print(f"  {label:<57} {seconds:6.1f} s  peak RSS {rss / 1024:5.0f} MiB  ({info['rows']} flagged rows{extra})")


PUBLISH = """
import json, sys, time
from pipelines.stages import publish_stage
url, schema, scores, reports, user_scores = sys.argv[1:6]
params = {"storage": {"reports": reports},
          "warehouse": {"url": url, "schema": schema or None, "user_scores": user_scores == "1"}}
start = time.perf_counter()
info = publish_stage(params, "2026-11-21", scores_in=scores, run_id="bench")
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"s": time.perf_counter() - start, "rss_kib": peak, "info": info}))
"""


def publish_runs(users: int, pg_url: str, backends: set[str]) -> list[tuple[str, float, int, dict]]:
    import subprocess
    import tempfile

    import pyarrow.parquet as pq

    from pipelines.warehouse import migrate as migrate_target

    with tempfile.TemporaryDirectory() as tmp:
        scores = Path(tmp) / "scores.parquet"
        pq.write_table(pa.table({
            "user_id": pa.array([f"u{i:09d}" for i in range(users)]),
            "score": pa.array([float(users - i) for i in range(users)], pa.float64()),
            "rank": pa.array(range(1, users + 1), pa.int64()),
            "flagged": pa.array([i < 100 for i in range(users)]),
            "reasons": pa.array([f"events_per_session_1d={i % 300} (p99.{i % 10}); n_new_devices_7d={i % 4} "
                                 f"(p100.0); median_gap_s_28d={i % 97}.19 (p0.{i % 10})" for i in range(users)]),
            "model_version": pa.array(["ecdf_tail-5b87b95bfe6d"] * users),
            "as_of": pa.array([DAY] * users, pa.date32()),
            "anomaly_types": pa.array(["scraping_bot" if i % 3 else "" for i in range(users)]),
        }), scores, row_group_size=100_000)
        # the same day again with half its users gone: a rerun that deletes many user_scores rows
        halved = Path(tmp) / "scores_half.parquet"
        pq.write_table(pq.read_table(scores).slice(0, users // 2), halved, row_group_size=100_000)
        runs = []
        for backend, url, schema in (("PostgreSQL", pg_url, "publish_bench"),
                                     ("DuckDB", f"duckdb:///{tmp}/wh.duckdb", "")):
            if backend.lower() not in backends:
                continue
            for user_scores in ("0", "1"):
                if backend == "PostgreSQL":
                    migrate_target(Target(url, "flagged_users", schema, user_scores=user_scores == "1"))
                # the reruns replace the day the first wrote
                for attempt, day_scores in (("first", scores), ("rerun", scores), ("rerun, half the users gone", halved)):
                    out = subprocess.run([sys.executable, "-c", PUBLISH, url, schema, str(day_scores), f"{tmp}/reports",
                                          user_scores], capture_output=True, text=True, check=True,
                                         cwd=Path(__file__).resolve().parents[1])
                    got = json.loads(out.stdout.strip().splitlines()[-1])
                    label = f"{backend}, user_scores {'on' if user_scores == '1' else 'off'}, {attempt}"
                    runs.append((label, got["s"], got["rss_kib"], got["info"]))
        return runs


if __name__ == "__main__":
    sys.exit(main())
