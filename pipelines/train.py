"""Fit the configured detector on the users not held out for evaluation. Labels reach only a
detector that declares itself supervised; the unsupervised ones never see them."""
from __future__ import annotations

import fnmatch
import hashlib
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import section
from pipelines.detectors import Detector, get_detector_class, make_detector
from pipelines.errors import UserError
from pipelines.features import feature_columns
from pipelines.sequences import model_input
from pipelines.split import heldout_users



def select_features(columns: list[str], exclude: list[str]) -> list[str]:
    """Feature columns minus those matching any glob in `exclude`."""
    kept = [c for c in columns if not any(fnmatch.fnmatchcase(c, pattern) for pattern in exclude)]
    if not kept:
        raise UserError(f"train.exclude_features {exclude} removes every feature; loosen the patterns")
    return kept


def uninformative_columns(frame: pd.DataFrame, columns: list[str]) -> tuple[list[str], list[str]]:
    """(empty, constant): the columns with no value at all (a signal the log lacks) and those
    with a single value among these rows (NaN aside); a detector can learn nothing from either."""
    empty, constant = [], []
    for c in columns:  # a column at a time: no copy of the whole table
        values = frame[c].to_numpy(dtype="float64", na_value=np.nan)
        present = values[~np.isnan(values)]
        if len(present) == 0:
            empty.append(c)
        elif present.min() == present.max():
            constant.append(c)
    return empty, constant


def training_labels(user_ids: pd.Series, labels: pd.DataFrame | None, detector: str) -> tuple[Any, int]:
    """0/1 per training user for a supervised detector; users absent from the labels file
    count as normal (an unreported case is not a known abuser), and how many is reported."""
    if labels is None:
        raise UserError(f"train.detector {detector} is supervised: give the train step --labels "
                        "(user_id, is_anomaly), or pick an unsupervised detector")
    known = labels.drop_duplicates("user_id").set_index("user_id")["is_anomaly"]
    y = user_ids.astype(str).map(known)
    return y.fillna(0).astype(int).to_numpy(), int(y.isna().sum())


def train(features: pd.DataFrame, params: dict[str, Any], labels: pd.DataFrame | None = None,
          sequences: Any = None, held_out: np.ndarray | None = None) -> tuple[Detector, dict[str, Any]]:
    """Fit on the users not held out; `labels` are used only by a supervised detector, and
    `sequences` (EventSequences, or a function returning them) only by a sequence detector.
    `held_out`: split.heldout_users(features, params), when the caller has it already."""
    p = section({"train": params}, "train")  # defaults: params.yaml's, from one schema
    name = p["detector"]
    detector = make_detector(name, get_detector_class(name).params_from_train(p))
    held_out = heldout_users(features, p) if held_out is None else np.asarray(held_out)
    columns = select_features(feature_columns(features), list(p["exclude_features"] or []))
    rows = np.flatnonzero(~held_out)
    sample = p["fit_sample_users"]
    if sample is not None and not detector.supervised and len(rows) > sample:
        # an unsupervised model learns what is normal: a seeded sample of users shows it as well
        # as all of them, at a fraction of the memory and time; labels are rare, so a supervised
        # detector keeps every training user
        rows = np.sort(np.random.default_rng(p["split_seed"]).choice(rows, sample, replace=False))
    training_users = features.iloc[rows]
    if len(training_users) < 2:
        raise UserError(f"only {len(training_users)} users left for training; need more users or a smaller holdout_fraction")
    dropped: dict[str, list[str]] = {}
    if detector.input_kind != "sequence":
        # empty and constant columns among the training users carry nothing to learn (on real
        # view/cart/purchase logs most are: no devices, IPs, logins, refunds or reviews)
        empty, constant = uninformative_columns(training_users, columns)
        if len(empty) + len(constant) == len(columns):
            raise UserError(f"every one of the {len(columns)} features is empty or constant among the "
                            f"{len(training_users)} training users: nothing to learn")
        columns = [c for c in columns if c not in set(empty) | set(constant)]
        dropped = {"dropped_empty_features": empty, "dropped_constant_features": constant}
    training = model_input(detector, training_users, sequences, columns)
    extra: dict[str, Any] = {}
    if detector.supervised:
        y, unlabelled = training_labels(training_users["user_id"], labels, name)
        extra = {"supervised": True, "positives_trained_on": int(y.sum()), "users_without_label": unlabelled}
        detector.fit(training, y)
    else:
        detector.fit(training)
    report = detector.fit_report()
    if report:
        extra["fit"] = report
    # what the model learned from, so a version can be traced to its data
    digest = hashlib.sha256(pd.util.hash_pandas_object(training_users[["user_id", *columns]],
                                                       index=False).to_numpy().tobytes())
    if detector.input_kind != "table":
        (training if detector.input_kind == "sequence" else training.sequences).update_digest(digest)
    info = {
        "detector": name,
        "params": detector.params,
        "users_total": int(len(features)),
        "users_trained_on": int(len(training)),
        "users_available_for_training": int((~held_out).sum()),
        "users_held_out": int(held_out.sum()),
        "features": len(detector.feature_names_),
        **dropped,
        "training_data_sha256": digest.hexdigest(),
        **extra,
    }
    return detector, info

