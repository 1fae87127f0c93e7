"""Detector benchmark on feature matrices (contract section 6), the ADBench protocol:
stratified 70/30 split, seeds 0..2, fit without labels on the training part, mean ROC-AUC
and average precision on the test part.

PyOD's own detectors can run beside ours in the same process and on the same splits, named
`pyod:IForest`, `pyod:ECOD`, `pyod:AutoEncoder`, `pyod:DeepSVDD` (their defaults). A
supervised detector of ours is fitted with the training part's labels, and marked so: its
figures answer another question than the unsupervised ones."""
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
