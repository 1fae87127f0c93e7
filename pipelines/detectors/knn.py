"""k-nearest-neighbour distance (Ramaswamy et al. 2000; Angiulli and Pizzuti 2002): a user far
from every one of their k closest training users is anomalous, whatever each feature says alone.

It sees what per-feature tails cannot: a user between two clusters of ordinary users, with each
value common on its own. Distances are between robust z-scores (each feature less its training
median, over base.robust_scale's spread), so no feature's units decide. They are not clipped:
on ADBench (k 5, 256 neighbours) a clip at 10 took thyroid's ROC-AUC from 0.991 to 0.925; and
training percentiles in place of z-scores were below 0.5 on all three files (k 10, 20,000
neighbours): they squeeze the tails the anomalies are in.

The neighbours are a seeded sample of at most `max_samples` training users, 256 by default as
the isolation forest's trees are: shuttle's ROC-AUC is 0.991 with 256 and 0.867 with 2,000 (k 20),
likely as its anomalies (7% of the training users, in clusters) are each other's neighbours in
a big sample. The score is the mean distance to the k nearest (`aggregate: mean`) or the
distance to the k-th (`kth`). A training user scored against a sample holding itself has one
neighbour at distance 0; that lowers some training users' scores a little against new ones',
not new users' order.

A missing value (NaN) is imputed with the feature's training median (z 0). The reasons are the
base class's per-feature tail rarity: a proxy, not this detector's attribution (a user between
clusters may have no rare feature at all, and then no reason).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.detectors.base import Detector, register
from pipelines.errors import UserError

_AGGREGATES = ("mean", "kth")
_BLOCK = 50_000  # rows scored at once: the neighbour search's memory is (block, k)


@register
class KnnDetector(Detector):
    name = "knn"
    reasons_from_tail_rarity = True  # the base's reasons, its score not redefined (base.Detector)
    defaults = {
        "k": 20,
        "aggregate": "mean",  # mean | kth
        "max_samples": 256,  # neighbours: a seeded sample of at most this many training users
        "random_state": 0,
    }

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["aggregate"] not in _AGGREGATES:
            raise UserError(f"knn.aggregate must be one of {', '.join(_AGGREGATES)}, not {self.params['aggregate']!r}")
        for key in ("k", "max_samples"):
            value = self.params[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"knn.{key} must be a whole number >= 1, not {value!r}")

    def _embed(self, X: np.ndarray) -> np.ndarray:
        ref = self.reference_
        return (ref.impute(X) - ref.median) / ref.scale

    def _fit(self, X: np.ndarray) -> None:
        n = self.params["max_samples"]
        rows = np.sort(np.random.default_rng(self.params["random_state"]).choice(len(X), n, replace=False)) \
            if len(X) > n else np.arange(len(X))
        self.sample_ = np.ascontiguousarray(self._embed(X[rows]))

    def _score(self, X: np.ndarray) -> np.ndarray:
        from sklearn.neighbors import NearestNeighbors  # imported when used: params validation stays cheap

        k = min(self.params["k"], len(self.sample_))
        index = NearestNeighbors(n_neighbors=k).fit(self.sample_)
        out = np.empty(len(X))
        for start in range(0, len(X), _BLOCK):
            distances, _ = index.kneighbors(self._embed(X[start:start + _BLOCK]))
            out[start:start + _BLOCK] = distances.mean(axis=1) if self.params["aggregate"] == "mean" \
                else distances[:, -1]
        return out

    def _save_state(self, directory: Path) -> None:
        np.save(directory / "neighbours.npy", self.sample_)

    def _load_state(self, directory: Path) -> None:
        self.sample_ = np.load(directory / "neighbours.npy")
