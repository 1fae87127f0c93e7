"""CPU training speed and peak memory of the deep detectors at a given number of users.

Table detectors: a synthetic feature table shaped like the pipeline's (the detector's ~120
columns after the volume exclusions, heavy-tailed and zero-inflated), so the figure measures
the training loop, not the simulator. The sequence detector: the simulator's events (or a
synthetic log) for that many users, then, as the pipeline runs them, the sequences step
(pipelines.stages.sequences_stage: DuckDB, validation, Parquet) and a training + scoring
process that reads its output. Each is a fresh child process, so each peak RSS is that
process's alone. A check then reads the events and the sequences file: every user kept
min(its events, sequences.max_events) of them, the latest ones (the run fails otherwise).

`--heavy-tail-share S` (with --synthetic-events-per-user X) gives a share S of users between
--heavy-tail-events LOW:HIGH events each and the rest about X, so the max_events cap is
exercised: Poisson(16) per user, as before, never reaches 128.

    python benchmarks/bench_deep.py [--users 100000] [--features 120] [--epochs 5] [--days 28]
                                    [--detectors autoencoder,vae,sequence_autoencoder]
                                    [--fit-users N] [--synthetic-events-per-user X]
                                    [--heavy-tail-share 0.025 --heavy-tail-events 150:400]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# every child's last line: its figures as JSON, with its own peak RSS
_PEAK = "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20"

_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, pandas as pd
    sys.path.insert(0, sys.argv[1])
    from pipelines.detectors import make_detector
    import torch, tqdm.auto  # noqa: F401  imported before the clock starts: a one-off cost, not training
    from pipelines.deep import loop  # noqa: F401
    name, users, features, epochs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    rng = np.random.default_rng(0)
    cols = {}
    for j in range(features):
        kind = j % 3
        if kind == 0:
            cols[f"f{j}_7d"] = rng.lognormal(1.0, 1.0, users)
        elif kind == 1:
            cols[f"f{j}_28d"] = np.where(rng.random(users) < 0.8, 0.0, rng.gamma(2.0, 3.0, users))
        else:
            cols[f"f{j}_hist"] = rng.beta(1.0, 10.0, users)
    data = pd.DataFrame(cols)
    del cols
    figures = {"users": users, "features": features}
""")

# the end of every child: fit `name` on `data`, score it, print the figures as one JSON line
# (the peak RSS after each phase too: ru_maxrss only grows, so the phase that raises it shows)
_FIT_AND_SCORE = textwrap.dedent(f"""
    import numpy as np, pandas as pd
    fit_users = int(sys.argv[-1])
    figures["rss_before_fit_gib"] = {_PEAK}
    fitted_on = data
    if 0 < fit_users < len(data):  # as train.fit_sample_users does: fit on a sample, score everyone
        rows = np.sort(np.random.default_rng(0).choice(len(data), fit_users, replace=False))
        fitted_on = data.take(rows) if hasattr(data, "take") and not isinstance(data, pd.DataFrame) else data.iloc[rows]
    figures["fit_users"] = len(fitted_on)
    t1 = time.perf_counter()
    det = make_detector(name, {{"epochs": epochs, "patience": epochs, "progress": False, "device": "cpu"}}).fit(fitted_on)
    fit_s = time.perf_counter() - t1
    figures["rss_after_fit_gib"] = {_PEAK}
    t2 = time.perf_counter()
    det.score(data)
    print(json.dumps({{"detector": name, **figures, "epochs": len(det.history_), "fit_s": fit_s,
                      "s_per_epoch": fit_s / len(det.history_), "score_s": time.perf_counter() - t2,
                      "peak_rss_gib": {_PEAK}}}))
""")


_SIMULATE_CHILD = textwrap.dedent(f"""
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    from pipelines.clean import clean
    from pipelines.config import default_params
    from pipelines.simulate import simulate
    params = default_params()
    events, _ = simulate({{**params["simulate"], "n_users": int(sys.argv[2]), "days": int(sys.argv[4])}})
    clean(events, params["clean"])[0].to_parquet(sys.argv[3])
    print(json.dumps({{"peak_rss_gib": {_PEAK}}}))
""")

