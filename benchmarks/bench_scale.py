"""Wall time and peak memory of the pipeline at a million users (issue 8's targets).

1. `pipelines run` on a synthetic file of N users with about 5 events each (ingest, clean,
   validate, features, train, score, publish to an embedded DuckDB), in a child process.
2. Scoring plus publishing alone (score, explain, validate, write the scores, replace the day
   in the warehouse) with the model that run trained, in a fresh child process.

Each is its own process, so its peak RSS is its own. Targets on 2 cores: the run under 60 s and
4 GB, scoring plus publishing under 30 s and 2 GB.

    python benchmarks/bench_scale.py [--users 1000000] [--events-per-user 5] [--only run|score]
        [--events FILE] [--keep DIR [--reuse]]

`--events` takes an events file (e.g. one this script generated before) instead of generating;
`--keep DIR --reuse` reuses the run already in DIR (its trained model and features), so
`--only score` times scoring plus publishing alone, without rerunning the pipeline first.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Users of a shop over 28 days: mostly views, some carts and purchases, logins with a device,
# an IP and a country each; enough columns that every feature family has something to count.
_GENERATE = textwrap.dedent("""
    import sys
    import numpy as np, pyarrow as pa, pyarrow.parquet as pq
    path, users, per_user = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rng = np.random.default_rng(8)
    counts = np.maximum(1, rng.poisson(per_user, users))
    n = int(counts.sum())
    user = np.repeat(np.arange(users), counts)
    end = np.datetime64("2026-11-30T23:00:00", "s").astype("int64")
    times = end - rng.integers(0, 28 * 86400, n)
    types = np.array(["view", "cart", "purchase", "login", "review", "refund", "payment_failed"])
    kind = rng.choice(len(types), n, p=[0.62, 0.12, 0.08, 0.12, 0.02, 0.02, 0.02])
    price = np.where(np.isin(kind, [2, 5, 6]), np.round(rng.lognormal(3.0, 1.0, n), 2), np.nan)
    table = pa.table({
        "event_time": pa.array(times.astype("datetime64[s]")).cast(pa.timestamp("us", tz="UTC")),
        "user_id": pa.array(np.char.add("u", user.astype(str))),
        "event_id": pa.array(np.char.add("e", np.arange(n).astype(str))),
        "event_type": pa.array(types[kind]),
        "product_id": pa.array(np.char.add("p", rng.integers(0, 50_000, n).astype(str))),
        "price": pa.array(price),
        "quantity": pa.array(np.ones(n, dtype="int64")),
        "session_id": pa.array(np.char.add(np.char.add("s", user.astype(str)), "-" + (rng.integers(0, 3, n)).astype(str))),
        "device_id": pa.array(np.char.add("d", (user * 7 + rng.integers(0, 2, n)).astype(str))),
        "ip": pa.array(np.char.add("10.0.", (user % 250).astype(str)), type=pa.string()),
        "country": pa.array(rng.choice(np.array(["DE", "FR", "US", "GB"]), n)),
        "rating": pa.array(rng.integers(1, 6, n), mask=kind != 4),
    })
    pq.write_table(table, path)
    print(n)
""")

_RUN = textwrap.dedent("""
    import json, resource, sys, time
    sys.path.insert(0, sys.argv[1])
    from pipelines.config import load_params, override
    from pipelines.run import run_pipeline
    from pipelines import stages
    params = override(load_params(sys.argv[1] + "/params.yaml"), "warehouse.url", "duckdb:///" + sys.argv[3] + "/w.duckdb")
    steps = {}

    def timed(name, step):
        def run(*args, **kwargs):
            t = time.perf_counter()
            try:
                return step(*args, **kwargs)
            finally:  # the peak so far: the step that raises it is the one to look at
                steps[name] = [round(time.perf_counter() - t, 1),
                               round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)]
        return run

    for name in ("ingest", "clean", "features", "sequences", "train", "promote", "score", "publish"):
        setattr(stages, name + "_stage", timed(name, getattr(stages, name + "_stage")))
    start = time.perf_counter()
    summary = run_pipeline(sys.argv[2], sys.argv[3], params, run_id="bench")
    # isolated steps (run.isolate_steps) ran in forked children: their own figures, and the
    # peak is the larger of this process's and the largest child's
    isolated = "steps" in summary
    steps = {k: [v["seconds"], v["peak_rss_gib"]] for k, v in summary["steps"].items()} if isolated else steps
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"wall_s": time.perf_counter() - start, "users_scored": summary["score"]["users_scored"],
                      "as_of": summary["score"]["as_of"], "flagged": summary["score"]["flagged"], "steps": steps,
                      "isolated": isolated, "peak_rss_gib": peak / 2**20,
                      "parent_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
