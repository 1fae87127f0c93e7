"""Autoencoder on the per-user feature table: a network learns to reconstruct normal users
through a narrow bottleneck; a user it reconstructs badly is unlike the users it learned from.
The score is the mean squared reconstruction error over the scaled features, and the reasons
are the features reconstructed worst, so the reasons are the score's own terms.

Training minimises a Huber loss instead (quadratic within `huber_delta` robust standard
deviations, linear beyond): the training users include the abusers, and under squared error
their extreme values would dominate the loss and the network would learn to reconstruct
exactly them.

Missing values (NaN) are imputed with the training median by the shared scaler
(pipelines/detectors/_deep.py), which also drops columns constant or empty in training."""
from __future__ import annotations

from pipelines.detectors._deep import DEEP_DEFAULTS, DeepTableDetector, mlp
from pipelines.detectors.base import register


@register
class AutoencoderDetector(DeepTableDetector):
    name = "autoencoder"
    reasons_kind = "squared reconstruction error per feature: the terms of the score"
    defaults = {**DEEP_DEFAULTS, "hidden": [64, 32], "latent": 8, "dropout": 0.0,
                "huber_delta": 1.0}

    def _network(self, n_inputs: int):
        import torch.nn as nn

        hidden, latent = list(self.params["hidden"]), int(self.params["latent"])
        return nn.Sequential(mlp([n_inputs, *hidden, latent], self.params["dropout"]), nn.SiLU(),
                             mlp([latent, *reversed(hidden), n_inputs], self.params["dropout"]))

    def _feature_errors(self, model, tensors):
        (x,) = tensors[:1]
        return (model(x) - x).pow(2)

    def _row_loss(self, model, tensors):
        import torch.nn.functional as F

        x = tensors[0]
        return F.huber_loss(model(x), x, reduction="none", delta=self.params["huber_delta"]).mean(dim=1)

    def _row_score(self, model, tensors):
        return self._feature_errors(model, tensors).mean(dim=1)
