"""Every detector (table and sequence) on a simulation, held-out users, figures per abuse type.

Two simulations: `dev` is params.yaml's (the one detectors were tuned on) and `frozen` is
another seed, size and date range that nothing was tuned on; report the frozen figures.
Each detector is fitted on the same users, with its params.yaml section, and measured on the
same held-out users with the same review budget (score.top_k scaled to the simulation's size).
Simulation-only figures: the labels are the simulator's.

    python benchmarks/bench_detectors_sim.py [--sim frozen|dev] [--detectors a,b] [--out FILE] [--cache DIR]
        [--set KEY=VALUE ...] [--variant NAME KEY=VALUE [KEY=VALUE ...]] ...

`--set` changes params for the whole run (before the simulation is built), e.g.
`--set simulate.n_users=3000` for a quick look. `--variant` adds a named configuration, fitted
on the same simulation and features, with its own train.* settings, e.g.

    --variant ens_ae 'train.detector=ensemble' 'train.ensemble.members={ecdf_tail: 1.0, autoencoder: 0.5}'

A VALUE is read as YAML (so JSON too); every key goes through pipelines.config.override and
its validation. With variants and no --detectors, only the variants run. The deep detectors
train on the CPU with their progress bars off (`--set train.device=auto` to use a GPU).
"""
from __future__ import annotations

import argparse
import contextlib
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
    ap.add_argument("--detectors", help="comma-separated (default: every detector)")
    ap.add_argument("--out", help="write the figures as JSON")
    ap.add_argument("--cache", help="build the simulation's features in this folder and reuse them on a later "
                    "run with the same params (keyed on the params, not the code: empty it after changing the simulator or "
                    "the features; default: a temporary folder, built every run)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a params override for the whole run, VALUE read as YAML (repeatable)")
    ap.add_argument("--variant", dest="variants", action="append", nargs="+", default=[],
                    metavar="NAME KEY=VALUE", help="a named configuration: its name, then train.* "
                    "overrides, VALUE read as YAML (repeatable)")
    args = ap.parse_args()
    sets = [_key_value(item) for item in args.sets]
    variants: dict[str, list[tuple[str, object]]] = {}
    for name, *items in args.variants:
        if "=" in name or not items or name in variants:
            ap.error(f"--variant {name}: give a new name, then at least one KEY=VALUE")
        variants[name] = [_key_value(item) for item in items]
        bad = [k for k, _ in variants[name] if not k.startswith("train.")]
        if bad:
            ap.error(f"--variant {name}: only train.* keys can differ between variants, not {', '.join(bad)}")

    from pipelines import stages
    from pipelines.config import default_params, override
    from pipelines.detectors import REGISTRY
    from pipelines.evaluate import evaluate, read_labels
    from pipelines.score import score_users
    from pipelines.train import train

    params = default_params()
    sim = {**params["simulate"], **SIMULATIONS[args.sim]}
    if args.detectors:
        names = args.detectors.split(",")
    elif variants:
        names = []
    else:
        names = sorted(REGISTRY)
    clash = sorted(set(names) & set(variants))
    if clash:
        ap.error(f"--variant {clash[0]}: the name of a detector that runs as well; name the variant otherwise")
    # what runs: (name in the tables, train.detector, train.* overrides)
    runs = [(n, n, []) for n in names] + [(v, None, kv) for v, kv in variants.items()]
    with contextlib.ExitStack() as stack:
        tmp = _workdir(stack, args.cache)
        for key, value in {"storage.data": f"{tmp}/data", "storage.reports": f"{tmp}/reports",
                           "storage.models": f"{tmp}/models", "ingest.source": f"{tmp}/raw/events.parquet",
                           "simulate": sim, "train.device": "cpu",
                           **{f"train.{n}.progress": False for n in sorted(REGISTRY)
                              if "progress" in REGISTRY[n].defaults}}.items():
            params = override(params, key, value, source="bench")
        for key, value in sets:
            params = override(params, key, value, source="--set")
        sim = params["simulate"]
        # the daily budget, scaled from the default 100 flags per 20,000 users
        if "score.top_k" in dict(sets):
            top_k = params["score"]["top_k"]
        else:
            top_k = max(1, round(params["score"]["top_k"] * sim["n_users"] / 20000))
        params = override(params, "score.top_k", top_k, source="bench")
        day = sim["end_date"]
        t0 = time.perf_counter()
        # what the built files depend on: everything but train and score
        stamp = json.dumps({k: v for k, v in params.items() if k not in ("train", "score")}, sort_keys=True,
                           default=str)
        stamp_file = Path(tmp) / "built.json"
        if args.cache and stamp_file.exists() and stamp_file.read_text() == stamp:
            print(f"simulation {args.sim} {sim}: reused from {tmp}; top_k {top_k}", flush=True)
        else:
            stamp_file.unlink(missing_ok=True)
            stages.simulate_stage(params, f"{tmp}/raw/events.parquet", f"{tmp}/raw/labels.parquet")
            stages.ingest_stage(params, day)
            stages.clean_stage(params, day)
            stages.features_stage(params, day)
            stages.sequences_stage(params, day)
            stamp_file.write_text(stamp)
            print(f"simulation {args.sim} {sim}: built in {time.perf_counter() - t0:.0f} s; top_k {top_k}", flush=True)
        import pandas as pd

        features = pd.read_parquet(f"{tmp}/data/features/as_of={day}/features.parquet")
        labels = read_labels(f"{tmp}/raw/labels.parquet")
        # read once, and only if a sequence detector runs
        sequences = stages.sequences_loader(f"{tmp}/data/sequences/as_of={day}/sequences.parquet", day)
        results = {}
        configs = {}
        for name, detector, changes in runs:
            run_params = params if detector is None else override(params, "train.detector", detector, source="bench")
            for key, value in changes:
                run_params = override(run_params, key, value, source=f"--variant {name}")
            configs[name] = _config_of(run_params["train"])
            if changes:
                print(f"{name}: {configs[name]}", flush=True)
            t = time.perf_counter()
            det, info = train(features, run_params["train"], labels, sequences)
            fit_s = time.perf_counter() - t
            scores = score_users(features, det, params["score"], day, explain=False, sequences=sequences)
            metrics, _ = evaluate(scores, labels, run_params["train"])
            results[name] = {"fit_s": round(fit_s, 1), **{k: metrics[k] for k in (
                "roc_auc", "pr_auc", "precision_at_k", "recall_at_k", "k", "recall_per_type", "roc_auc_per_type")},
                "epochs": info.get("fit", {}).get("epochs_run"), "config": configs[name]}
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
        Path(args.out).write_text(json.dumps({"simulation": sim, "top_k": top_k, "set": dict(sets),
                                              "detectors": results}, indent=2, default=str))
    return 0


def _workdir(stack: contextlib.ExitStack, cache: str | None) -> str:
    """The folder the simulation is built in: --cache (kept), else a temporary one."""
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        return str(Path(cache).resolve())
    return stack.enter_context(tempfile.TemporaryDirectory())


def _key_value(item: str) -> tuple[str, object]:
    """'train.ensemble.members={ecdf_tail: 1, autoencoder: 0.5}' -> (key, value read as YAML)."""
    import yaml

    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise SystemExit(f"error: {item!r} is not KEY=VALUE")
    return key.strip(), yaml.safe_load(text)


def _config_of(train: dict) -> dict:
    """The detector and its section (an ensemble's with its members' sections), for the JSON."""
    name = train["detector"]
    out = {"detector": name, name: train.get(name)}
    if name == "ensemble":
        for member in train["ensemble"]["members"]:
            out[member] = train.get(member)
    return out


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