# A shop log where most users have about `per_user` events and a share of them many more: the
# columns the sequences step reads, shaped as benchmarks/bench_scale.py's synthetic log, written
# a block of users at a time (the generator's memory stays small at tens of millions of events)
_HEAVY_TAIL = textwrap.dedent(f"""
    import json, resource, sys
    import numpy as np, pyarrow as pa, pyarrow.parquet as pq
    path, users, per_user, share, low, high = (sys.argv[1], int(sys.argv[2]), float(sys.argv[3]),
                                               float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    rng = np.random.default_rng(8)
    counts = np.maximum(1, rng.poisson(per_user, users))
    heavy = rng.random(users) < share
    counts[heavy] = rng.integers(low, high + 1, int(heavy.sum()))
    end = np.datetime64("2026-11-30T23:00:00", "s").astype("int64")
    types = np.array(["view", "cart", "purchase", "login", "review", "refund", "payment_failed"])
    writer, first_event = None, 0
    for lo in range(0, users, 50_000):
        block = counts[lo:lo + 50_000]
        n = int(block.sum())
        user = np.repeat(np.arange(lo, lo + len(block)), block)
        kind = rng.choice(len(types), n, p=[0.62, 0.12, 0.08, 0.12, 0.02, 0.02, 0.02])
        table = pa.table({{
            "event_time": pa.array((end - rng.integers(0, 28 * 86400, n)).astype("datetime64[s]"))
                          .cast(pa.timestamp("us", tz="UTC")),
            "user_id": pa.array(np.char.add("u", user.astype(str))),
            "event_id": pa.array(np.char.add("e", np.arange(first_event, first_event + n).astype(str))),
            "event_type": pa.array(types[kind]),
            "price": pa.array(np.where(np.isin(kind, [2, 5, 6]), np.round(rng.lognormal(3.0, 1.0, n), 2), np.nan)),
            "device_id": pa.array(np.char.add("d", (user * 7 + rng.integers(0, 2, n)).astype(str))),
            "ip": pa.array(np.char.add("10.0.", (user % 250).astype(str)), type=pa.string()),
            "country": pa.array(rng.choice(np.array(["DE", "FR", "US", "GB"]), n)),
        }})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        first_event += n
    writer.close()
    print(json.dumps({{"events": int(counts.sum()), "heavy_users": int(heavy.sum()), "peak_rss_gib": {_PEAK}}}))
""")

# the sequences step itself (DuckDB, validation, the Parquet write), timed whole and its
# build_sequences part alone
_STEP_CHILD = textwrap.dedent(f"""
    import json, resource, sys, time
    sys.path.insert(0, sys.argv[1])
    import pipelines.sequences
    from pipelines import stages
    from pipelines.config import default_params
    from pipelines.features import resolve_as_of
    events, out, work = sys.argv[2], sys.argv[3], sys.argv[4]
    as_of = resolve_as_of(events, None).isoformat()
    built = {{}}
    build = pipelines.sequences.build_sequences

    def timed_build(*args, **kwargs):
        t = time.perf_counter()
        frame = build(*args, **kwargs)
        built.update(build_s=time.perf_counter() - t, rss_after_build_gib={_PEAK})
        return frame

    pipelines.sequences.build_sequences = timed_build
    t0 = time.perf_counter()
    info = stages.sequences_stage(default_params(), as_of, events_in=events, out=out,
                                  report_out=work + "/sequences.json", validation_dir=work + "/validation")
    print(json.dumps({{"as_of": as_of, "step_s": time.perf_counter() - t0, **built, **info, "peak_rss_gib": {_PEAK}}}))
""")

# training and scoring read the step's output as the train step does (stages.sequences_loader)
_SEQUENCE_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    sys.path.insert(0, sys.argv[1])
    from pipelines import stages
    from pipelines.detectors import make_detector
    import torch, tqdm.auto  # noqa: F401
    from pipelines.deep import loop  # noqa: F401
    name, path, as_of, epochs = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    t0 = time.perf_counter()
    data = stages.sequences_loader(path, as_of)()
    figures = {"users": len(data), "events": int(data.lengths.sum()), "load_s": time.perf_counter() - t0}
