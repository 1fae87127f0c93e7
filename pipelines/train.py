"""Fit the configured detector on the users not held out for evaluation."""
from __future__ import annotations

import fnmatch
import hashlib
from typing import Any

import pandas as pd

from pipelines.config import section
from pipelines.detectors import Detector, make_detector
from pipelines.errors import UserError
from pipelines.features import feature_columns
from pipelines.split import holdout_mask



def select_features(columns: list[str], exclude: list[str]) -> list[str]:
    """Feature columns minus those matching any glob in `exclude`."""
    kept = [c for c in columns if not any(fnmatch.fnmatchcase(c, pattern) for pattern in exclude)]
    if not kept:
        raise UserError(f"train.exclude_features {exclude} removes every feature; loosen the patterns")
    return kept


def train(features: pd.DataFrame, params: dict[str, Any]) -> tuple[Detector, dict[str, Any]]:
    """Unsupervised: labels never reach this function."""
    p = section({"train": params}, "train")  # defaults: params.yaml's, from one schema
    name = p["detector"]
    detector = make_detector(name, p.get(name) or {})
    held_out = holdout_mask(features["user_id"], p["holdout_fraction"], p["split_seed"])
    columns = select_features(feature_columns(features), list(p["exclude_features"] or []))
    training = features.loc[~held_out, columns]
    if len(training) < 2:
        raise UserError(f"only {len(training)} users left for training; need more users or a smaller holdout_fraction")
    detector.fit(training)
    # what the model learned from, so a version can be traced to its data
    digest = hashlib.sha256(pd.util.hash_pandas_object(features.loc[~held_out, ["user_id", *columns]],
                                                       index=False).to_numpy().tobytes())
    info = {
        "detector": name,
        "params": detector.params,
        "users_total": int(len(features)),
        "users_trained_on": int(len(training)),
        "users_held_out": int(held_out.sum()),
        "features": len(detector.feature_names_),
        "training_data_sha256": digest.hexdigest(),
    }
    return detector, info
