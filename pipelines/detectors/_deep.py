"""What every deep table detector shares: scaling fitted on the training users and saved with
the model, the one training loop of pipelines.deep.loop, safe model files, and reasons from
the network's own per-feature errors. Missing values (NaN) are imputed by the scaler with the
training center (the median, under the default robust_log scaling); columns constant or empty
among the training users are dropped by it and reported as dropped_constant_features.

A subclass gives `_network(n_inputs)` and `_row_loss(model, tensors)` (and `_row_score` when
the score is not the training loss). torch is imported inside methods only: the registry
can read a deep detector's name and defaults without loading torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipelines.detectors.base import REASON_RARITY, Detector, Reason, base_signal, robust_scale, signed_log1p
from pipelines.errors import UserError

# every deep detector's knobs: the shared loop's (pipelines.deep.loop.LoopConfig) and the input scaling
DEEP_DEFAULTS: dict[str, Any] = {
    "epochs": 40,
    "batch_size": 256,
    "learning_rate": 1e-3,
    "weight_decay": 1e-5,
    "lr_schedule": "plateau",
    "patience": 5,
    "validation_fraction": 0.1,
    "seed": 0,
    "device": "auto",
    "progress": True,
    "cpu_threads": 1,  # torch threads when training on a CPU; null = torch's default (every core)
    "scaling": "robust_log",  # robust_log | standard (see TableScaler)
    "clip": 8.0,
}


class TableScaler:
    """Inputs on one scale, fitted on the training users: `robust_log` is signed log1p, then
    (x - median) / robust scale (heavy-tailed counts and money); `standard` is (x - mean) / std
    (features that are already on comparable scales). Clipped to +-clip. Columns constant or
    empty (all NaN) among the training users are dropped (a network can learn nothing from
    them) and reported. A missing value (NaN) is imputed with the training center, 0 after
    scaling: for `robust_log` the training median, for `standard` the mean."""

    MODES = ("robust_log", "standard")

    def __init__(self, keep: np.ndarray, center: np.ndarray, scale: np.ndarray, clip: float, mode: str):
        self.keep, self.center, self.scale, self.clip, self.mode = keep, center, scale, float(clip), mode

    @classmethod
    def fit(cls, X: np.ndarray, clip: float, mode: str = "robust_log") -> "TableScaler":
        if mode not in cls.MODES:
            raise UserError(f"scaling must be one of {', '.join(cls.MODES)}, not {mode!r}")
        # signed_log1p keeps order, so a column is constant after it exactly when before it
        # (fmax/fmin skip NaN: an all-NaN column compares NaN > NaN, False, and is dropped)
        keep = np.flatnonzero(np.fmax.reduce(X, axis=0) > np.fmin.reduce(X, axis=0))
        if len(keep) == 0:
            raise UserError("every feature is constant among the training users: nothing to learn")
        center, scale = np.empty(len(keep)), np.empty(len(keep))
        for k, j in enumerate(keep):  # a column at a time: no copy of the whole table
            column = signed_log1p(X[:, j]) if mode == "robust_log" else X[:, j]
            column = column[~np.isnan(column)]  # the values present (a kept column has two at least)
            if mode == "robust_log":
                center[k] = np.median(column)
                scale[k] = robust_scale(column[:, None], center[k:k + 1])[0]
            else:
                center[k], scale[k] = column.mean(), column.std()
        return cls(keep, center, scale, clip, mode)

    def transform(self, X: np.ndarray, rows: int = 65536) -> np.ndarray:
        """float32, computed a block of rows at a time (the float64 intermediates stay small)."""
        out = np.empty((len(X), len(self.keep)), dtype=np.float32)
        for start in range(0, len(X), rows):
            L = X[start:start + rows, self.keep]
            Z = ((signed_log1p(L) if self.mode == "robust_log" else L) - self.center) / self.scale
            # a missing value sits at the training center: 0 after scaling
            out[start:start + rows] = np.nan_to_num(np.clip(Z, -self.clip, self.clip), nan=0.0)
        return out

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {"keep": self.keep, "center": self.center, "scale": self.scale, "clip": np.array(self.clip),
                "mode": np.array(self.mode)}

    @classmethod
    def from_arrays(cls, a) -> "TableScaler":
        return cls(a["keep"], a["center"], a["scale"], float(a["clip"]), str(a["mode"]))


class DeepTableDetector(Detector):
    """A torch network on the per-user feature table."""

    input_kind: ClassVar[str] = "table"
    wants_gpu: ClassVar[bool] = True
    reasons_kind: ClassVar[str] = "reconstruction error per feature"
    reason_floor: ClassVar[float] = 1.0  # a feature reconstructed worse than one robust sd

    # -- what a subclass gives ------------------------------------------------------------
    def _network(self, n_inputs: int):
        raise NotImplementedError

    def _row_loss(self, model, tensors):
        raise NotImplementedError

    def _row_score(self, model, tensors):
        return self._row_loss(model, tensors)

    def _feature_errors(self, model, tensors):
        """(batch, features) error per input feature, for reasons; None: no per-feature view."""
        return None

    # -- fit and score --------------------------------------------------------------------
    def _fit(self, X: np.ndarray, y: np.ndarray | None = None) -> None:
        from pipelines.deep import loop

        self.scaler_ = TableScaler.fit(X, self.params["clip"], self.params["scaling"])
        Z = self.scaler_.transform(X)
        model, self.history_ = loop.fit(lambda: self._network(Z.shape[1]), self._row_loss, self._batches(Z, y),
                                        loop.LoopConfig.from_params(self.params), label=self.name)
        self.model_ = model

    def _batches(self, Z: np.ndarray, y: np.ndarray | None):
        from pipelines.deep.loop import ArrayBatches

        return ArrayBatches(Z)

    def _predict(self, X: np.ndarray, fn) -> np.ndarray:
        from pipelines.deep import loop

        # scoring may run where training did not (a CPU worker): any device will do
        return loop.predict(self.model_, fn, loop.ArrayBatches(self.scaler_.transform(X)), device="auto",
                            threads=self.params["cpu_threads"])

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._predict(X, self._row_score)

    @property
    def dropped_features(self) -> list[str]:
        kept = set(self.scaler_.keep.tolist())
        return [f for j, f in enumerate(self.feature_names_) if j not in kept]

    def fit_report(self) -> dict[str, Any]:
        return {"dropped_constant_features": self.dropped_features, "epochs_run": len(self.history_),
                "best_val_loss": min(h["val_loss"] for h in self.history_), "history": self.history_}

    # -- reasons from the network ---------------------------------------------------------
    def _reasons(self, matrix: np.ndarray, top_n: int) -> list[list[Reason]]:
        if type(self)._feature_errors is DeepTableDetector._feature_errors:
            return super()._reasons(matrix, top_n)
        errors = self._predict(matrix, self._feature_errors)
        percentile, rarity = self.reference_.rarity(matrix)
        kept = self.scaler_.keep
        base = [base_signal(self.feature_names_[j]) for j in kept]
        totals = errors.sum(axis=1)
        order = np.argsort(-errors, axis=1)
        out = []
        for i in range(len(matrix)):
            seen: set[str] = set()
            parts: list[Reason] = []
            for k in order[i]:
                if errors[i, k] <= self.reason_floor or len(parts) >= top_n:
                    break
                j = kept[k]
                # an ordinary value that the network reconstructs badly (because another input
                # is extreme) is part of the score but tells a reviewer nothing: not a reason
                if base[k] in seen or rarity[i, j] < REASON_RARITY:
                    continue
                seen.add(base[k])
                parts.append(Reason(self.feature_names_[j], float(matrix[i, j]), float(percentile[i, j]),
                                    float(errors[i, k] / totals[i]) if totals[i] > 0 else 0.0))
            out.append(parts)
        return out

    # -- model files ----------------------------------------------------------------------
    def _save_state(self, directory: Path) -> None:
        from pipelines.deep.files import save_network

        np.savez(directory / "scaler.npz", **self.scaler_.as_arrays())
        save_network(self.model_, directory, n_inputs=int(len(self.scaler_.keep)), history=self.history_)

    def _load_state(self, directory: Path) -> None:
        from pipelines.deep.files import load_network, network_meta

        meta = network_meta(directory)
        with np.load(directory / "scaler.npz") as a:
            self.scaler_ = TableScaler.from_arrays(a)
        if len(self.scaler_.keep) != meta["n_inputs"] or self.scaler_.keep.max(initial=-1) >= len(self.feature_names_):
            raise UserError(f"{directory}: the scaler does not match the feature list in meta.json; retrain")
        self.history_ = meta.get("history", [])
        self.model_ = load_network(self._network(meta["n_inputs"]), directory, meta)


def mlp(sizes: list[int], dropout: float = 0.0):
    """Linear layers with SiLU between them (none after the last)."""
    import torch.nn as nn

    layers: list = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
