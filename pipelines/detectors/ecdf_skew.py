"""ecdf_tail with ECOD's skewness prior (Li et al. 2022): a feature's tail on the side its
skewness points to (the long tail: high refund ratios, many events per session) counts in
full, the tail on the other side `skew_penalty` less (in units of -log tail probability, so
0.25 treats it as e^0.25 = 1.28 times as common). ECOD keeps only the skewed side; here the
other side still counts, as on the simulation short gaps between events (the short side of a
right-skewed feature) are what gives scraping bots away.

Otherwise ecdf_tail exactly (pipelines/detectors/ecdf_tail.py): per signal the rarest window,
the score the sum over the rarest `top_signals` signals; with `skew_penalty: 0` the scores are
ecdf_tail's. The skewness of each feature is measured on the training users' values present;
a feature with no skew (symmetric or constant) has no penalty on either side. A missing value
(NaN) contributes 0, as in ecdf_tail. The reasons are the terms of the score (the penalised
rarity), so a value on the short side needs to be rarer to be named.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.detectors.base import Reason, register, strongest_reasons
from pipelines.detectors.ecdf_tail import EcdfTailDetector
from pipelines.errors import UserError


@register
class EcdfSkewDetector(EcdfTailDetector):
    name = "ecdf_skew"
    reasons_kind = "tail rarity per feature, less skew_penalty on the side against the skew: exactly the terms of the score"
    defaults = {**EcdfTailDetector.defaults, "skew_penalty": 0.25}

    def __init__(self, **params):
        super().__init__(**params)
        penalty = self.params["skew_penalty"]
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not 0 <= penalty < float("inf"):
            raise UserError(f"ecdf_skew.skew_penalty must be a number >= 0, not {penalty!r}")

    def _fit(self, X: np.ndarray) -> None:
        from scipy.stats import skew

        super()._fit(X)
        with np.errstate(all="ignore"):
            skewness = np.nan_to_num(np.asarray(skew(X, axis=0, nan_policy="omit"), dtype="float64"), nan=0.0)
        self.skew_sign_ = np.sign(skewness)

    def _penalised(self, X: np.ndarray, rarity: np.ndarray) -> np.ndarray:
        """rarity less the penalty where the value is on the side its feature's skew points away from."""
        median, sign = self.reference_.median, self.skew_sign_
        against = ((X < median) & (sign > 0)) | ((X > median) & (sign < 0))  # NaN compares False
        return rarity - float(self.params["skew_penalty"]) * against

    def _score_given_rarity(self, X: np.ndarray, rarity: np.ndarray) -> np.ndarray:
        return super()._score_given_rarity(X, self._penalised(X, rarity))

    def _reasons(self, matrix: np.ndarray, top_n: int) -> list[list[Reason]]:
        percentile, rarity = self.reference_.rarity(matrix)
        return strongest_reasons(self.feature_names_, matrix, percentile, self._penalised(matrix, rarity), top_n)

    def _save_state(self, directory: Path) -> None:
        np.save(directory / "skew_sign.npy", self.skew_sign_)

    def _load_state(self, directory: Path) -> None:
        super()._load_state(directory)
        self.skew_sign_ = np.load(directory / "skew_sign.npy")
