"""Benchmark the event simulator: python benchmarks/bench_simulate.py [--events 10000000] [--seed 42]

Picks n_users to hit the target event count, times simulate() (events + labels as DataFrames)
and the Parquet write, and prints events, seconds, events/second and peak RSS. Exits 1 when
simulate() takes longer than --max-seconds (the target: 10 M events in under 60 s on 2 cores).
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from pipelines.simulate import EVENTS_PER_USER_DAY, n_users_for_events, simulate


def peak_rss_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kib / (1024**3 if platform.system() == "Darwin" else 1024**2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000, help="target number of events (default 10M)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--out", default=None, help="Parquet file to write (default: a temporary file, removed)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="fail if simulate() takes longer")
    args = ap.parse_args(argv)

    n_users = n_users_for_events(args.events, args.days)
    params = {"seed": args.seed, "n_users": n_users, "days": args.days}
    print(f"params: {params} (~{EVENTS_PER_USER_DAY} events/user/day), cpus: {os.cpu_count()}", flush=True)

    t0 = time.perf_counter()
    events, labels = simulate(params)
    sim_s = time.perf_counter() - t0
    n = len(events)
    print(f"simulate: {n:,} events, {len(labels):,} users, {labels['is_anomaly'].sum():,} abusers")
    print(f"simulate: {sim_s:.2f} s, {n / sim_s:,.0f} events/s, peak RSS {peak_rss_gib():.2f} GiB", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.out) if args.out else Path(tmp) / "events.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        events.to_parquet(path, index=False)
        write_s = time.perf_counter() - t0
        size_mib = path.stat().st_size / 2**20
    print(f"to_parquet: {write_s:.2f} s, {n / write_s:,.0f} events/s, {size_mib:,.0f} MiB, peak RSS {peak_rss_gib():.2f} GiB")
    print(f"total: {sim_s + write_s:.2f} s for {n:,} events")

    if sim_s > args.max_seconds:
        print(f"FAIL: simulate() took {sim_s:.1f} s > {args.max_seconds:.0f} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