""")

# Did the cap apply? From the events and the step's output: each user kept min(n, max_events)
# events with steps 0..k-1, its latest event among them, and a capped user's oldest kept event
# has fewer than max_events events after it and at least max_events from it on (ties allowed)
_CHECK_CHILD = textwrap.dedent(f"""
    import datetime as dt, json, resource, sys
    import duckdb
    events, sequences, as_of, cap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    con = duckdb.connect()
    con.execute("SET memory_limit = '2GB'")
    con.execute("SET preserve_insertion_order = false")
    end = f"TIMESTAMPTZ '{{dt.date.fromisoformat(as_of) + dt.timedelta(days=1)}} 00:00:00+00'"
    con.execute(f\"\"\"CREATE TEMP TABLE ev AS SELECT CAST(user_id AS VARCHAR) AS user_id, event_time
                     FROM read_parquet('{{events}}') WHERE event_time < {{end}}\"\"\")
    con.execute(f\"\"\"CREATE TEMP TABLE kept AS SELECT user_id, count(*) AS k, min(step) AS first_step,
                     max(step) AS last_step, min(event_time) AS first_kept, max(event_time) AS last_kept
                     FROM read_parquet('{{sequences}}') GROUP BY user_id\"\"\")
    row = con.execute(f\"\"\"
        WITH src AS (SELECT user_id, count(*) AS n, max(event_time) AS last FROM ev GROUP BY user_id)
        SELECT count(*), sum(n), count(*) FILTER (n > {{cap}}), max(n), max(k),
               count(*) FILTER (k IS NULL), count(*) FILTER (k != least(n, {{cap}})),
               count(*) FILTER (first_step != 0 OR last_step != k - 1), count(*) FILTER (last_kept != last),
               count(*) FILTER (n > {{cap}} AND k = {{cap}}), sum(k)
        FROM src LEFT JOIN kept USING (user_id)\"\"\").fetchone()
    (not_latest,), = con.execute(f\"\"\"
        SELECT count(*) FROM (
            SELECT ev.user_id, count(*) FILTER (ev.event_time >= first_kept) AS from_first,
                   count(*) FILTER (ev.event_time > first_kept) AS after_first
            FROM ev JOIN kept USING (user_id) WHERE kept.k = {{cap}} GROUP BY ev.user_id)
        WHERE from_first < {{cap}} OR after_first >= {{cap}}\"\"\").fetchall()
    (extra_users,), = con.execute("SELECT count(*) FROM kept ANTI JOIN (SELECT DISTINCT user_id FROM ev) USING (user_id)").fetchall()
    keys = ("users", "events", "users_over_cap", "most_events", "longest_kept", "users_missing", "wrong_length",
            "bad_steps", "latest_not_kept", "over_cap_kept_exactly_cap", "events_kept")
    out = {{k: int(v or 0) for k, v in zip(keys, row)}}
    out.update(not_latest=int(not_latest), users_not_in_events=int(extra_users), max_events=cap,
               peak_rss_gib={_PEAK})
    print(json.dumps(out))
""")


def _child(code: str, *argv: str) -> dict:
    """Run `code` in a fresh interpreter; its last stdout line is its figures (JSON)."""
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH whole numbers, not {text!r}") from None
    if not 1 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected 1 <= LOW <= HIGH, not {text!r}")
    return low, high


def _cap_problems(c: dict) -> list[str]:
    """What the check child found wrong; empty when the cap applied as it should."""
    counts = {"users_missing": "users with events but no sequence", "users_not_in_events": "sequences of unknown users",
              "wrong_length": "users whose sequence is not min(events, max_events) long",
              "bad_steps": "users whose steps are not 0..length-1", "latest_not_kept": "users whose latest event is not kept",
              "not_latest": "capped users whose kept events are not their latest"}
    problems = [f"{c[k]:,} {what}" for k, what in counts.items() if c[k]]
    if c["over_cap_kept_exactly_cap"] != c["users_over_cap"]:
        problems.append(f"{c['users_over_cap']:,} users over the cap, {c['over_cap_kept_exactly_cap']:,} kept exactly "
                        f"{c['max_events']}")
    return problems


def _sequence_inputs(args, work: Path) -> tuple[Path, str]:
    """Events, the sequences step and the cap check; the sequences file and its day."""
    events, sequences = work / "events.parquet", work / "sequences.parquet"
    if args.heavy_tail_share:
        low, high = args.heavy_tail_events
        g = _child(_HEAVY_TAIL, str(events), str(args.users), str(args.synthetic_events_per_user),
                   str(args.heavy_tail_share), str(low), str(high))
        print(f"  events: {g['events']:,} synthetic ({g['heavy_users']:,} users with {low}-{high}, the rest about "
              f"{args.synthetic_events_per_user:g}), generator peak RSS {g['peak_rss_gib']:.2f} GiB")
    elif args.synthetic_events_per_user:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from bench_scale import _GENERATE
        g = _child(_GENERATE + f"\nimport json, resource\nprint(json.dumps({{'peak_rss_gib': {_PEAK}}}))\n",
                   str(events), str(args.users), str(args.synthetic_events_per_user))
        print(f"  events: bench_scale's synthetic log, generator peak RSS {g['peak_rss_gib']:.2f} GiB")
    else:
        g = _child(_SIMULATE_CHILD, str(REPO), str(args.users), str(events), str(args.days))
        print(f"  events: the simulator's, cleaned, over {args.days} days; that child's peak RSS {g['peak_rss_gib']:.2f} GiB")
    s = _child(_STEP_CHILD, str(REPO), str(events), str(sequences), str(work))
    print(f"  sequences step ({s['as_of']}, max_events {s['max_events']}): {s['step_s']:.1f} s "
          f"(build_sequences {s['build_s']:.1f} s, peak RSS then {s['rss_after_build_gib']:.2f} GiB), "
          f"{s['users']:,} users, {s['events_kept']:,} events kept, peak RSS {s['peak_rss_gib']:.2f} GiB")
    c = _child(_CHECK_CHILD, str(events), str(sequences), s["as_of"], str(s["max_events"]))
    print(f"  cap check: {c['events']:,} events of {c['users']:,} users before the end of {s['as_of']}; "
          f"{c['users_over_cap']:,} users over max_events {c['max_events']} (most events {c['most_events']:,}), "
          f"{c['over_cap_kept_exactly_cap']:,} of them kept exactly {c['max_events']}, their latest; "
          f"longest kept {c['longest_kept']}, {c['events_kept']:,} events kept")
    problems = _cap_problems(c)
    if problems:
        raise SystemExit("the max_events cap did not apply as it should: " + "; ".join(problems))
    return sequences, s["as_of"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=120)
    ap.add_argument("--detectors", default="autoencoder,vae,sequence_autoencoder")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--fit-users", type=int, default=0, help="fit on a seeded sample of this many users "
                    "(train.fit_sample_users) and score every user; 0 = fit on all")
    ap.add_argument("--synthetic-events-per-user", type=float, default=0,
                    help="sequence detector: benchmarks/bench_scale.py's synthetic shop log with about this many "
                    "events per user instead of the simulator (fast to make at 1M users)")
    ap.add_argument("--heavy-tail-share", type=float, default=0,
                    help="with --synthetic-events-per-user: this share of users gets --heavy-tail-events events each")
    ap.add_argument("--heavy-tail-events", type=_range, default=(150, 400), metavar="LOW:HIGH",
                    help="events of each heavy user, uniform in LOW..HIGH (default 150:400, over max_events 128)")
    ap.add_argument("--days", type=int, default=28, help="days the simulator spans for the sequence detector "
                    "(about 2.8 events per user per day; at 1M users use 2)")
    args = ap.parse_args()
    if not 0 <= args.heavy_tail_share < 1:
        ap.error(f"--heavy-tail-share must be in [0, 1), not {args.heavy_tail_share}")
    if args.heavy_tail_share and not args.synthetic_events_per_user:
        ap.error("--heavy-tail-share needs --synthetic-events-per-user (the other users' events)")
    import torch

    print(f"{args.users:,} users x {args.features} features, {args.epochs} epochs, CPU, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    from pipelines.detectors import get_detector_class

    tmp = tempfile.TemporaryDirectory()
    sequences = None
    for name in args.detectors.split(","):
        sequence = get_detector_class(name).input_kind == "sequence"
        if sequence and sequences is None:
            sequences, as_of = _sequence_inputs(args, Path(tmp.name))
        if sequence:
            r = _child(_SEQUENCE_CHILD + _FIT_AND_SCORE, str(REPO), name, str(sequences), as_of, str(args.epochs),
                       str(args.fit_users))
            print(f"  {name}: read {r['users']:,} users' sequences ({r['events']:,} events) in {r['load_s']:.1f} s "
                  f"(RSS {r['rss_before_fit_gib']:.2f} GiB), fit on {r['fit_users']:,} users {r['fit_s']:.1f} s "
                  f"({r['s_per_epoch']:.1f} s/epoch, {r['epochs']} epochs; peak RSS then {r['rss_after_fit_gib']:.2f} GiB), "
                  f"score all {r['users']:,} users {r['score_s']:.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB")
            continue
        r = _child(_CHILD + _FIT_AND_SCORE, str(REPO), name, str(args.users), str(args.features), str(args.epochs),
                   str(args.fit_users))
        print(f"  {name:12s} fit on {r['fit_users']:,} users {r['fit_s']:7.1f} s ({r['s_per_epoch']:.1f} s/epoch, "
              f"{r['epochs']} epochs), score {r['score_s']:5.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
