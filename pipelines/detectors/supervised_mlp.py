"""A supervised MLP for when labels exist: a classifier of anomalous users on the feature
table. Class imbalance is handled by weighting the positive class (n_negative / n_positive,
capped) in the loss; the probabilities are then calibrated (Platt scaling) on the loop's
validation users, which were never trained on, so a score of 0.8 means about 80 %.
Reasons are gradient x input on the logit: the features that pushed this user's score up.
Missing values (NaN) are imputed with the training median by the shared scaler
(pipelines/detectors/_deep.py), which also drops columns constant or empty in training."""
from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.detectors._deep import DEEP_DEFAULTS, DeepTableDetector, mlp
from pipelines.detectors.base import register


@register
class SupervisedMLPDetector(DeepTableDetector):
    name = "supervised_mlp"
    supervised = True
    reasons_kind = "gradient x input on the classifier's logit per feature"
    reason_floor = 0.0
    defaults = {**DEEP_DEFAULTS, "hidden": [64, 32], "dropout": 0.1, "max_pos_weight": 50.0,
                "validation_fraction": 0.2}

    def _network(self, n_inputs: int):
        return mlp([n_inputs, *self.params["hidden"], 1], self.params["dropout"])

    def _batches(self, Z: np.ndarray, y: np.ndarray | None):
        from pipelines.deep.loop import ArrayBatches

        return ArrayBatches(Z, y.reshape(-1, 1))

    def _fit(self, X: np.ndarray, y: np.ndarray | None = None) -> None:
        import torch

        from pipelines.deep.loop import split_rows

        positives = float(y.sum())
        self.pos_weight_ = float(min(self.params["max_pos_weight"], (len(y) - positives) / positives))
        self._loss = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=torch.tensor([self.pos_weight_]))
        super()._fit(X, y)
        _, val = split_rows(len(X), self.params["validation_fraction"], self.params["seed"])
        if len(val) == 0 or y[val].min() == y[val].max():  # too few users to hold some out: use all
            val = np.arange(len(X))
        self.calibration_ = _platt(self._predict(X[val], self._logit), y[val])

    def _row_loss(self, model, tensors):
        x, y = tensors
        return self._loss.to(x.device)(model(x), y).squeeze(1)

    @staticmethod
    def _logit(model, tensors):
        return model(tensors[0]).squeeze(1)

    def _score(self, X: np.ndarray) -> np.ndarray:
        a, b = self.calibration_
        return 1.0 / (1.0 + np.exp(-(a * self._predict(X, self._logit) + b)))

    def _feature_errors(self, model, tensors):
        import torch

        with torch.enable_grad():
            x = tensors[0].detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(model(x).sum(), x)
        return (grad * x).clamp(min=0).detach()

    def fit_report(self) -> dict[str, Any]:
        return {**super().fit_report(), "pos_weight": self.pos_weight_, "calibration": list(self.calibration_)}

    def _save_state(self, directory) -> None:
        super()._save_state(directory)
        np.save(directory / "calibration.npy", np.array([*self.calibration_, self.pos_weight_]))

    def _load_state(self, directory) -> None:
        super()._load_state(directory)
        a, b, self.pos_weight_ = np.load(directory / "calibration.npy").tolist()
        self.calibration_ = (a, b)


def _platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) with P(anomalous) = sigmoid(a * logit + b), fitted by logistic regression."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e4, max_iter=1000).fit(logits.reshape(-1, 1), y.astype(int))
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])
