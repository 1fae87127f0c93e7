"""Feature throughput: events per second of `build_features` over a Parquet file of N events.

    python benchmarks/bench_features.py [--events 10000000] [--file existing.parquet]

Target (issue 2): at least 1 million events per second on 2 cores at 10 million events.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402
import subprocess  # noqa: E402

from pipelines.features import build_features  # noqa: E402


GENERATE = """
import sys
from pipelines.simulate import n_users_for_events, simulate
events, _ = simulate({"n_users": n_users_for_events(int(sys.argv[2]), 28), "days": 28, "seed": 7})
events.to_parquet(sys.argv[1], index=False)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--file", help="use this clean events Parquet instead of simulating one")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.file
        if path is None:
            # generated in a child process, so the peak memory below is the feature step's own
            path = str(Path(tmp) / "events.parquet")
            subprocess.run([sys.executable, "-c", GENERATE, path, str(args.events)], check=True,
                           cwd=Path(__file__).resolve().parents[1])
        n = pq.ParquetFile(path).metadata.num_rows
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            features = build_features(path)
            times.append(time.perf_counter() - start)
        best, median = min(times), sorted(times)[len(times) // 2]
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(f"features: {n:,} events -> {len(features):,} users x {features.shape[1] - 1} features "
              f"on {os.cpu_count()} cores")
        print(f"  best {best:.2f} s ({n / best / 1e6:.2f} M events/s), median {median:.2f} s "
              f"({n / median / 1e6:.2f} M events/s) over {args.repeat} runs; peak RSS {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
