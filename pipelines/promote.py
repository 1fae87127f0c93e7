"""The promotion gate: a newly trained model (the challenger) replaces the champion only if it
is not worse on the same day's held-out users.

With labels (both abusers and normal users among the held-out users) the rule is the
configured metric: challenger >= champion - tolerance. Without labels the gate checks what it
can: the challenger's scores are finite and not constant, the share of held-out users its
policy would flag stays within `max_flag_rate`, and it ranks the held-out users much as the
champion does (Spearman >= `min_rank_agreement`). Every decision records both models' figures.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

import numpy as np
import pandas as pd

from pipelines.config import section
from pipelines.errors import UserError
from pipelines.split import heldout_users


def model_figures(detector, features: pd.DataFrame, labels: pd.DataFrame | None, train_params: dict[str, Any],
                  score_params: dict[str, Any], sequences: Any = None,
                  held: np.ndarray | None = None) -> tuple[dict[str, Any], np.ndarray | None]:
    """(figures, held-out scores) of one model on one day's features. A model that cannot
    score these features (columns it was trained on are missing) gets {"error": ...}.
    `held`: split.heldout_users(features, train_params), when the caller has it already."""
    from pipelines.score import batched_scores, flag, rank_scores

    held = heldout_users(features, train_params) if held is None else np.asarray(held)
    try:
        scores = batched_scores(detector, features, sequences, 
                                int(section({"score": score_params}, "score")["batch_users"]))
    except UserError as exc:
        return {"error": str(exc)}, None
    finite = np.isfinite(scores)
    ranks = rank_scores(scores, features["user_id"].to_numpy())
    flagged = flag(np.where(finite, scores, -np.inf), ranks, score_params)
    held_scores = scores[held]
    figures: dict[str, Any] = {
        "users": int(len(scores)),
        "heldout_users": int(held.sum()),
        "finite": bool(finite.all()),
        "constant": bool(finite.any() and np.ptp(scores[finite]) == 0),
        "flag_rate": float(flagged[held].mean()) if held.any() else 0.0,
    }
    if labels is not None and figures["finite"]:
        from pipelines.evaluate import evaluate  # scikit-learn: seconds to import, only for labels

        frame = pd.DataFrame({"user_id": features["user_id"].to_numpy(), "score": scores, "flagged": flagged})
        try:
            metrics, _ = evaluate(frame, labels, train_params)
        except UserError as exc:  # e.g. no abusers among the held-out users
            figures["labels"] = f"not used: {exc}"
        else:
            figures.update({k: metrics[k] for k in ("roc_auc", "pr_auc", "precision_at_k", "recall_at_k", "k")})
    return figures, held_scores


def figures_key(features_path: str, labels_path: str | None, params: dict[str, Any],
                sequences_path: str | None = None) -> str:
    """A digest of everything model_figures depends on besides the model: the bytes of the day's
    features, labels and (when there) sequences files, and the train and score sections (the
    holdout and the flagging policy). Train records it beside the figures it measured, so the
    gate can take them as they are instead of scoring every user again.

    The files' bytes, not their size and modification time: another file of the same size put
    in place with its times kept (cp -p, rsync -t, an unpacked archive) would pass for the one
    train measured. Hashing costs little next to scoring: at a million users, 0.08 s for the
    108 MB of features, 0.12 s with their labels and sequences (5M events) on the 2-core
    development machine; on S3 it is a download of each file."""
    from pipelines import io

    parts = {"features": io.sha256(features_path), "labels": io.sha256(labels_path) if labels_path else None,
             "sequences": io.sha256(sequences_path) if sequences_path and io.exists(sequences_path) else None,
             "train": section(params, "train"), "score": section(params, "score")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def heldout_scores(detector, features: pd.DataFrame, train_params: dict[str, Any], score_params: dict[str, Any],
                   sequences: Any = None) -> np.ndarray | None:
    """The model's scores of the held-out users alone (what rank agreement compares), or None
    when it cannot score these features."""
    from pipelines.score import batched_scores

    held = heldout_users(features, train_params)
    try:
        return batched_scores(detector, features.loc[np.asarray(held)].reset_index(drop=True), sequences,
                              int(section({"score": score_params}, "score")["batch_users"]))
    except UserError:
        return None


def rank_agreement(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Spearman correlation of two models' scores on the same users."""
    if a is None or b is None or len(a) < 3 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(pd.Series(a).rank().corr(pd.Series(b).rank()))


