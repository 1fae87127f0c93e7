"""Detector benchmark on feature matrices (contract section 6), the ADBench protocol:
stratified 70/30 split, seeds 0..2, fit without labels on the training part, mean ROC-AUC
and average precision on the test part."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from pipelines.detectors import REGISTRY, make_detector
from pipelines.errors import UserError

SEEDS = (0, 1, 2)


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
    unknown = [d for d in detectors if d not in REGISTRY]
    if unknown:
        raise UserError(f"unknown detector(s) {', '.join(unknown)}; available: {', '.join(sorted(REGISTRY))}")
    columns = [f"x{j}" for j in range(X.shape[1])]
    results: dict[str, Any] = {}
    for name in detectors:
        runs = []
        for seed in SEEDS:
            X_tr, X_te, _, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
            detector = make_detector(name, params.get(name) or {})
            detector.fit(pd.DataFrame(X_tr, columns=columns))
            s = detector.score(pd.DataFrame(X_te, columns=columns))
            runs.append({"seed": seed, "roc_auc": float(roc_auc_score(y_te, s)),
                         "pr_auc": float(average_precision_score(y_te, s))})
        results[name] = {
            "roc_auc": float(np.mean([r["roc_auc"] for r in runs])),
            "pr_auc": float(np.mean([r["pr_auc"] for r in runs])),
            "roc_auc_std": float(np.std([r["roc_auc"] for r in runs])),
            "pr_auc_std": float(np.std([r["pr_auc"] for r in runs])),
            "runs": runs,
        }
    return {"n": int(len(y)), "d": int(X.shape[1]), "anomaly_rate": float(y.mean()), "seeds": list(SEEDS),
            "detectors": results}
