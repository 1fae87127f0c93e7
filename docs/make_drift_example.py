"""The drift example of the README ("Run report and drift"), measured: a model trained on one day
of a simulated 28-day world scores that day, the next day and a later day.

    python docs/make_drift_example.py [--users 3000] [--out DIR]
    python docs/make_drift_example.py --small [--users 120 --days 6 --seed 7]

It simulates the world (params.yaml's simulate section, `--users` users), runs ingest, clean and
features for 2026-11-17, -18 and -21 under DIR (default: a temporary folder), trains and
promotes on 2026-11-17, scores each day, and prints each day's drift verdict: the status, the
features above drift.psi_warn with their PSI (and whether the model reads them), the score's
PSI and its KS test. DIR keeps each day's report.html.

--small: `python -m pipelines run` on a small simulated world instead (120 users over 6 days,
seed 7: 94 users with events, 58 of them trained on), which scores its own training day, and its drift verdict
as configured and again with drift.min_users 0 (what the smoothed PSI alone says). Measured
on a shared 2-core VM: before drift.min_users and the smoothing (commit 160c144) that run was
severe (failed_payment_ratio_1d, n_payment_failed_1d, share_payment_failed_1d at PSI 0.26, 10
features above psi_warn); now it is too_few_users, and ok with drift.min_users 0.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _simulation import REPO, scored_days, simulated_world

TRAIN_DAY, DAYS = "2026-11-17", ("2026-11-17", "2026-11-18", "2026-11-21")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=None, help="simulated users (3000; --small: 120)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--small", action="store_true", help="a small `pipelines run` on its own training day")
    parser.add_argument("--days", type=int, default=6, help="--small: simulated days")
    parser.add_argument("--seed", type=int, default=7, help="--small: simulation seed")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.small:
        return small(args)
    from pipelines import io
    from pipelines.layout import Layout

    root = args.out or Path(tempfile.mkdtemp(prefix="drift-example-"))
    root.mkdir(parents=True, exist_ok=True)
    params = simulated_world(root, args.users or 3000)
    lay = Layout.from_params(params)
    for day in scored_days(params, DAYS, TRAIN_DAY):
        drift = io.read_json(lay.report(day, "drift.json"))
        s = drift["score"]
        above = [f"{r['feature']} {r['psi']:.2f}{'' if r['in_model'] else ' (not read by the model)'}"
                 for r in drift["features"] if r["status"] != "ok" and r["psi"] is not None]
        print(f"{day}: {drift['status']} ({drift['users']} users today, {drift['reference_users']} in training); "
              f"features above psi_warn: {', '.join(above) or 'none'}; score PSI {s['psi']:.2f}, "
              f"KS D={s['ks_statistic']:.3f} p={s['ks_pvalue']:.2g}; report {lay.run_report(day)}")
    return 0


def _verdict(drift: dict) -> str:
    above = [f"{r['feature']} {r['psi']:.2f}" for r in drift["features"] if r["status"] != "ok" and r["psi"] is not None]
    shown = ", ".join(above[:4]) + (f" and {len(above) - 4} more" if len(above) > 4 else "")
    return (f"{drift['status']} ({drift['users']} users, {drift['reference_users']} in training; "
            f"{len(above)} features flagged{': ' + shown if above else ''}; severe: {len(drift.get('severe', []))}; "
            f"score PSI {drift['score']['psi']:.2f})")


def small(args: argparse.Namespace) -> int:
    from pipelines import drift
    from pipelines.config import load_params, override
    from pipelines.registry import Registry
    from pipelines.run import run_pipeline
    from pipelines.simulate import simulate

    root = args.out or Path(tempfile.mkdtemp(prefix="drift-small-"))
    root.mkdir(parents=True, exist_ok=True)
    params = load_params(str(REPO / "params.yaml"))
    events, _ = simulate({**params["simulate"], "n_users": args.users or 120, "days": args.days, "seed": args.seed,
                          "anomaly_rate": 0.05})
    events.to_parquet(root / "events.parquet", index=False)
    params = override(params, "warehouse.url", f"duckdb:///{root / 'warehouse.duckdb'}")
    summary = run_pipeline(str(root / "events.parquet"), str(root / "out"), params)
    day, version = summary["score"]["as_of"], summary["score"]["model_version"]
    from pipelines import io

    recorded = io.read_json(str(root / "out" / "reports" / f"as_of={day}" / "drift.json"))
    print(f"run on {day}, as configured: {_verdict(recorded)}")
    if "min_users" in params["drift"]:
        again = drift.day_drift(override(params, "drift.min_users", 0), day, Registry(str(root / "out" / "models")),
                                version, str(root / "out" / "features.parquet"), str(root / "out" / "scores.parquet"))
        print(f"run on {day}, drift.min_users 0: {_verdict(again)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
