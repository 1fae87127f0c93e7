"""Where the features step spends its time: each DuckDB statement of pipelines.features, timed
on its own, then the result streamed into the frame, the GX check and the write, in the order the
step runs them (diagnosis for issue 8; the step's own figures are bench_scale.py's).

    python benchmarks/profile_features.py EVENTS.parquet [--as-of YYYY-MM-DD] [--threads N]
        [--params params.yaml]

EVENTS is a clean events file (the clean step's output, e.g. a bench_scale.py --keep folder's
run/work/clean.parquet). Prints seconds per statement (first line of its SQL) and the peak RSS.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("events")
    ap.add_argument("--as-of", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--params", default=None)
    args = ap.parse_args()

    import pandas as pd

    from pipelines import features as F
    from pipelines import io
    from pipelines.config import load_params, section
    from pipelines.stages import check

    p = {**F.DEFAULTS, **section(load_params(args.params, required=False), "features")}
    if args.threads:
        p["threads"] = args.threads
    timings: list[tuple[str, float]] = []

    def timed(label: str, fn):
        start = time.perf_counter()
        out = fn()
        timings.append((label, time.perf_counter() - start))
        return out

    whole = time.perf_counter()
    windows = F._parse_windows(p["windows_days"])
    history_days = F._parse_history_days(p["history_days"], windows)
    as_of = timed("resolve as-of day", lambda: F.resolve_as_of(args.events, args.as_of))
    end = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
    with tempfile.TemporaryDirectory(prefix="profile-features-") as scratch:
        con = F._connect(p["threads"], p.get("memory_limit"))
        F._register(con, args.events)
        signals = timed("signals", lambda: F._signals(con, end))
        small = timed("small amount", lambda: F._small_amount(con, p, end, history_days, signals))
        for statement in F._feature_statements(windows, history_days, end, small["value"], signals):
            if callable(statement):  # a step in Python (e.g. _user_counts): its function's name
                name = getattr(statement, "func", statement).__name__
                timed(f"{name} (NumPy)", lambda statement=statement: statement(con))
                continue
            for part in (s for s in re.split(r";\s*\n", statement) if s.strip()):  # not the ";" in comments
                label = " ".join(part.split())[:70]
                timed(label, lambda part=part: con.execute(part))
        frame = timed("stream the features view into the frame (_by_user)",
                      lambda: F._by_user(con, p.get("memory_limit")))
        con.close()
        frame.attrs["as_of"] = as_of.isoformat()
        timed("GX check (features suite, import included)", lambda: check(
            frame, "features", os.path.join(scratch, "v"), windows=F.window_suffixes(p)))
        timed("write features Parquet", lambda: io.write_parquet(frame, os.path.join(scratch, "out.parquet")))
    total = time.perf_counter() - whole
    width = max(len(label) for label, _ in timings)
    for label, seconds in sorted(timings, key=lambda t: -t[1]):
        print(f"{label:<{width}}  {seconds:7.2f} s  {100 * seconds / total:5.1f}%")
    print(f"{'total':<{width}}  {total:7.2f} s; {len(frame):,} users x {frame.shape[1] - 1} features; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB; "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
