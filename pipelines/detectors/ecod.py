"""ECOD (Li et al. 2022, "ECOD: Unsupervised Outlier Detection Using Empirical Cumulative
Distribution Functions"), fitted on the training users and applied to new ones.

Per feature, from the training users' empirical CDF: the left tail -log P(X <= x) and the right
tail -log P(X >= x). Summed over the features three ways: every left tail, every right tail, and
each feature's tail on the side its skewness points to (right for a right-skewed feature); the
score is the largest of the three sums (the paper's Algorithm 1). Unlike PyOD's, the
empirical CDF is the training users' only (PyOD's refits it on the scored rows too), so scoring
one user does not depend on who else is scored; among values beyond every training value the
farther one, in robust standard deviations, counts as slightly rarer.

With `group_windows` a signal's 1d/7d/28d/hist windows count once, as their largest term (as
ecdf_tail does). A missing value (NaN) contributes 0 and is never a reason. The reasons are the
terms of the sum that decided the score.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.detectors.base import Detector, Reason, register, signal_groups, strongest_reasons


@register
class EcodDetector(Detector):
    name = "ecod"
    reasons_kind = "ECOD's per-feature tail terms: exactly the terms of the score"
    defaults = {"group_windows": True}

    def _fit(self, X: np.ndarray) -> None:
        from scipy.stats import skew

        with np.errstate(all="ignore"):
            skewness = np.nan_to_num(skew(X, axis=0, nan_policy="omit"), nan=0.0)
        self.skew_sign_ = np.sign(np.asarray(skewness, dtype="float64"))

    def _tails(self, X: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """(percentile of each value among the training users, [left, right, skew-side] terms)."""
        ref = self.reference_
        n = ref.quantiles.shape[0]
        left = np.empty_like(X, dtype="float64")
        right = np.empty_like(X, dtype="float64")
        for j in range(X.shape[1]):
            left[:, j] = np.searchsorted(ref.quantiles[:, j], X[:, j], side="right") / n
            right[:, j] = 1.0 - np.searchsorted(ref.quantiles[:, j], X[:, j], side="left") / n
        floor = 0.5 / n
        distance = (X - ref.median) / ref.scale
        u_left = -np.log(np.maximum(left, floor)) + 1e-3 * np.clip(-distance, 0, 1e3)
        u_right = -np.log(np.maximum(right, floor)) + 1e-3 * np.clip(distance, 0, 1e3)
        s = self.skew_sign_
        # as the paper and PyOD: U_skew = U_l * -sign(skew - 1) + U_r * sign(skew + 1), skew its sign
        u_skew = u_left * -np.sign(s - 1) + u_right * np.sign(s + 1)
        missing = np.isnan(X)
        for u in (u_left, u_right, u_skew):
            u[missing] = 0.0
        percentile = 100.0 * left
        percentile[missing] = np.nan
        return percentile, [u_left, u_right, u_skew]

    def _grouped(self, terms: np.ndarray) -> np.ndarray:
        if not self.params["group_windows"]:
            return terms
        return np.stack([terms[:, cols].max(axis=1) for cols in signal_groups(self.feature_names_)], axis=1)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return np.max([self._grouped(u).sum(axis=1) for u in self._tails(X)[1]], axis=0)

    def _reasons(self, matrix: np.ndarray, top_n: int) -> list[list[Reason]]:
        percentile, tails = self._tails(matrix)
        sums = np.stack([self._grouped(u).sum(axis=1) for u in tails], axis=1)
        deciding = sums.argmax(axis=1)
        terms = np.stack(tails, axis=0)[deciding, np.arange(len(matrix))]  # the deciding sum's terms
        # a term is a reason where the value is at most 5% of training users' (as rarity is elsewhere)
        return strongest_reasons(self.feature_names_, matrix, percentile, terms, top_n)

    def _save_state(self, directory: Path) -> None:
        np.save(directory / "skew_sign.npy", self.skew_sign_)

    def _load_state(self, directory: Path) -> None:
        self.skew_sign_ = np.load(directory / "skew_sign.npy")
