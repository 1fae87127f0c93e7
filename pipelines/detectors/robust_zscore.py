"""Per-feature robust z-scores: how many robust standard deviations (median, MAD) a user is
from the typical user on their most deviant features. Transparent and hard to fool by scale.

A missing value (NaN) is imputed with the feature's training median: its z-score is 0, it adds
nothing to the score. The median and scale are computed over the values present."""
from __future__ import annotations

import numpy as np

from pipelines.detectors.base import Detector, register, robust_scale, signal_groups, signed_log1p


@register
class RobustZScoreDetector(Detector):
    name = "robust_zscore"
    reasons_from_tail_rarity = True  # the base's reasons; scoring builds them from arrays
    defaults = {
        "top_features": 5,  # score = root mean square of the user's largest |z|
        "clip": 20.0,  # one absurd feature must not outweigh everything else
        "log_transform": True,
        "group_windows": True,  # a signal's 1d/7d/28d windows count once, as their largest |z|
    }

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        X = self.reference_.impute(X)  # NaN -> the training median (z = 0)
        return signed_log1p(X) if self.params["log_transform"] else X

    def _fit(self, X: np.ndarray) -> None:
        prepared = self._prepare(X)
        median = np.median(prepared, axis=0)
        self.model_ = {"median": median, "scale": robust_scale(prepared, median)}

    def _score(self, X: np.ndarray) -> np.ndarray:
        z = np.abs(self._prepare(X) - self.model_["median"]) / self.model_["scale"]
        z = np.minimum(z, self.params["clip"])
        if self.params["group_windows"]:
            z = np.stack([z[:, cols].max(axis=1) for cols in signal_groups(self.feature_names_)], axis=1)
        k = max(1, min(int(self.params["top_features"]), z.shape[1]))
        top = -np.partition(-z, k - 1, axis=1)[:, :k]
        return np.sqrt((top**2).mean(axis=1))
