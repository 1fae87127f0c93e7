"""Time and peak memory of `review_text_features` on simulated event logs of 100k and 1M users,
and the time when the log has no review_text column.

    nice -n 10 python benchmarks/bench_review_text.py [--users 100000,1000000] [--cache DIR] [--repeat 1] [--recall]
        [--features-step [--memory-limit SIZE|null]] [--model lexical|wordllama]

Each log is simulated in a child process (the project's simulator, 28 days, seed 7; 1M users
is ~77M events, ~4 minutes and ~18 GB of memory for the simulator and its Parquet write) and
kept in --cache when given. Every measurement runs in a fresh child process reading the Parquet
file, so its peak RSS is the feature step's own. --recall also checks the search (MinHash
for lexical, cells for wordllama) against brute force at the smallest size (pairs of distinct
texts at cosine >= 0.9 and >= 0.8). --model is features.review_text.model (wordllama needs the
wordllama package installed).
--features-step also times the whole features step (build_features) on the same file without
and with review text, alternated --repeat times, each in a fresh child process, under
params.yaml's features.memory_limit or --memory-limit. The machine is shared: figures are noisy,
compare ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
END = "2026-11-22"  # the day after the simulation's last day

SIMULATE = """
import sys
from pipelines import io
from pipelines.simulate import simulate
events, labels = simulate({"seed": 7, "n_users": int(sys.argv[3]), "days": 28, "end_date": "2026-11-21",
                           "anomaly_rate": 0.02})
io.write_parquet(events, sys.argv[1])
io.write_parquet(labels, sys.argv[2])
"""

DROP_TEXT = """
import sys
import pyarrow.parquet as pq
source = pq.ParquetFile(sys.argv[1])
columns = [c for c in source.schema_arrow.names if c != "review_text"]
with pq.ParquetWriter(sys.argv[2] + ".part", source.schema_arrow.remove(source.schema_arrow.get_field_index("review_text"))) as out:
    for batch in source.iter_batches(columns=columns, batch_size=1_000_000):
        out.write_batch(batch)
import os
os.replace(sys.argv[2] + ".part", sys.argv[2])
"""

MEASURE = """
import json, resource, sys, time
import pandas as pd
from pipelines.review_text import review_text_features
start = time.perf_counter()
features = review_text_features(sys.argv[1], pd.Timestamp(sys.argv[2], tz="UTC"), {"model": sys.argv[3]})
seconds = time.perf_counter() - start
out = {"seconds": seconds, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
       "users": len(features), **features.attrs.get("review_text", {})}
if len(sys.argv) > 4:
    labels = pd.read_parquet(sys.argv[4])
    f = features.merge(labels, on="user_id")
    out["mean_near_duplicate_share"] = {t or "normal": round(float(v), 3) for t, v in
                                        f.groupby("anomaly_type")["near_duplicate_review_share"].mean().items()}
print(json.dumps(out))
"""

FEATURES_STEP = """
import json, resource, sys, time
from pipelines.features import build_features
params = {"review_text": {"enabled": sys.argv[2] == "on", "model": sys.argv[4]}}
if sys.argv[3] != "default":
    params["memory_limit"] = None if sys.argv[3] == "null" else sys.argv[3]
