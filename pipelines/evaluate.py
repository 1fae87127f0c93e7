"""How well the scores find the labelled abusers among users held out from training."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from pipelines.config import section
from pipelines.errors import UserError
from pipelines.schema import LABEL_COLUMNS
from pipelines.split import heldout_users

_CURVE_POINTS = 400


def read_labels(uri: str) -> pd.DataFrame:
    """Labels (contract section 2) from CSV or Parquet, local or s3://."""
    from pipelines import io

    with io.local_copy(uri) as path:
        if io.detect_format(str(uri)) == "parquet":
            return check_labels(pd.read_parquet(path))
        return check_labels(pd.read_csv(path, dtype="str", keep_default_na=True))


def check_labels(labels: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in LABEL_COLUMNS[:2] if c not in labels.columns]
    if missing:
        raise UserError(f"labels are missing column(s) {', '.join(missing)}; expected user_id, is_anomaly[, anomaly_type]")
    out = pd.DataFrame({"user_id": labels["user_id"].astype("str").str.strip()})
    flag = pd.to_numeric(labels["is_anomaly"], errors="coerce")
    if flag.isna().any() or not flag.isin([0, 1]).all():
        raise UserError("labels.is_anomaly must be 0 or 1 on every row")
    out["is_anomaly"] = flag.astype("int64")
    types = labels["anomaly_type"] if "anomaly_type" in labels.columns else pd.Series("", index=labels.index)
    out["anomaly_type"] = types.astype("str").where(types.notna(), "").str.strip()
    if out["user_id"].duplicated().any():
        raise UserError("labels have more than one row for some user_id; give one label per user")
    return out


def evaluate(scores: pd.DataFrame, labels: pd.DataFrame, split: dict[str, Any]) -> tuple[dict, dict[str, list[dict]]]:
    """(metrics, plot tables) on the held-out users; k = how many of them the policy flagged."""
    labels = check_labels(labels)
    split = section({"train": split}, "train")
    held_out = heldout_users(scores, split)
    frame = scores.loc[held_out, ["user_id", "score", "flagged"]].merge(labels, on="user_id", how="left")
    unlabelled = int(frame["is_anomaly"].isna().sum())
    frame["is_anomaly"] = frame["is_anomaly"].fillna(0).astype("int64")
    frame["anomaly_type"] = frame["anomaly_type"].fillna("")
    y, s, flagged = frame["is_anomaly"].to_numpy(), frame["score"].to_numpy(), frame["flagged"].to_numpy(bool)
    if y.sum() == 0 or y.sum() == len(y):
        raise UserError("the held-out users need both labelled abusers and normal users to evaluate")

    k = int(flagged.sum())
    hits = int((flagged & (y == 1)).sum())
    metrics: dict[str, Any] = {
        "holdout_users": int(len(frame)),
        "holdout_anomalies": int(y.sum()),
        "holdout_users_without_label": unlabelled,
        "labelled_users_not_scored": int((~labels["user_id"].isin(scores["user_id"])).sum()),
        "roc_auc": float(roc_auc_score(y, s)),
        "pr_auc": float(average_precision_score(y, s)),
        "k": k,
        "precision_at_k": hits / k if k else 0.0,
        "recall_at_k": hits / int(y.sum()),
        "recall_per_type": {},
        "roc_auc_per_type": {},
        "users_per_type": {},
    }
    normal = y == 0
    for kind, group in frame[y == 1].groupby("anomaly_type"):
        name = kind or "unspecified"
        idx = group.index.to_numpy()
        metrics["users_per_type"][name] = int(len(idx))
        metrics["recall_per_type"][name] = float(flagged[idx].mean())
        vs_normal = np.concatenate([idx, np.where(normal)[0]])
        metrics["roc_auc_per_type"][name] = float(roc_auc_score(y[vs_normal], s[vs_normal]))
    return metrics, _plots(y, s)


def _plots(y: np.ndarray, s: np.ndarray) -> dict[str, list[dict]]:
    precision, recall, _ = precision_recall_curve(y, s)
    fpr, tpr, _ = roc_curve(y, s)
    pr_idx = _thin(len(precision))
    roc_idx = _thin(len(fpr))
    edges = np.histogram_bin_edges(s, bins=40)
    normal_counts, _ = np.histogram(s[y == 0], bins=edges)
    abuse_counts, _ = np.histogram(s[y == 1], bins=edges)
    centers = (edges[:-1] + edges[1:]) / 2
    return {
        "precision_recall": [{"recall": float(recall[i]), "precision": float(precision[i])} for i in pr_idx],
        "roc": [{"fpr": float(fpr[i]), "tpr": float(tpr[i])} for i in roc_idx],
        "score_histogram": [
            {"score": float(c), "normal": int(n), "anomalous": int(a)}
            for c, n, a in zip(centers, normal_counts, abuse_counts)
        ],
    }


def _thin(n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, _CURVE_POINTS)).round().astype(int))
