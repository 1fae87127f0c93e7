"""Detector benchmark on feature matrices (contract section 6), the ADBench protocol:
stratified 70/30 split, seeds 0..2, fit without labels on the training part, mean ROC-AUC
and average precision on the test part.

PyOD's own detectors can run beside ours in the same process and on the same splits, named
`pyod:IForest`, `pyod:ECOD`, `pyod:AutoEncoder`, `pyod:DeepSVDD` (their defaults). A
supervised detector of ours is fitted with the training part's labels, and marked so: its
figures answer another question than the unsupervised ones.

`python -m pipelines.benchmark RESULT.json[=LABEL] ...` puts several `--out` files side by side
(PyOD's, which are slow, from one run; ours from others) and says, for each of our detectors,
whether it meets issue 7's test for the default: at least the best PyOD ROC-AUC on each file,
and a mean ROC-AUC above every PyOD detector's."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from pipelines.detectors import REGISTRY, get_detector_class, make_detector
from pipelines.config import section
from pipelines.errors import UserError

SEEDS = (0, 1, 2)
PYOD = ("pyod:IForest", "pyod:ECOD", "pyod:AutoEncoder", "pyod:DeepSVDD")


class _PyOD:
    """A PyOD model on the same (DataFrame in, scores out) surface as ours."""

    supervised = False

    def __init__(self, name: str, seed: int):
        kind = name.split(":", 1)[1]
        if kind == "IForest":
            from pyod.models.iforest import IForest

            self.make = lambda d: IForest(random_state=seed)
        elif kind == "ECOD":
            from pyod.models.ecod import ECOD

            self.make = lambda d: ECOD()
        elif kind == "AutoEncoder":
            from pyod.models.auto_encoder import AutoEncoder

            self.make = lambda d: AutoEncoder(random_state=seed, verbose=0)
        elif kind == "DeepSVDD":
            from pyod.models.deep_svdd import DeepSVDD

            self.make = lambda d: DeepSVDD(n_features=d, random_state=seed, verbose=0)
        else:
            raise UserError(f"unknown PyOD detector {name!r}; known: {', '.join(PYOD)}")

    def fit(self, X: pd.DataFrame) -> "_PyOD":
        self.model = self.make(X.shape[1]).fit(X.to_numpy())
        return self

    def score(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.decision_function(X.to_numpy()), dtype="float64")


def load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    if not Path(path).exists():
        raise UserError(f"{path}: file not found")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from exc
    missing = [k for k in ("X", "y") if k not in data.files]
    if missing:
        raise UserError(f"{path}: the .npz needs arrays X and y; missing {', '.join(missing)}")
    X, y = np.asarray(data["X"], dtype="float64"), np.asarray(data["y"]).astype("int64").ravel()
    if X.ndim != 2 or len(X) != len(y):
        raise UserError(f"{path}: X must be n x d and y length n; got X {X.shape}, y {y.shape}")
    if not set(np.unique(y)) <= {0, 1} or y.sum() == 0:
        raise UserError(f"{path}: y must be 0/1 with at least one anomaly")
    if not np.isfinite(X).all():
        raise UserError(f"{path}: X has missing or infinite values")
    return X, y


def benchmark(X: np.ndarray, y: np.ndarray, detectors: list[str], params: dict[str, Any] | None = None) -> dict:
    params = params or {}
    unknown = [d for d in detectors if d not in REGISTRY and d not in PYOD]
    if unknown:
        raise UserError(f"unknown detector(s) {', '.join(unknown)}; available: {', '.join([*sorted(REGISTRY), *PYOD])}")
    columns = [f"x{j}" for j in range(X.shape[1])]
    results: dict[str, Any] = {}
    for name in detectors:
        runs = []
        for seed in SEEDS:
            X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
            # each of ours with its own section of train, as training reads it (an ensemble's members too)
            detector = _PyOD(name, seed) if name in PYOD else \
                make_detector(name, get_detector_class(name).params_from_train(section({"train": params}, "train")))
            if detector.supervised:
                detector.fit(pd.DataFrame(X_tr, columns=columns), y_tr)
            else:
                detector.fit(pd.DataFrame(X_tr, columns=columns))
            s = detector.score(pd.DataFrame(X_te, columns=columns))
            runs.append({"seed": seed, "roc_auc": float(roc_auc_score(y_te, s)),
                         "pr_auc": float(average_precision_score(y_te, s))})
        results[name] = {
            "supervised": bool(detector.supervised),
            "roc_auc": float(np.mean([r["roc_auc"] for r in runs])),
            "pr_auc": float(np.mean([r["pr_auc"] for r in runs])),
            "roc_auc_std": float(np.std([r["roc_auc"] for r in runs])),
            "pr_auc_std": float(np.std([r["pr_auc"] for r in runs])),
            "runs": runs,
        }
    return {"n": int(len(y)), "d": int(X.shape[1]), "anomaly_rate": float(y.mean()), "seeds": list(SEEDS),
            "detectors": results}


def merge_results(results: list[tuple[dict, str]]) -> dict[str, dict[str, dict]]:
    """file -> detector -> figures, from `benchmark` outputs (`--out` JSON). A non-empty label
    is appended to the names of that output's detectors (`ensemble[if25]`), so runs of one
    detector with different params sit side by side."""
    merged: dict[str, dict[str, dict]] = {}
    for result, label in results:
        table = merged.setdefault(result.get("dataset", "?"), {})
        for name, figures in result["detectors"].items():
            table[f"{name}[{label}]" if label and not name.startswith("pyod:") else name] = figures
    return merged


def criterion(merged: dict[str, dict[str, dict]], name: str) -> dict[str, Any]:
    """Issue 7's test for a default detector: ROC-AUC at least the best PyOD detector's on each
    file, and a mean ROC-AUC above every PyOD detector's mean; incomplete (not met) when it or a
    PyOD detector has no figures for one of the files."""
    pyod = sorted({d for table in merged.values() for d in table if d.startswith("pyod:")})
    if not pyod:
        return {"detector": name, "met": False, "why": "no PyOD figures beside it"}
    files = list(merged)  # every file given: a detector not run on one has not met the test
    missing = [f"{d} on {Path(f).stem}" for f in files for d in [name, *pyod] if d not in merged[f]]
    if missing:
        return {"detector": name, "met": False, "why": f"incomplete: no figures for {', '.join(missing)}"}
    per_file = {}
    for f in files:
        best = max(pyod, key=lambda d: merged[f][d]["roc_auc"])
        per_file[f] = {"roc_auc": merged[f][name]["roc_auc"], "best_pyod": best,
                       "best_pyod_roc_auc": merged[f][best]["roc_auc"],
                       "reached": merged[f][name]["roc_auc"] >= merged[f][best]["roc_auc"]}
    mean = float(np.mean([merged[f][name]["roc_auc"] for f in files]))
    pyod_means = {d: float(np.mean([merged[f][d]["roc_auc"] for f in files])) for d in pyod}
    above = all(mean > m for m in pyod_means.values())
    return {"detector": name, "files": per_file, "mean_roc_auc": mean, "pyod_mean_roc_auc": pyod_means,
            "mean_above_every_pyod": above, "met": above and all(v["reached"] for v in per_file.values())}


def format_table(merged: dict[str, dict[str, dict]]) -> str:
    """ROC-AUC / AP per file and their means, ours first, as a markdown table."""
    names = sorted({d for t in merged.values() for d in t}, key=lambda d: (d.startswith("pyod:"), d))
    files = list(merged)
    lines = ["| detector | " + " | ".join(Path(f).stem for f in files) + " | mean |",
             "|---" * (len(files) + 2) + "|"]
    for name in names:
        cells, rocs, aps = [], [], []
        for f in files:
            r = merged[f].get(name)
            cells.append(f"{r['roc_auc']:.4f} / {r['pr_auc']:.3f}" if r else "not run")
            if r:
                rocs.append(r["roc_auc"])
                aps.append(r["pr_auc"])
        mean = f"{np.mean(rocs):.4f} / {np.mean(aps):.3f}" if len(rocs) == len(files) else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """python -m pipelines.benchmark RESULT.json[=LABEL] ... : the table of several `benchmark
    --out` files (PyOD's from one run, ours from another) and, for each of our detectors,
    whether it meets the default-detector test of issue 7 on every file given."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m pipelines.benchmark", description=main.__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", metavar="RESULT.json[=LABEL]")
    args = ap.parse_args(argv)
    loaded = []
    for item in args.results:
        path, _, label = item.partition("=")
        try:
            loaded.append((json.loads(Path(path).read_text()), label))
        except (OSError, ValueError) as exc:
            ap.error(f"{path}: not a readable benchmark --out file ({exc})")
    merged = merge_results(loaded)
    print(format_table(merged))
    print()
    ours = sorted({d for t in merged.values() for d in t if not d.startswith("pyod:")})
    for name in ours:
        c = criterion(merged, name)
        if "files" not in c:
            print(f"{name}: {c['why']}")
            continue
        files = ", ".join(f"{Path(f).stem} {v['roc_auc']:.5f} vs {v['best_pyod']} {v['best_pyod_roc_auc']:.5f}"
                          f"{'' if v['reached'] else ' (below)'}" for f, v in c["files"].items())
        best_mean = max(c["pyod_mean_roc_auc"].items(), key=lambda kv: kv[1])
        print(f"{name}: {'MET' if c['met'] else 'not met'}; {files}; mean {c['mean_roc_auc']:.5f} vs best PyOD mean "
              f"{best_mean[0]} {best_mean[1]:.5f}{'' if c['mean_above_every_pyod'] else ' (not above)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
