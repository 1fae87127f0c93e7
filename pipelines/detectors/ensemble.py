"""An ensemble of detectors: each member's score is put on one scale, its tail rarity among
the training users' scores (-log of the share of training users scoring at least as high,
growing linearly beyond the highest training score), and the ensemble score combines those
rarities r_j = -log p_j with the weights w_j (normalised to sum 1), as tail shares p_j are
combined into one (`combine`):
- `mean`: sum_j w_j r_j, the weighted geometric mean of the shares (Fisher's method up to a
  constant): every member's view counts in proportion to its weight.
- `harmonic`: log sum_j w_j exp(r_j), the weighted harmonic mean of the shares (Wilson 2019): a
  soft maximum, so a member that finds a user far rarer than the others do mostly decides.
- `max`: max_j (r_j + log w_j), the smallest share divided by its weight (weighted Bonferroni):
  an OR of the tails.
- `arithmetic`: -log sum_j w_j p_j, the weighted arithmetic mean of the shares (as averaging
  ranks): a user is rare only where every member finds it rare, the AND end of the family.
These are -log of the weighted power means of the shares, with powers 0, -1, -inf (its limit,
the weights dividing as in Bonferroni's) and 1: harmonic >= mean >= arithmetic for any rarities.
Reasons merge the members' reasons, each weighted by its member's share of the ensemble score
(for `harmonic` its share of the sum, for `max` the deciding member's, for `mean` and
`arithmetic` w_j r_j over the sum of those).

Members and weights come from params.yaml (`train.ensemble.members`); each member uses its
own section of `train` (train.py passes them as `member_params`). A sequence member (e.g.
sequence_autoencoder) reads the users' event sequences; the ensemble then reads the features
and the sequences together (sequences.TableAndSequences)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.detectors.base import Detector, Reason, base_signal, get_detector_class, make_detector, register
from pipelines.errors import UserError

_POINTS = 2001
COMBINERS = ("mean", "harmonic", "max", "arithmetic")


def _level(grid: np.ndarray, x: np.ndarray) -> np.ndarray:
    """How many of the grid's points lie below each x, interpolated linearly between two points
    (so the rarity keeps the member's own order between them, not ties per grid cell); an x equal
    to a grid value counts the points strictly below it."""
    i = np.searchsorted(grid, x, side="left")
    inside = (i > 0) & (i < len(grid))
    j = np.clip(i, 1, len(grid) - 1)
    lo, hi = grid[j - 1], grid[j]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(hi > lo, (x - lo) / (hi - lo), 1.0)
    between = inside & (x < hi)  # x == grid[i] is on a point: i below it
    return np.where(between, j - 1 + np.clip(frac, 0.0, 1.0), i).astype("float64")


@register
class EnsembleDetector(Detector):
    name = "ensemble"
    reasons_kind = "the members' reasons, weighted by each member's share of the score"
    defaults = {"members": {"ecdf_tail": 1.0, "isolation_forest": 0.25}, "combine": "mean", "member_params": {}}

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
        if self.params["combine"] not in COMBINERS:
            raise UserError(f"ensemble.combine must be one of {', '.join(COMBINERS)}, not {self.params['combine']!r}")
        self.members_ = {n: make_detector(n, (self.params["member_params"] or {}).get(n) or {}) for n in members}
        for name, member in self.members_.items():
            if member.supervised or member.input_kind not in ("table", "sequence"):
                raise UserError(f"ensemble member {name}: only unsupervised table or sequence detectors can be members")
        self.wants_gpu = any(m.wants_gpu for m in self.members_.values())
        # with a sequence member the ensemble reads both (sequences.TableAndSequences)
        self.input_kind = "table+sequence" if any(m.input_kind == "sequence" for m in self.members_.values()) \
            else "table"

    @classmethod
    def reads_sequences_for(cls, train: dict[str, Any]) -> bool:
        members = (train.get(cls.name) or {}).get("members") or cls.defaults["members"]
        return any(get_detector_class(m).input_kind == "sequence" for m in members)

    # The public entry points split X once into (table, sequences); the table goes through
    # Detector's checks (feature names, missing columns, infinite values) and both are passed on
    # as arguments (sequences is None for a table ensemble).
    def fit(self, X, y: Any = None) -> "EnsembleDetector":
        table, sequences = self._split(X)
        super().fit(table, y)  # Detector's checks, feature names and reference; its _fit does nothing here
        self._fit_members(self._as_matrix(table), sequences)
        return self

    def score(self, X) -> np.ndarray:
        matrix, sequences = self._read(X)
        return np.asarray(self._combine(self._member_rarity(matrix, sequences))[0], dtype="float64")

    def reasons(self, X, top_n: int = 3) -> list[list[Reason]]:
        matrix, sequences = self._read(X)
        return self._scored(matrix, sequences, top_n)[1]

    def score_and_reasons(self, X, top_n: int = 3) -> tuple[np.ndarray, list[list[Reason]]]:
        """Each member's `score_and_reasons` once (a sequence member's network runs once): the
        ensemble score and the merged reasons both come from those."""
        matrix, sequences = self._read(X)
        return self._scored(matrix, sequences, top_n)

    def _split(self, X) -> tuple[Any, Any]:
        """(the feature table, the sequence members' input or None)."""
        from pipelines.sequences import TableAndSequences

        if self.input_kind == "table":
            return X, None
        if not isinstance(X, TableAndSequences):
            raise UserError("this ensemble has a sequence member: it reads the users' features and event "
                            "sequences (run the sequences step for the day)")
        if len(X.sequences) != len(X.table):
            raise UserError("the ensemble's features and sequences are not the same users")
        return X.table, X.sequences

    def _read(self, X) -> tuple[np.ndarray, Any]:
        """(the checked feature matrix, the sequences) of a fitted ensemble's input."""
        table, sequences = self._split(X)
        self._check_fitted()
        return self._as_matrix(table), sequences

    def _member_input(self, member: Detector, frame, sequences):
        if member.input_kind != "sequence":
            return frame
        if sequences is None:
            raise UserError("this ensemble has a sequence member: it reads the users' features and event "
                            "sequences (run the sequences step for the day)")
        return sequences

    def _frame(self, matrix: np.ndarray):
        import pandas as pd

        return pd.DataFrame(matrix, columns=self.feature_names_)

    @property
    def weights(self) -> np.ndarray:
        w = np.array([float(self.params["members"][n]) for n in self.members_])
        return w / w.sum()

    def _fit(self, X: np.ndarray) -> None:
        """Nothing: fit fits the members (_fit_members) once Detector.fit has checked the table,
        as only fit has the sequences at hand."""

    def _fit_members(self, matrix: np.ndarray, sequences) -> None:
        frame = self._frame(matrix)
        train_scores = np.column_stack([m.fit(self._member_input(m, frame, sequences))
                                        .score(self._member_input(m, frame, sequences))
                                        for m in self.members_.values()])
        self.quantiles_ = np.quantile(train_scores, np.linspace(0, 1, _POINTS), axis=0)

    def _member_rarity(self, X: np.ndarray, sequences=None) -> np.ndarray:
        """Each member's rarity (a column each) for the rows of the checked matrix X."""
        frame = self._frame(X)
        return self._rarity(np.column_stack([m.score(self._member_input(m, frame, sequences))
                                             for m in self.members_.values()]))

    def _rarity(self, raw: np.ndarray) -> np.ndarray:
        """The members' raw scores (a column each) on one scale: their tail rarity among the training users."""
        rarity = np.empty_like(raw, dtype="float64")
        spread = np.maximum(self.quantiles_[-1] - self.quantiles_[_POINTS // 2], 1e-12)
        for j in range(raw.shape[1]):
            below = _level(self.quantiles_[:, j], raw[:, j]) / _POINTS
            tail = np.maximum(1.0 - below, 0.5 / _POINTS)
            # beyond every training user, rarity keeps growing with the distance (in units of the
            # training scores' upper half-range), so one member's extreme case is not capped
            beyond = np.maximum(raw[:, j] - self.quantiles_[-1, j], 0) / spread[j]
            rarity[:, j] = -np.log(tail) + np.minimum(beyond, 50.0)
        return rarity

    def _scored(self, matrix: np.ndarray, sequences, top_n: int) -> tuple[np.ndarray, list[list[Reason]]]:
        """(score, merged reasons) from one `score_and_reasons` call per member."""
        frame = self._frame(matrix)
        raw, member_reasons = [], []
        for m in self.members_.values():
            member_scores, reasons = m.score_and_reasons(self._member_input(m, frame, sequences), top_n)
            raw.append(np.asarray(member_scores, dtype="float64"))
            member_reasons.append(reasons)
        score, shares = self._combine(self._rarity(np.column_stack(raw)))
        return np.asarray(score, dtype="float64"), self._merge_reasons(shares, member_reasons, top_n)

    # Detector's table-only hooks (a sequence member then asks for the sequences)
    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._combine(self._member_rarity(X))[0]

    def _reasons(self, matrix: np.ndarray, top_n: int) -> list[list[Reason]]:
        return self._scored(matrix, None, top_n)[1]

    def _combine(self, rarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the ensemble score, each member's share of it) from the members' rarities."""
        w = self.weights
        how = self.params["combine"]
        parts = rarity * w
        shares = parts / np.maximum(parts.sum(axis=1, keepdims=True), 1e-12)
        if how == "mean":
            return parts.sum(axis=1), shares
        with np.errstate(divide="ignore"):
            if how == "arithmetic":  # -log sum w exp(-r), from the largest term so nothing underflows
                logged = -rarity + np.log(w)
                top = logged.max(axis=1, keepdims=True)
                return -(top + np.log(np.exp(logged - top).sum(axis=1, keepdims=True)))[:, 0], shares
            logged = rarity + np.log(w)  # a member of weight 0 is -inf: never counts
        top = logged.max(axis=1, keepdims=True)
        if how == "max":
            deciding = (logged == top).astype("float64")
            return top[:, 0], deciding / deciding.sum(axis=1, keepdims=True)
        # harmonic: log-sum-exp, computed from the largest term so nothing overflows
        terms = np.exp(logged - top)
        total = terms.sum(axis=1, keepdims=True)
        return (top + np.log(total))[:, 0], terms / total

    def _merge_reasons(self, shares: np.ndarray, member_reasons: list[list[list[Reason]]],
                       top_n: int) -> list[list[Reason]]:
        """Per row, the members' reasons weighted by each member's share of the score."""
        out = []
        for i in range(len(shares)):
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
