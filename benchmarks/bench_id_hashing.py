"""What hashing IPs and device ids costs cleaning (pipelines.clean.hash_ids, both columns).

Synthetic columns shaped like a log's: N rows drawn from U distinct IPs and U distinct device
ids, 5% missing. Prints wall and CPU seconds per column and in all, best of the repeats:

    python benchmarks/bench_id_hashing.py [--rows 5000000] [--distinct 500000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd


def column(rng: np.random.Generator, rows: int, distinct: int, kind: str) -> pd.Series:
    if kind == "ip":
        parts = rng.integers(0, 256, (distinct, 4))
        pool = pd.Series([f"{a}.{b}.{c}.{d}" for a, b, c, d in parts], dtype="str")
    else:
        pool = pd.Series([f"d{n:09d}" for n in rng.permutation(distinct * 3)[:distinct]], dtype="str")
    values = pool.iloc[rng.integers(0, distinct, rows)].reset_index(drop=True)
    values[rng.random(rows) < 0.05] = None
    return values.astype("str")


def main() -> None:
    from pipelines.clean import hash_ids

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--distinct", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    columns = {kind: column(rng, args.rows, args.distinct, kind) for kind in ("ip", "device_id")}
    result = {"rows": args.rows, "distinct": args.distinct}
    for kind, values in columns.items():
        best_wall = best_cpu = float("inf")
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            hashed = hash_ids(values, "benchmark-salt")
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        assert hashed.isna().sum() == values.isna().sum() and hashed.nunique() == values.nunique()
        result[kind] = {"wall_s": round(best_wall, 2), "cpu_s": round(best_cpu, 2)}
    result["total_wall_s"] = round(sum(result[k]["wall_s"] for k in columns), 2)
    result["total_cpu_s"] = round(sum(result[k]["cpu_s"] for k in columns), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
