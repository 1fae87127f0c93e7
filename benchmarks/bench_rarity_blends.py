"""Blends of ecdf_tail's and isolation_forest's rarity beyond the ensemble's combiners, on both
halves of issue 7's test, without a combiner of the ensemble for each.

The ensemble `{ecdf_tail: 1, isolation_forest: 1}` is fitted once per ADBench split (the
`pipelines benchmark` protocol: three files, seeds 0..2) and once on the dev simulation
(bench_detectors_sim.py's users, budget and evaluation); each blend is a function of the two
members' tail rarity (EnsembleDetector._member_rarity: -log of the share of training users
scoring at least as high), swapped in for the ensemble's combiner. A blend that passed would
then earn a combiner of its own; the figures here are to decide whether one is worth it.

    python benchmarks/bench_rarity_blends.py [--cache DIR] [--only NAME,NAME]

`--cache` is bench_detectors_sim.py's (the dev simulation's built features, reused). The table
gives ROC-AUC per ADBench file, and on the simulation PR-AUC and the worst abuse type's ROC-AUC
change against the blend `ecdf` (ecdf_tail's rarity alone: ecdf_tail's ranking).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ADBENCH = REPO.parent / "shared" / "datasets" / "adbench"
FILES = ("6_cardio.npz", "38_thyroid.npz", "32_shuttle.npz")
MEMBERS = {"ecdf_tail": 1.0, "isolation_forest": 1.0}


def _gate(q: float, w: float):
    """ecdf_tail's top tail first (rarity above -log q: at most a share q of training users),
    in its own order; everyone else below them, by ecdf + w * forest."""
    tau = -np.log(q)
    return lambda e, f: np.where(e > tau, 1e3 + e, e + w * f)


def _forest_top(q: float, w: float):
    """The forest counts only in its own top tail: ecdf + w * (forest rarity beyond -log q)."""
    tau = -np.log(q)
    return lambda e, f: e + w * np.maximum(f - tau, 0.0)


BLENDS = {
    "ecdf": lambda e, f: e,
    "forest": lambda e, f: f,
    "mean_if25": lambda e, f: e + 0.25 * f,
    "harmonic_if25": lambda e, f: np.logaddexp(e, f + np.log(0.25)),
    "harmonic_if50": lambda e, f: np.logaddexp(e, f + np.log(0.5)),
    "gate_q002_w3": _gate(0.002, 3.0),
    "gate_q01_w3": _gate(0.01, 3.0),
    "gate_q05_w3": _gate(0.05, 3.0),
    "gate_q002_w10": _gate(0.002, 10.0),
    "foresttop_q05_w1": _forest_top(0.05, 1.0),
    "foresttop_q05_w3": _forest_top(0.05, 3.0),
    "foresttop_q10_w3": _forest_top(0.10, 3.0),
    "foresttop_q01_w10": _forest_top(0.01, 10.0),
}


def _with_blend(det, blend):
    """The fitted ensemble scoring by `blend` of its two members' rarity."""
    det._combine = lambda rarity: (blend(rarity[:, 0], rarity[:, 1]), None)
    return det


def adbench(names: list[str]) -> dict[str, list[float]]:
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    from pipelines.benchmark import SEEDS, load_npz
    from pipelines.config import default_params, section
    from pipelines.detectors import get_detector_class, make_detector

    train = section(default_params(), "train")
    train["ensemble"] = {**train["ensemble"], "members": MEMBERS}
    params = get_detector_class("ensemble").params_from_train(train)
    out = {n: [] for n in names}
    for file in FILES:
        X, y = load_npz(str(ADBENCH / file))
        columns = [f"x{j}" for j in range(X.shape[1])]
        per_seed = {n: [] for n in names}
        for seed in SEEDS:  # the same splits as pipelines.benchmark
            X_tr, X_te, _, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
            det = make_detector("ensemble", params).fit(pd.DataFrame(X_tr, columns=columns))
            rarity = det._member_rarity(det._as_matrix(pd.DataFrame(X_te, columns=columns)))
            for n in names:
                per_seed[n].append(roc_auc_score(y_te, BLENDS[n](rarity[:, 0], rarity[:, 1])))
        for n in names:
            out[n].append(float(np.mean(per_seed[n])))
    return out


def simulation(names: list[str], cache: str | None) -> dict[str, dict]:
    """bench_detectors_sim.py's dev simulation (built there, so the users and budget are its own),
    then each blend through score_users and evaluate."""
    import tempfile

    import pandas as pd

    from pipelines import stages
    from pipelines.config import default_params, override
    from pipelines.evaluate import evaluate, read_labels
    from pipelines.score import score_users
    from pipelines.train import train

    with tempfile.TemporaryDirectory() as scratch:
        folder = cache or scratch
        # bench_detectors_sim.py builds (or reuses) the simulation and records its params
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_detectors_sim.py"), "--sim", "dev",
                        "--cache", folder, "--detectors", "ecdf_tail", "--out", f"{scratch}/base.json"],
                       check=True, capture_output=True)
        top_k = json.loads(Path(f"{scratch}/base.json").read_text())["top_k"]
        params = default_params()
        for key, value in {"storage.data": f"{folder}/data", "train.device": "cpu", "score.top_k": top_k,
                           "train.detector": "ensemble", "train.ensemble.members": MEMBERS}.items():
            params = override(params, key, value, source="bench")
        day = params["simulate"]["end_date"]
        features = pd.read_parquet(f"{folder}/data/features/as_of={day}/features.parquet")
        labels = read_labels(f"{folder}/raw/labels.parquet")
        det, _ = train(features, params["train"], labels)
        out = {}
        for n in names:
            scores = score_users(features, _with_blend(det, BLENDS[n]), params["score"], day, explain=False)
            metrics, _ = evaluate(scores, labels, params["train"])
            out[n] = {k: metrics[k] for k in ("pr_auc", "roc_auc", "roc_auc_per_type")}
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", help="bench_detectors_sim.py's --cache for the dev simulation")
    ap.add_argument("--only", help="comma-separated blend names (default: all)")
    ap.add_argument("--out", help="write the figures as JSON")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(BLENDS)
    unknown = [n for n in names if n not in BLENDS]
    if unknown:
        ap.error(f"unknown blend(s) {', '.join(unknown)}; known: {', '.join(BLENDS)}")
    if "ecdf" not in names:
        names.insert(0, "ecdf")  # the simulation's baseline
    ad = adbench(names)
    sim = simulation(names, args.cache)
    base = sim["ecdf"]
    print("| blend | cardio | thyroid | shuttle | mean | dev PR-AUC | dev ROC-AUC | worst type dROC |")
    print("|---" * 8 + "|")
    for n in names:
        r = sim[n]
        drop = {t: r["roc_auc_per_type"][t] - base["roc_auc_per_type"][t] for t in base["roc_auc_per_type"]}
        worst = min(drop, key=drop.get)
        print(f"| {n} | {' | '.join(f'{x:.5f}' for x in ad[n])} | {np.mean(ad[n]):.5f} | {r['pr_auc']:.4f} | "
              f"{r['roc_auc']:.4f} | {drop[worst]:+.4f} ({worst}) |")
    if args.out:
        Path(args.out).write_text(json.dumps({"adbench": ad, "simulation": sim}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
