"""Variational autoencoder (Kingma & Welling 2014) on the per-user feature table. The score is
the negative ELBO, with the encoder's mean as the code: the reconstruction term (Gaussian,
unit variance, on the scaled features) plus the KL divergence of the code from the prior.
Reasons are the features whose reconstruction term is largest. Missing values (NaN) are
imputed with the training median by the shared scaler (pipelines/detectors/_deep.py), which
also drops columns constant or empty in training."""
from __future__ import annotations

from pipelines.detectors._deep import DEEP_DEFAULTS, DeepTableDetector, mlp
from pipelines.detectors.base import register


def _network(n_inputs: int, hidden: list[int], latent: int, dropout: float):
    import torch
    import torch.nn as nn

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = mlp([n_inputs, *hidden], dropout)
            self.mu = nn.Linear(hidden[-1], latent)
            self.logvar = nn.Linear(hidden[-1], latent)
            self.decoder = mlp([latent, *reversed(hidden), n_inputs], dropout)

        def forward(self, x, sample: bool):
            h = nn.functional.silu(self.encoder(x))
            mu, logvar = self.mu(h), self.logvar(h).clamp(-10, 10)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
            return self.decoder(z), mu, logvar

    return VAE()


@register
class VAEDetector(DeepTableDetector):
    name = "vae"
    reasons_kind = "reconstruction term per feature of the negative ELBO"
    defaults = {**DEEP_DEFAULTS, "hidden": [64, 32], "latent": 8, "dropout": 0.0, "beta": 1.0}

    def _network(self, n_inputs: int):
        return _network(n_inputs, list(self.params["hidden"]), int(self.params["latent"]), self.params["dropout"])

    def _neg_elbo(self, model, x, sample: bool):
        recon, mu, logvar = model(x, sample)
        reconstruction = 0.5 * (recon - x).pow(2).sum(dim=1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
        return reconstruction + self.params["beta"] * kl

    def _row_loss(self, model, tensors):
        # training samples the code (the reparameterisation trick); validation and scoring
        # run in eval mode, where the code is the mean, so scores are deterministic
        return self._neg_elbo(model, tensors[0], sample=model.training)

    def _feature_errors(self, model, tensors):
        x = tensors[0]
        recon, _, _ = model(x, False)
        return (recon - x).pow(2)
