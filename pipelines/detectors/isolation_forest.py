"""Isolation Forest (Liu et al. 2008): anomalies are the points random splits isolate quickly.

A missing value (NaN: a signal the log lacks for that user) is imputed with the feature's
training median before splitting, so it isolates like a typical user's value.

With `tail_transform` the forest splits on each feature's signed tail rarity instead of its
raw value: -log of the share of training users at least as far out on the value's side (the
per-feature rarity ecdf_tail sums), less log 2 so the median is 0, negative below it. It is monotone in the value, so
it keeps each feature's order while stretching its tails and squeezing its bulk (split points
drawn uniformly between a feature's extremes then fall mostly where users are rare), and it is
the same whatever the feature's units or skew (log_transform changes nothing then)."""
from __future__ import annotations

import numpy as np

from pipelines.detectors.base import Detector, register, signed_log1p


@register
class IsolationForestDetector(Detector):
    name = "isolation_forest"
    reasons_from_tail_rarity = True  # the base's reasons; scoring builds them from arrays
    defaults = {
        "n_estimators": 300,
        "max_samples": 256,
        "max_features": 1.0,
        # signed log1p before splitting; off by default: raw values ranked better on both simulations
        # and on ADBench (README, "Detectors compared")
        "log_transform": False,
        # split on the signed per-feature tail rarity (module docstring); off by default
        "tail_transform": False,
        "random_state": 0,
        "n_jobs": 1,
    }

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        if self.params["tail_transform"]:
            return self._signed_tail(X)
        X = self.reference_.impute(X)  # NaN -> the training median
        return signed_log1p(X) if self.params["log_transform"] else X

    def _signed_tail(self, X: np.ndarray) -> np.ndarray:
        """-log(tail share) - log 2 per value (0 at the median, and for a value so common that
        its tail share is above one half), negative on the low side (at most half of the
        training users at or below it); a missing value is not rare: 0, as the median is."""
        percentile, rarity = self.reference_.rarity(X)
        stretched = np.maximum(rarity - np.log(2.0), 0.0)
        low = percentile <= 50.0  # NaN (missing) compares False
        signed = np.where(low, -stretched, stretched)
        return np.where(np.isnan(X), 0.0, signed)

    def _fit(self, X: np.ndarray) -> None:
        from sklearn.ensemble import IsolationForest  # imported when used: params validation stays cheap

        self.model_ = IsolationForest(
            n_estimators=self.params["n_estimators"],
            max_samples=min(self.params["max_samples"], len(X)),
            max_features=self.params["max_features"],
            random_state=self.params["random_state"],
            n_jobs=self.params["n_jobs"],
        ).fit(self._prepare(X))

    def _score(self, X: np.ndarray) -> np.ndarray:
        return -self.model_.score_samples(self._prepare(X))
