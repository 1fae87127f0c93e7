"""CPU training speed and peak memory of the deep detectors at a given number of users.

Table detectors: a synthetic feature table shaped like the pipeline's (the detector's ~120
columns after the volume exclusions, heavy-tailed and zero-inflated), so the figure measures
the training loop, not the simulator. The sequence detector: the simulator's events for that
many users, then the sequences step (DuckDB, timed) and training. Each run is a fresh child
process, so its peak RSS is that run's alone.

    python benchmarks/bench_deep.py [--users 100000] [--features 120] [--epochs 5] [--days 28]
                                    [--detectors autoencoder,vae,sequence_autoencoder]
                                    [--fit-users N] [--synthetic-events-per-user X]
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
_FIT_AND_SCORE = textwrap.dedent("""
    import numpy as np, pandas as pd
    fit_users = int(sys.argv[-1])
    fitted_on = data
    if 0 < fit_users < len(data):  # as train.fit_sample_users does: fit on a sample, score everyone
        rows = np.sort(np.random.default_rng(0).choice(len(data), fit_users, replace=False))
        fitted_on = data.take(rows) if hasattr(data, "take") and not isinstance(data, pd.DataFrame) else data.iloc[rows]
    figures["fit_users"] = len(fitted_on)
    t1 = time.perf_counter()
    det = make_detector(name, {"epochs": epochs, "patience": epochs, "progress": False, "device": "cpu"}).fit(fitted_on)
    fit_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    det.score(data)
    print(json.dumps({"detector": name, **figures, "epochs": len(det.history_), "fit_s": fit_s,
                      "s_per_epoch": fit_s / len(det.history_), "score_s": time.perf_counter() - t2,
                      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
""")


_SIMULATE_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from pipelines.clean import clean
    from pipelines.config import default_params
    from pipelines.simulate import simulate
    params = default_params()
    events, _ = simulate({**params["simulate"], "n_users": int(sys.argv[2]), "days": int(sys.argv[4])})
    clean(events, params["clean"])[0].to_parquet(sys.argv[3])
""")

# the sequences step's work from the clean events file, as the pipeline does it (the simulator's
# own memory is not part of the figure)
_SEQUENCE_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    sys.path.insert(0, sys.argv[1])
    from pipelines.config import default_params
    from pipelines.detectors import make_detector
    from pipelines.sequences import EventSequences, build_sequences
    import torch, tqdm.auto  # noqa: F401
    from pipelines.deep import loop  # noqa: F401
    name, path, epochs = sys.argv[2], sys.argv[3], int(sys.argv[4])
    params = default_params()
    t0 = time.perf_counter()
    from pipelines.features import resolve_as_of
    frame = build_sequences(path, resolve_as_of(path, None), params["sequences"]["max_events"],
                            memory_limit=params["sequences"]["memory_limit"])
    build_s = time.perf_counter() - t0
    data = EventSequences.from_frame(frame)
    del frame
    figures = {"users": len(data), "events": int(data.lengths.sum()), "build_s": build_s}
""")


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
    ap.add_argument("--days", type=int, default=28, help="days the simulator spans for the sequence detector "
                    "(about 2.8 events per user per day; at 1M users use 2)")
    args = ap.parse_args()
    import torch

    print(f"{args.users:,} users x {args.features} features, {args.epochs} epochs, CPU, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    from pipelines.detectors import get_detector_class

    tmp = tempfile.TemporaryDirectory()
    events = Path(tmp.name) / "clean.parquet"
    for name in args.detectors.split(","):
        sequence = get_detector_class(name).input_kind == "sequence"
        if sequence and not events.exists() and args.synthetic_events_per_user:
            sys.path.insert(0, str(REPO / "benchmarks"))
            from bench_scale import _GENERATE
            subprocess.run([sys.executable, "-c", _GENERATE, str(events), str(args.users),
                            str(args.synthetic_events_per_user)], check=True, capture_output=True)
        elif sequence and not events.exists():
            subprocess.run([sys.executable, "-c", _SIMULATE_CHILD, str(REPO), str(args.users), str(events),
                            str(args.days)], check=True)
        argv = [str(REPO), name, str(events), str(args.epochs)] if sequence else \
            [str(REPO), name, str(args.users), str(args.features), str(args.epochs)]
        proc = subprocess.run([sys.executable, "-c", (_SEQUENCE_CHILD if sequence else _CHILD) + _FIT_AND_SCORE, *argv,
                               str(args.fit_users)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}")
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        built = (f"sequences of {r['users']:,} users ({r['events']:,} events kept) built in {r['build_s']:.1f} s, "
                 if sequence else "")
        print(f"  {name:12s} {built}fit on {r['fit_users']:,} users {r['fit_s']:7.1f} s ({r['s_per_epoch']:.1f} s/epoch, {r['epochs']} epochs), "
              f"score {r['score_s']:5.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
