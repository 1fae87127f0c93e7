"""Every table detector on a simulation, held-out users, figures per abuse type.

Two simulations: `dev` is params.yaml's (the one detectors were tuned on) and `frozen` is
another seed, size and date range that nothing was tuned on; report the frozen figures.
Each detector is fitted on the same users, with its params.yaml section, and measured on the
same held-out users with the same review budget (score.top_k scaled to the simulation's size).
Simulation-only figures: the labels are the simulator's.

    python benchmarks/bench_detectors_sim.py [--sim frozen|dev] [--detectors a,b] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIMULATIONS = {
    "dev": {},  # params.yaml's simulate section
    "frozen": {"seed": 20261, "n_users": 12000, "days": 35, "end_date": "2026-08-14", "anomaly_rate": 0.025},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", choices=sorted(SIMULATIONS), default="frozen")
    ap.add_argument("--detectors", help="comma-separated (default: every table detector)")
    ap.add_argument("--out", help="write the figures as JSON")
    args = ap.parse_args()

    from pipelines import stages
    from pipelines.config import default_params, override
    from pipelines.detectors import REGISTRY
    from pipelines.evaluate import evaluate, read_labels
    from pipelines.score import score_users
    from pipelines.train import train

    params = default_params()
    sim = {**params["simulate"], **SIMULATIONS[args.sim]}
    names = args.detectors.split(",") if args.detectors else \
        [n for n in sorted(REGISTRY) if REGISTRY[n].input_kind == "table"]
    with tempfile.TemporaryDirectory() as tmp:
        for key, value in {"storage.data": f"{tmp}/data", "storage.reports": f"{tmp}/reports",
                           "storage.models": f"{tmp}/models", "ingest.source": f"{tmp}/raw/events.parquet",
                           "simulate": sim}.items():
            params = override(params, key, value, source="bench")
        # the daily budget, scaled from the default 100 flags per 20,000 users
        top_k = max(1, round(params["score"]["top_k"] * sim["n_users"] / 20000))
        params = override(params, "score.top_k", top_k, source="bench")
        day = sim["end_date"]
        t0 = time.perf_counter()
        stages.simulate_stage(params, f"{tmp}/raw/events.parquet", f"{tmp}/raw/labels.parquet")
        stages.ingest_stage(params, day)
        stages.clean_stage(params, day)
        stages.features_stage(params, day)
        print(f"simulation {args.sim} {sim}: built in {time.perf_counter() - t0:.0f} s; top_k {top_k}", flush=True)
        import pandas as pd

        features = pd.read_parquet(f"{tmp}/data/features/as_of={day}/features.parquet")
        labels = read_labels(f"{tmp}/raw/labels.parquet")
        results = {}
        for name in names:
            t = time.perf_counter()
            det, info = train(features, override(params, "train.detector", name, source="bench")["train"], labels)
            fit_s = time.perf_counter() - t
            scores = score_users(features, det, params["score"], day, explain=False)
            metrics, _ = evaluate(scores, labels, params["train"])
            results[name] = {"fit_s": round(fit_s, 1), **{k: metrics[k] for k in (
                "roc_auc", "pr_auc", "precision_at_k", "recall_at_k", "k", "recall_per_type", "roc_auc_per_type")},
                "epochs": info.get("fit", {}).get("epochs_run")}
            r = results[name]
            print(f"{name:16s} ROC-AUC {r['roc_auc']:.3f}  PR-AUC {r['pr_auc']:.3f}  P@k {r['precision_at_k']:.3f}  "
                  f"R@k {r['recall_at_k']:.3f} (k={r['k']})  fit {fit_s:.1f} s", flush=True)
            if det.supervised:
                results["sklearn_hgb"] = _hist_gradient_boosting(features, labels, params, day, det.feature_names_)
                r = results["sklearn_hgb"]
                print(f"{'sklearn_hgb':16s} ROC-AUC {r['roc_auc']:.3f}  PR-AUC {r['pr_auc']:.3f}  P@k "
                      f"{r['precision_at_k']:.3f}  R@k {r['recall_at_k']:.3f} (k={r['k']})  fit {r['fit_s']:.1f} s "
                      "(same users, features and labels as supervised_mlp)", flush=True)
        types = sorted({t for r in results.values() for t in r["roc_auc_per_type"]})
        print("\nROC-AUC per type:", " ".join(f"{t[:16]:>16s}" for t in types))
        for name, r in results.items():
            print(f"{name:16s}", " ".join(f"{r['roc_auc_per_type'].get(t, float('nan')):16.3f}" for t in types))
        print("\nrecall per type at the budget:", " ".join(f"{t[:16]:>16s}" for t in types))
        for name, r in results.items():
            print(f"{name:16s}", " ".join(f"{r['recall_per_type'].get(t, float('nan')):16.2f}" for t in types))
    if args.out:
        Path(args.out).write_text(json.dumps({"simulation": sim, "top_k": top_k, "detectors": results}, indent=2))
    return 0


def _hist_gradient_boosting(features, labels, params, day, columns) -> dict:
    """scikit-learn's HistGradientBoostingClassifier on exactly the supervised MLP's training
    users and features, scored like a detector (probability of the anomalous class)."""
    import numpy as np

    from pipelines.evaluate import evaluate
    from pipelines.score import flag, rank_scores
    from pipelines.split import holdout_mask
    from pipelines.train import training_labels
    from sklearn.ensemble import HistGradientBoostingClassifier

    held = holdout_mask(features["user_id"], params["train"]["holdout_fraction"], params["train"]["split_seed"])
    y, _ = training_labels(features.loc[~held, "user_id"], labels, "sklearn_hgb")
    t = time.perf_counter()
    model = HistGradientBoostingClassifier(class_weight="balanced", random_state=0)
    model.fit(features.loc[~held, columns].to_numpy(), y)
    fit_s = time.perf_counter() - t
    s = model.predict_proba(features[columns].to_numpy())[:, 1]
    import pandas as pd

    ranks = rank_scores(s, features["user_id"].to_numpy())
    scores = pd.DataFrame({"user_id": features["user_id"], "score": s, "flagged": flag(s, ranks, params["score"])})
    metrics, _ = evaluate(scores, labels, params["train"])
    return {"fit_s": round(fit_s, 1), **{k: metrics[k] for k in (
        "roc_auc", "pr_auc", "precision_at_k", "recall_at_k", "k", "recall_per_type", "roc_auc_per_type")}}


if __name__ == "__main__":
    sys.exit(main())