start = time.perf_counter()
features = build_features(sys.argv[1], params)
print(json.dumps({"seconds": time.perf_counter() - start, "users": len(features), "columns": features.shape[1],
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""

RECALL = """
import json, sys
import numpy as np, pandas as pd
import pipelines.review_text as rt
texts = rt._reviews(sys.argv[1], pd.Timestamp(sys.argv[2], tz="UTC")).column("text").unique()
d = rt.DEFAULTS
if sys.argv[3] == "lexical":
    X = rt.embed(texts.to_pylist())
    a, b, s, stats = rt._similar_pairs_sparse(X.copy(), 0.8, d["lsh_bands"], d["lsh_rows"], d["max_bucket"], 50_000)
    X.sort_indices()
else:
    X = rt.semantic_embed(texts.to_pylist())
    a, b, s, stats = rt._similar_pairs_cells(X, 0.8, d["ann_cluster_size"], d["ann_probes"], d["chunk_rows"])
found = set(zip(a.tolist(), b.tolist()))
truth = {}
for start in range(0, X.shape[0], 1000):  # brute force, a block of rows at a time
    S = X[start:start + 1000] @ X.T
    S = S.toarray() if hasattr(S, "toarray") else S
    i, j = np.nonzero(S >= 0.8 - 1e-6)
    keep = j > i + start
    for x, y, v in zip(i[keep] + start, j[keep], S[i[keep], j[keep]]):
        truth[(int(x), int(y))] = float(v)
out = {"distinct_texts": int(X.shape[0])}
for level in (0.9, 0.8):
    pairs = [p for p, v in truth.items() if v >= level - 1e-6]
    out[f"pairs_at_{level}"] = len(pairs)
    out[f"recall_at_{level}"] = round(sum(p in found for p in pairs) / max(len(pairs), 1), 4)
print(json.dumps(out))
"""


def child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], check=True, cwd=ROOT, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="100000,1000000", help="comma-separated simulation sizes")
    parser.add_argument("--cache", help="keep (and reuse) the simulated Parquet files here")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size; the best and the median are shown")
    parser.add_argument("--recall", action="store_true", help="check the search against brute force (smallest size)")
    parser.add_argument("--features-step", action="store_true",
                        help="also time build_features without and with review text (alternated, --repeat times)")
    parser.add_argument("--model", default="lexical", choices=("lexical", "wordllama"),
                        help="features.review_text.model")
    parser.add_argument("--memory-limit", default="default",
                        help="features.memory_limit for --features-step: a size, null, or default (params.yaml's)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.users.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.cache or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        print(f"review_text_features, model {args.model}, on {os.cpu_count()} cores (shared machine: noisy)")
        for n in sizes:
            events, labels = folder / f"events_{n}.parquet", folder / f"labels_{n}.parquet"
            if not events.exists():
                child(SIMULATE, str(events), str(labels), str(n))
            runs = [child(MEASURE, str(events), END, args.model, str(labels)) for _ in range(max(args.repeat, 1))]
            times = sorted(r["seconds"] for r in runs)
            r = runs[0]
            print(f"{n:>9,} users: {r['reviews']:,} reviews with text, {r['distinct_texts']:,} distinct texts, "
                  f"{r['users']:,} rows; best {times[0]:.1f} s, median {times[len(times) // 2]:.1f} s; "
                  f"peak RSS {max(x['peak_gib'] for x in runs):.2f} GiB")
            print(f"           candidate pairs {r['candidate_pairs']:,}, similar pairs {r['similar_pairs']:,}, "
                  + (f"largest bucket {r['largest_bucket']}" if "largest_bucket" in r else
                     f"{r['cells']:,} cells, the largest {r['largest_cell']:,} texts")
                  + "; mean near_duplicate_review_share "
                  f"{r['mean_near_duplicate_share']}")
            no_text = folder / f"events_{n}_no_text.parquet"
            if not no_text.exists():
                child(DROP_TEXT, str(events), str(no_text))
            empty = child(MEASURE, str(no_text), END, args.model)
            print(f"           without a review_text column: {empty['seconds'] * 1000:.1f} ms, {empty['users']} rows")
            if args.features_step:
                step = {"off": [], "on": []}
                for _ in range(max(args.repeat, 1)):
                    for mode in ("off", "on"):
                        step[mode].append(child(FEATURES_STEP, str(events), mode, args.memory_limit, args.model))
                for mode, label in (("off", "without"), ("on", "with")):
                    runs = step[mode]
                    print(f"           features step {label} review text: "
                          + ", ".join(f"{r['seconds']:.1f} s" for r in runs)
                          + f" ({runs[0]['users']:,} users x {runs[0]['columns']} columns); peak RSS "
                          f"{max(r['peak_gib'] for r in runs):.2f} GiB")
        if args.recall:
            n = min(sizes)
            r = child(RECALL, str(folder / f"events_{n}.parquet"), END, args.model)
            print(f"recall of the {'MinHash' if args.model == 'lexical' else 'cell'} search at {n:,} users ({r['distinct_texts']:,} distinct texts): "
                  f"{r['recall_at_0.9']:.3f} of {r['pairs_at_0.9']:,} pairs at cosine >= 0.9, "
                  f"{r['recall_at_0.8']:.3f} of {r['pairs_at_0.8']:,} at >= 0.8")


if __name__ == "__main__":
    main()
