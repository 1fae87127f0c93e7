"""Lexical against semantic review-text similarity (features.review_text.model), as one signal.

    python benchmarks/bench_review_embedding.py [--rewording 0.5] [--set simulate.KEY=VALUE ...]

On the development simulation (params.yaml's simulate section), for every user with a review
text: the highest cosine of any of the user's texts to a text of another account (what
max_review_similarity_other is), searched by brute force over the distinct texts, so without
either search's approximation. Printed for each model: its seconds (embedding and search), the
ROC-AUC of that signal for fake_review_ring members against every other user with a text, the
share of ring members and of everyone else at or above 0.8 (min_similarity) and 0.9
(near_duplicate_threshold), and the cosine of honest texts to their nearest other text (how
crowded the space is: a sample of 2,000).

Twice: with the simulation's rings as they are (members reuse their ring's templates with small
edits), and with `simulate.ring_rewording` at --rewording (members swap hype phrases for others
of the same kind), which a lexical search cannot follow. Simulation-only figures; the detector
figures on the same two simulations come from benchmarks/bench_detectors_sim.py with
`--set simulate.ring_rewording=R --set features.review_text.model=M`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def best_other(X, text: np.ndarray, user: np.ndarray, block: int = 2048) -> np.ndarray:
    """Per review: the highest cosine of its text to a text another account wrote (1.0 when
    another account wrote the same text), by brute force. X: one L2-normalised row per text,
    dense or scipy sparse."""
    T = X.shape[0]
    writers = pd.DataFrame({"t": text, "u": user}).drop_duplicates()
    n_writers = np.bincount(writers["t"], minlength=T)
    owner = np.full(T, -1)
    single = writers[n_writers[writers["t"]] == 1]
    owner[single["t"].to_numpy()] = single["u"].to_numpy()
    best = np.where(n_writers >= 2, 1.0, -1.0)
    for start in range(0, T, block):
        S = X[start:start + block] @ X.T
        S = np.asarray(S.toarray() if hasattr(S, "toarray") else S)
        rows = np.arange(start, min(start + block, T))
        same_writer = (owner[None, :] == owner[rows][:, None]) & (owner[rows][:, None] >= 0)
        S[same_writer] = -1.0  # itself, and the one writer's other texts
        best[rows] = np.maximum(best[rows], S.max(axis=1))
    return best[text]


def nearest(X, rows: np.ndarray) -> np.ndarray:
    S = X[rows] @ X.T
    S = np.asarray(S.toarray() if hasattr(S, "toarray") else S, dtype=np.float64)
    S[np.arange(len(rows)), rows] = -1.0
    return S.max(axis=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rewording", type=float, default=0.5, help="simulate.ring_rewording of the second run")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="simulate.KEY=VALUE")
    args = ap.parse_args()
    import yaml
    from sklearn.metrics import roc_auc_score

    from pipelines.config import load_params
    from pipelines.review_text import _reviews, embed, semantic_embed
    from pipelines.simulate import simulate

    sim = dict(load_params()["simulate"])
    for item in args.sets:
        key, value = item.split("=", 1)
        sim[key.removeprefix("simulate.")] = yaml.safe_load(value)
    end = pd.Timestamp(sim["end_date"], tz="UTC") + pd.Timedelta(days=1)
    for rewording in (0.0, args.rewording):
        events, labels = simulate({**sim, "ring_rewording": rewording})
        ring_users = set(labels.loc[labels["anomaly_type"] == "fake_review_ring", "user_id"])
        table = _reviews(events, end)
        texts, text = np.unique(np.asarray(table.column("text").to_pylist(), dtype=object), return_inverse=True)
        users = np.asarray(table.column("user_id").to_pylist(), dtype=object)
        user = pd.factorize(users)[0]
        honest = np.unique(text[~np.isin(users, list(ring_users))])
        sample = honest[np.random.default_rng(0).permutation(len(honest))[:2000]]
        print(f"\nring_rewording {rewording}: {sim['n_users']:,} users, {len(text):,} reviews with text, "
              f"{len(texts):,} distinct, {len(ring_users)} ring members")
        print(f"{'model':<10} {'seconds':>7} {'ROC-AUC':>8} {'ring>=0.8':>9} {'other>=0.8':>10} "
              f"{'ring>=0.9':>9} {'other>=0.9':>10}  honest text to its nearest: p10/p50/p90")
        for name, fn in (("lexical", embed), ("wordllama", semantic_embed)):
            start = time.perf_counter()
            X = fn(list(texts))
            best = pd.Series(best_other(X, text, user)).groupby(users).max()
            seconds = time.perf_counter() - start
            is_ring = best.index.isin(list(ring_users))
            print(f"{name:<10} {seconds:7.2f} {roc_auc_score(is_ring, best):8.3f} "
                  f"{(best[is_ring] >= 0.8).mean():9.3f} {(best[~is_ring] >= 0.8).mean():10.3f} "
                  f"{(best[is_ring] >= 0.9).mean():9.3f} {(best[~is_ring] >= 0.9).mean():10.3f}  "
                  + "/".join(f"{q:.2f}" for q in np.quantile(nearest(X, sample), [0.1, 0.5, 0.9])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