def decide(candidate: str, cand: dict[str, Any], champion: str | None, champ: dict[str, Any] | None,
           agreement: float | None, params: dict[str, Any]) -> tuple[bool, str]:
    """(promote?, why) for a challenger against the champion, both measured on the same users."""
    if "error" in cand:
        return False, f"the challenger cannot score the day's features: {cand['error']}"
    if not cand["finite"]:
        return False, "the challenger's scores contain NaN or infinite values"
    if cand["constant"]:
        return False, "the challenger gives every user the same score"
    if champion is None:
        return True, "no champion yet"
    if candidate == champion:
        return False, "the challenger is already the champion (same model version)"
    if champ is None or "error" in champ:
        reason = champ["error"] if champ else "not measured"
        return True, f"the champion cannot score the day's features ({reason})"
    metric, tolerance = params["metric"], float(params["tolerance"])
    if metric in cand and metric in champ:
        ok = cand[metric] >= champ[metric] - tolerance
        verdict = "not worse than" if ok else "worse than"
        return ok, (f"labelled: challenger {metric} {cand[metric]:.4f} is {verdict} champion "
                    f"{champ[metric]:.4f} - tolerance {tolerance:g}")
    problems = []
    if cand["flag_rate"] > params["max_flag_rate"]:
        problems.append(f"flag rate {cand['flag_rate']:.4f} above max_flag_rate {params['max_flag_rate']:g}")
    if agreement is None or agreement < params["min_rank_agreement"]:
        shown = "n/a" if agreement is None else f"{agreement:.3f}"
        problems.append(f"rank agreement with the champion {shown} below min_rank_agreement "
                        f"{params['min_rank_agreement']:g}")
    if problems:
        return False, "unlabelled: " + "; ".join(problems)
    return True, (f"unlabelled: flag rate {cand['flag_rate']:.4f} within bounds, rank agreement "
                  f"{agreement:.3f} with the champion")


def gate(registry, candidate: str, features: pd.DataFrame | Callable[[], pd.DataFrame], labels: pd.DataFrame | None,
         as_of: str, params: dict[str, Any], force: bool = False, sequences: Any = None,
         candidate_figures: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure challenger and champion on the same day, decide, and record the decision (and the
    new champion when it promoted) in the registry, under the registry's lock.

    `candidate_figures`: the challenger's figures on these very features, as train measured them
    (see figures_key); then the challenger scores only the held-out users, and only when there is
    a champion to compare with. `features` may be a function returning them, called only when
    some model has to score them."""
    train_p, score_p, promote_p = section(params, "train"), section(params, "score"), section(params, "promote")
    day_features = _once(features)
    challenger = registry.load(candidate)
    if candidate_figures is None:
        cand, cand_scores = model_figures(challenger, day_features(), labels, train_p, score_p, sequences)
    else:
        cand, cand_scores = candidate_figures, None
    with registry.lock():
        champion = registry.champion_version(required=False)
        champ = champ_scores = None
        if champion is not None and champion != candidate:
            try:
                champion_model = registry.load(champion)
            except UserError as exc:
                champ = {"error": str(exc)}
            else:
                champ, champ_scores = model_figures(champion_model, day_features(), labels, train_p, score_p, sequences)
                if candidate_figures is not None and "error" not in cand:
                    cand_scores = heldout_scores(challenger, day_features(), train_p, score_p, sequences)
        agreement = rank_agreement(cand_scores, champ_scores)
        promoted, reason = decide(candidate, cand, champion, champ, agreement, promote_p)
        decision = {
            "as_of": as_of,
            "candidate": candidate,
            "champion_before": champion,
            "candidate_figures": cand,
            "candidate_figures_from": "train" if candidate_figures is not None else "gate",
            "champion_figures": champ,
            "rank_agreement": agreement,
            "rule": {k: promote_p[k] for k in ("metric", "tolerance", "max_flag_rate", "min_rank_agreement")},
            "gate_promoted": promoted,
            "gate_reason": reason,
            "forced": bool(force and not promoted),
            "promoted": bool(promoted or force),
            "reason": reason if promoted or not force else f"forced (the gate said: {reason})",
        }
        decision = registry.record(decision)
        decision["champion_after"] = registry.champion_version(required=False)
    return decision


def _once(features: pd.DataFrame | Callable[[], pd.DataFrame]) -> Callable[[], pd.DataFrame]:
    if isinstance(features, pd.DataFrame):
        return lambda: features
    kept: list[pd.DataFrame] = []

    def load() -> pd.DataFrame:
        if not kept:
            kept.append(features())
        return kept[0]

    return load
