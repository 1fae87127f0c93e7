"""What every detector over event sequences shares (input_kind "sequence"): it reads
`pipelines.sequences.EventSequences` instead of the feature table, refuses sequences whose
vocabulary differs from its training data, and its reasons are events, not features.

A subclass gives `_fit_sequences`, `_event_losses` (per user, the loss of each of its events,
higher = less expected) and `_score_from_losses` (a user's score from its events' losses). The
score and the reasons are both read off the same per-event losses, so scoring with reasons
runs the network once (`score_and_reasons`). The percentile of a reason is the event's loss
among the training users' events.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pipelines.detectors.base import Detector, FeatureReference, Reason
from pipelines.errors import UserError

REASON_PERCENTILE = 95.0  # an event is a reason when at most 5% of training events cost as much
_REFERENCE_EVENTS = 200_000


class SequenceDetector(Detector):
    input_kind: ClassVar[str] = "sequence"
    reasons_kind: ClassVar[str] = "the events reconstructed worst (the terms of the score)"

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.vocabulary_: dict[str, Any] | None = None

    # -- what a subclass gives ------------------------------------------------------------
    def _fit_sequences(self, sequences) -> None:
        raise NotImplementedError

    def _event_losses(self, sequences) -> list[np.ndarray]:
        raise NotImplementedError

    def _score_from_losses(self, per_user: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    # the table entry points of Detector do not apply
    def _fit(self, X: np.ndarray) -> None:
        raise UserError(f"detector {self.name} reads event sequences, not the feature table")

    def _score(self, X: np.ndarray) -> np.ndarray:
        raise UserError(f"detector {self.name} reads event sequences, not the feature table")

    # -- the surface ----------------------------------------------------------------------
    def fit(self, X, y: Any = None) -> "SequenceDetector":
        from pipelines.sequences import TOKEN_FIELDS

        sequences = self._sequences(X)
        if len(sequences) < 2:
            raise UserError(f"detector {self.name} needs at least 2 users to learn from, got {len(sequences)}")
        self.vocabulary_ = dict(sequences.vocabulary)
        self.feature_names_ = list(TOKEN_FIELDS)
        self._fit_sequences(sequences)
        losses = np.concatenate(self._event_losses(sequences))
        if len(losses) > _REFERENCE_EVENTS:
            losses = np.random.default_rng(0).choice(losses, _REFERENCE_EVENTS, replace=False)
        self.reference_ = FeatureReference.fit(losses.reshape(-1, 1))
        return self

    def score(self, X) -> np.ndarray:
        self._check_fitted()
        return np.asarray(self._score_from_losses(self._event_losses(self._checked(X))), dtype="float64")

    def reasons(self, X, top_n: int = 3) -> list[list[Reason]]:
        """Per user, its least expected events (one per kind of event), worst first."""
        self._check_fitted()
        sequences = self._checked(X)
        return self._reasons_from_losses(sequences, self._event_losses(sequences), top_n)

    def score_and_reasons(self, X, top_n: int = 3) -> tuple[np.ndarray, list[list[Reason]]]:
        """One pass of the network for both: they are the same per-event losses."""
        self._check_fitted()
        sequences = self._checked(X)
        per_user = self._event_losses(sequences)
        return (np.asarray(self._score_from_losses(per_user), dtype="float64"),
                self._reasons_from_losses(sequences, per_user, top_n))

    def _reasons_from_losses(self, sequences, per_user: list[np.ndarray], top_n: int) -> list[list[Reason]]:
        from pipelines.sequences import EVENT_TYPES, FLAG_FIELDS

        if not per_user:
            return []
        # one lookup for every event of every user, then split back per user
        every, _ = self.reference_.percentiles(np.concatenate(per_user).reshape(-1, 1))
        percentiles = np.split(every[:, 0], np.cumsum([len(x) for x in per_user])[:-1])
        out = []
        for row, (losses, percentile) in enumerate(zip(per_user, percentiles)):
            start = sequences.starts[row]
            total = float(losses.sum()) or 1.0
            seen: set[tuple] = set()
            parts: list[Reason] = []
            for step in np.argsort(-losses, kind="stable"):
                if percentile[step] < REASON_PERCENTILE or len(parts) >= top_n:
                    break
                tokens = sequences.tokens[start + step]
                kind = EVENT_TYPES[int(tokens[0])]
                flags = tuple(f for k, f in enumerate(FLAG_FIELDS) if tokens[3 + k])
                if (kind, flags) in seen:
                    continue
                seen.add((kind, flags))
                when = pd.Timestamp(int(sequences.times[start + step]), unit="us", tz="UTC")
                parts.append(Reason(kind, float(losses[step]), float(percentile[step]), float(losses[step]) / total,
                                    kind="event", context=f"{when:%Y-%m-%d %H:%M:%S}", flags=flags))
            out.append(parts)
        return out

    # -- internals ------------------------------------------------------------------------
    def _sequences(self, X):
        from pipelines.sequences import EventSequences

        if not isinstance(X, EventSequences):
            raise UserError(f"detector {self.name} reads event sequences (the sequences step), "
                            f"not {type(X).__name__}")
        return X

    def _checked(self, X):
        from pipelines.sequences import check_vocabulary

        sequences = self._sequences(X)
        check_vocabulary(self.vocabulary_ or {}, sequences.vocabulary, f"detector {self.name}")
        return sequences