""")

_SCORE = textwrap.dedent("""
    import json, resource, sys, time
    sys.path.insert(0, sys.argv[1])
    from pipelines import stages
    from pipelines.config import load_params, override
    from pipelines.layout import Layout
    out = sys.argv[2]
    lay = Layout.under(out)
    params = load_params(sys.argv[1] + "/params.yaml")
    params = override(params, "storage", {"data": lay.data, "reports": lay.reports, "models": lay.models})
    params = override(params, "score.active_within_days", None)
    params = override(params, "warehouse.url", "duckdb:///" + out + "/w.duckdb")
    day = sys.argv[3]
    import pipelines.score, pipelines.warehouse, pipelines.detectors.ecdf_tail  # noqa: F401  not part of the figure
    start, cpu = time.perf_counter(), time.process_time()
    score = stages.score_stage(params, day, features_in=out + "/features.parquet", out=out + "/scores2.parquet",
                               validation_dir=out + "/validation2", report_out=out + "/score2.json")
    scored, scored_cpu = time.perf_counter(), time.process_time()
    stages.publish_stage(params, day, scores_in=out + "/scores2.parquet", run_id="bench2",
                         report_out=out + "/publish2.json")
    end = time.perf_counter()
    print(json.dumps({"score_s": scored - start, "publish_s": end - scored, "wall_s": end - start,
                      "score_cpu_s": scored_cpu - cpu, "publish_cpu_s": time.process_time() - scored_cpu,
                      "users_scored": score["users_scored"],
                      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
""")


def _child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, str(REPO), *args], capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events-per-user", type=float, default=5.0)
    parser.add_argument("--only", choices=["run", "score"])
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--events", help="an events file to run on instead of generating one")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep and --only score: reuse the run already in that folder")
    args = parser.parse_args()
    if args.reuse and not (args.keep and args.only == "score"):
        parser.error("--reuse needs --keep DIR and --only score")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        out = work / "run"
        reused = work / "run.json"
        if args.reuse and reused.exists():
            run = json.loads(reused.read_text())
            print(f"reusing the run in {out} (as of {run['as_of']}); {os.cpu_count()} cores")
        else:
            if args.events:
                events = Path(args.events)
                if not events.exists():
                    sys.exit(f"--events {events}: no such file")
                print(f"events from {events}; {os.cpu_count()} cores")
            else:
                events = work / "events.parquet"
                t0 = time.perf_counter()
                n = subprocess.run([sys.executable, "-c", _GENERATE, str(events), str(args.users),
                                    str(args.events_per_user)], check=True, capture_output=True,
                                   text=True).stdout.strip()
                print(f"{args.users:,} users, {int(n):,} events generated in {time.perf_counter() - t0:.0f} s; "
                      f"{os.cpu_count()} cores")
            run = _child(_RUN, str(events), str(out))
            if args.keep:
                reused.write_text(json.dumps(run) + "\n")
        if args.only != "score":
            print(f"pipelines run:     {run['wall_s']:6.1f} s, peak RSS {run['peak_rss_gib']:.2f} GiB "
                  f"({run['users_scored']:,} users scored, {run['flagged']} flagged)   target < 60 s, < 4 GB")
            if run["isolated"]:  # run.isolate_steps: each step's own process
                print(f"  each step in its own process (parent {run['parent_rss_gib']:.2f} GiB); per step "
                      "(seconds, the step's peak RSS in GiB): " +
                      ", ".join(f"{k} {v[0]} s {v[1]}" for k, v in run["steps"].items()))
            else:
                print("  per step (seconds, peak RSS so far in GiB): " +
                      ", ".join(f"{k} {v[0]} s {v[1]}" for k, v in run["steps"].items()))
        if args.only != "run":
            score = _child(_SCORE, str(out), run["as_of"])
            print(f"score + publish:   {score['wall_s']:6.1f} s (score {score['score_s']:.1f} s, publish "
                  f"{score['publish_s']:.1f} s), peak RSS {score['peak_rss_gib']:.2f} GiB   target < 30 s, < 2 GB")
            # CPU seconds (all threads): steadier than wall time when other work shares the cores
            print(f"  CPU time: score {score['score_cpu_s']:.1f} s, publish {score['publish_cpu_s']:.1f} s; "
                  f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
