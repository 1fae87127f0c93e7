"""The drift example of the README ("Run report and drift"), measured: a model trained on one day
of a simulated 28-day world scores that day, the next day and a later day.

    python docs/make_drift_example.py [--users 3000] [--out DIR]

It simulates the world (params.yaml's simulate section, `--users` users), runs ingest, clean and
features for 2026-11-17, -18 and -21 under DIR (default: a temporary folder), trains and
promotes on 2026-11-17, scores each day, and prints each day's drift verdict: the status, the
features above drift.psi_warn with their PSI (and whether the model reads them), the score's
PSI and its KS test. DIR keeps each day's report.html.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN_DAY, DAYS = "2026-11-17", ("2026-11-17", "2026-11-18", "2026-11-21")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from pipelines import io, stages
    from pipelines.config import load_params, override
    from pipelines.layout import Layout
    from pipelines.simulate import simulate

    root = args.out or Path(tempfile.mkdtemp(prefix="drift-example-"))
    root.mkdir(parents=True, exist_ok=True)
    params = load_params(str(REPO / "params.yaml"))
    events, _ = simulate({**params["simulate"], "n_users": args.users})
    events.to_parquet(root / "events.parquet", index=False)
    for key, value in (("storage", {"data": str(root / "data"), "reports": str(root / "reports"),
                                    "models": str(root / "models")}),
                       ("ingest.source", str(root / "events.parquet"))):
        params = override(params, key, value)
    lay = Layout.from_params(params)
    for day in DAYS:
        stages.ingest_stage(params, day)
        stages.clean_stage(params, day)
        stages.features_stage(params, day)
        if day == TRAIN_DAY:
            stages.train_stage(params, day)
            stages.promote_stage(params, day)
        stages.score_stage(params, day)
        drift = io.read_json(lay.report(day, "drift.json"))
        s = drift["score"]
        above = [f"{r['feature']} {r['psi']:.2f}{'' if r['in_model'] else ' (not read by the model)'}"
                 for r in drift["features"] if r["status"] != "ok" and r["psi"] is not None]
        print(f"{day}: {drift['status']} ({drift['users']} users today, {drift['reference_users']} in training); "
              f"features above psi_warn: {', '.join(above) or 'none'}; score PSI {s['psi']:.2f}, "
              f"KS D={s['ks_statistic']:.3f} p={s['ks_pvalue']:.2g}; report {lay.run_report(day)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
