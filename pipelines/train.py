"""Fit the configured detector on the users not held out for evaluation."""
from __future__ import annotations

from typing import Any

import pandas as pd

from pipelines.detectors import Detector, make_detector
from pipelines.errors import UserError
from pipelines.features import feature_columns
from pipelines.split import holdout_mask

DEFAULTS: dict[str, Any] = {"detector": "isolation_forest", "holdout_fraction": 0.3, "split_seed": 0}


def train(features: pd.DataFrame, params: dict[str, Any]) -> tuple[Detector, dict[str, Any]]:
    """Unsupervised: labels never reach this function."""
    p = {**DEFAULTS, **params}
    name = p["detector"]
    detector = make_detector(name, p.get(name) or {})
    held_out = holdout_mask(features["user_id"], p["holdout_fraction"], p["split_seed"])
    training = features.loc[~held_out, feature_columns(features)]
    if len(training) < 2:
        raise UserError(f"only {len(training)} users left for training; need more users or a smaller holdout_fraction")
    detector.fit(training)
    info = {
        "detector": name,
        "params": detector.params,
        "users_total": int(len(features)),
        "users_trained_on": int(len(training)),
        "users_held_out": int(held_out.sum()),
        "features": len(detector.feature_names_),
    }
    return detector, info
