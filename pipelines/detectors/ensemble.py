"""An ensemble of detectors: each member's score is put on one scale, its tail rarity among
the training users' scores (-log of the share of training users scoring at least as high,
growing linearly beyond the highest training score), and the ensemble score is the weighted
mean of those. Reasons merge the members' reasons,
each weighted by its member's share of the ensemble score.

Members and weights come from params.yaml (`train.ensemble.members`); each member uses its
own section of `train` (train.py passes them as `member_params`). A sequence member (e.g.
sequence_autoencoder) reads the users' event sequences; the ensemble then reads the features
and the sequences together (sequences.TableAndSequences)."""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.detectors.base import Detector, Reason, base_signal, get_detector_class, make_detector, register
from pipelines.errors import UserError

_POINTS = 2001


@register
class EnsembleDetector(Detector):
    name = "ensemble"
    reasons_kind = "the members' reasons, weighted by each member's share of the score"
    defaults = {"members": {"ecdf_tail": 1.0, "isolation_forest": 0.25}, "member_params": {}}

    @classmethod
    def params_from_train(cls, train: dict[str, Any]) -> dict[str, Any]:
        """Its own section, and each member's the way that member would read it alone."""
        params = super().params_from_train(train)
        members = params.get("members") or cls.defaults["members"]
        params["member_params"] = {m: get_detector_class(m).params_from_train(train) for m in members}
        return params

    @classmethod
    def wants_gpu_for(cls, train: dict[str, Any]) -> bool:
        """When any member wants one (what an instance sets `wants_gpu` to in __init__)."""
        members = (train.get(cls.name) or {}).get("members") or cls.defaults["members"]
        return any(get_detector_class(m).wants_gpu for m in members)

    def __init__(self, **params: Any):
        super().__init__(**params)
        members = self.params["members"]
        if not isinstance(members, dict) or not members:
            raise UserError("ensemble.members must map detector names to weights, e.g. {ecdf_tail: 1.0}")
        for name, weight in members.items():
            if name == self.name:
                raise UserError("an ensemble cannot contain itself")
            if not isinstance(weight, (int, float)) or weight < 0:
                raise UserError(f"ensemble.members.{name}: the weight must be a number >= 0, not {weight!r}")
        if sum(members.values()) <= 0:
            raise UserError("ensemble.members: at least one weight must be above 0")
        self.members_ = {n: make_detector(n, (self.params["member_params"] or {}).get(n) or {}) for n in members}
        for name, member in self.members_.items():
            if member.supervised or member.input_kind not in ("table", "sequence"):
                raise UserError(f"ensemble member {name}: only unsupervised table or sequence detectors can be members")
        self.wants_gpu = any(m.wants_gpu for m in self.members_.values())
        # with a sequence member the ensemble reads both (sequences.TableAndSequences)
        self.input_kind = "table+sequence" if any(m.input_kind == "sequence" for m in self.members_.values()) \
            else "table"
        self._sequences = None  # the sequence members' input during one fit/score/reasons call

    @classmethod
    def reads_sequences_for(cls, train: dict[str, Any]) -> bool:
        members = (train.get(cls.name) or {}).get("members") or cls.defaults["members"]
        return any(get_detector_class(m).input_kind == "sequence" for m in members)

    # the table part goes through Detector's checks; the sequence members read the rest
    def fit(self, X, y: Any = None) -> "EnsembleDetector":
        with self._reading(X) as table:
            return super().fit(table, y)

    def score(self, X) -> np.ndarray:
        with self._reading(X) as table:
            return super().score(table)

    def reasons(self, X, top_n: int = 3) -> list[list[Reason]]:
        with self._reading(X) as table:
            return super().reasons(table, top_n)

    @contextlib.contextmanager
    def _reading(self, X):
        from pipelines.sequences import TableAndSequences

        if self.input_kind == "table":
            yield X
            return
        if not isinstance(X, TableAndSequences):
            raise UserError("this ensemble has a sequence member: it reads the users' features and event "
                            "sequences (run the sequences step for the day)")
        if len(X.sequences) != len(X.table):
            raise UserError("the ensemble's features and sequences are not the same users")
        self._sequences = X.sequences
        try:
            yield X.table
        finally:
            self._sequences = None

    def _member_input(self, member: Detector, frame):
        return self._sequences if member.input_kind == "sequence" else frame

    @property
    def weights(self) -> np.ndarray:
        w = np.array([float(self.params["members"][n]) for n in self.members_])
        return w / w.sum()

    def _fit(self, X: np.ndarray) -> None:
        import pandas as pd

        frame = pd.DataFrame(X, columns=self.feature_names_)
        train_scores = np.column_stack([m.fit(self._member_input(m, frame)).score(self._member_input(m, frame))
                                        for m in self.members_.values()])
        self.quantiles_ = np.quantile(train_scores, np.linspace(0, 1, _POINTS), axis=0)

    def _member_rarity(self, X: np.ndarray) -> np.ndarray:
        import pandas as pd

        frame = pd.DataFrame(X, columns=self.feature_names_)
        raw = np.column_stack([m.score(self._member_input(m, frame)) for m in self.members_.values()])
        rarity = np.empty_like(raw)
        spread = np.maximum(self.quantiles_[-1] - self.quantiles_[_POINTS // 2], 1e-12)
        for j in range(raw.shape[1]):
            below = np.searchsorted(self.quantiles_[:, j], raw[:, j], side="left") / _POINTS
            tail = np.maximum(1.0 - below, 0.5 / _POINTS)
            # beyond every training user, rarity keeps growing with the distance (in units of the
            # training scores' upper half-range), so one member's extreme case is not capped
            beyond = np.maximum(raw[:, j] - self.quantiles_[-1, j], 0) / spread[j]
            rarity[:, j] = -np.log(tail) + np.minimum(beyond, 50.0)
        return rarity

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._member_rarity(X) @ self.weights

    def _reasons(self, matrix: np.ndarray, top_n: int) -> list[list[Reason]]:
        import pandas as pd

        frame = pd.DataFrame(matrix, columns=self.feature_names_)
        parts = self._member_rarity(matrix) * self.weights
        shares = parts / np.maximum(parts.sum(axis=1, keepdims=True), 1e-12)
        member_reasons = [m.reasons(self._member_input(m, frame), top_n) for m in self.members_.values()]
        out = []
        for i in range(len(matrix)):
            # a feature counts once whichever members name it; an event is its own reason
            merged: dict[tuple, Reason] = {}
            weight: dict[tuple, float] = {}
            for j, reasons in enumerate(member_reasons):
                for r in reasons[i]:
                    key = (r.kind, r.feature, r.context)
                    merged.setdefault(key, r)
                    weight[key] = weight.get(key, 0.0) + shares[i, j] * r.contribution
            seen: set[tuple] = set()
            picked = []
            for key in sorted(weight, key=lambda k: (-weight[k], k)):
                signal = (key[0], base_signal(key[1]) if key[0] == "feature" else key)
                if signal in seen or len(picked) >= top_n:
                    continue
                seen.add(signal)
                picked.append(key)
            total = sum(weight[k] for k in picked) or 1.0
            out.append([dataclasses.replace(merged[k], contribution=weight[k] / total) for k in picked])
        return out

    def _save_state(self, directory: Path) -> None:
        np.save(directory / "score_quantiles.npy", self.quantiles_)
        for name, member in self.members_.items():
            member.save(directory / "members" / name)

    def _load_state(self, directory: Path) -> None:
        self.quantiles_ = np.load(directory / "score_quantiles.npy")
        for name in list(self.members_):
            loaded = Detector.load(directory / "members" / name)
            if loaded.input_kind == "table" and loaded.feature_names_ != self.feature_names_:
                raise UserError(f"{directory}: member {name} was trained on other features; retrain the ensemble")
            self.members_[name] = loaded
