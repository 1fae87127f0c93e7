"""Empirical-CDF tail rarity, in the spirit of ECOD (Li et al. 2022): how rare is each of the
user's values among the training users, summed over the user's rarest few signals.

Each feature contributes -log(tail probability) from the training quantiles, so a value
shared by many users (zero refunds, or a gap as long as the window for one-event users) is
never rare however extreme it looks. Windows of one signal (n_view_1d, n_view_7d, ...) count
once, as their rarest, so a signal does not outvote others by being measured three times.
The top signals are exactly the reasons `explain` prints: the score and its reasons agree.

A missing value (NaN: a signal the log lacks for that user) is not rare: it contributes 0 and
is never a reason; the training quantiles are those of the values present.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.detectors.base import Detector, register, signal_groups


@register
class EcdfTailDetector(Detector):
    name = "ecdf_tail"
    reasons_kind = "tail rarity per feature: exactly the terms of the score"
    reasons_from_tail_rarity = True  # the base's reasons; scoring builds them from arrays
    defaults = {
        "top_signals": 5,  # score = sum of -log(tail probability) over the rarest signals
        "group_windows": True,
    }

    def _fit(self, X: np.ndarray) -> None:
        self.model_ = None  # everything it needs is the training quantiles in reference_

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._score_given_rarity(X, self.reference_.rarity(X)[1])

    def _score_given_rarity(self, X: np.ndarray, rarity: np.ndarray) -> np.ndarray:
        if self.params["group_windows"]:
            rarity = np.stack([rarity[:, cols].max(axis=1) for cols in signal_groups(self.feature_names_)], axis=1)
        k = max(1, min(int(self.params["top_signals"]), rarity.shape[1]))
        return -np.partition(-rarity, k - 1, axis=1)[:, :k].sum(axis=1)

    def _save_state(self, directory: Path) -> None:
        pass  # the base class saves reference_, which is the whole model

    def _load_state(self, directory: Path) -> None:
        self.model_ = None
