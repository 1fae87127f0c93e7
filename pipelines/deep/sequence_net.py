"""A GRU sequence autoencoder over tokenised events (pipelines.sequences).

The encoder reads a user's events (packed, so padding is never seen) into a small latent code;
the decoder rebuilds the events one at a time from that code and the events before each one
(teacher forcing). Each event's loss is the negative log-likelihood of its tokens, so an
event that does not follow from the account's own past, in the order normal accounts do
things, costs much: a login from a new device right after a run of failed logins, then
expensive purchases within seconds.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def embedding_width(cardinality: int) -> int:
    return 2 if cardinality <= 2 else min(8, max(4, cardinality // 2))


class SequenceAutoencoder(nn.Module):
    def __init__(self, cardinality: list[int], hidden: int, latent: int):
        super().__init__()
        self.cardinality = list(cardinality)
        self.embeddings = nn.ModuleList(nn.Embedding(c, embedding_width(c)) for c in cardinality)
        width = sum(embedding_width(c) for c in cardinality)
        self.start = nn.Parameter(torch.zeros(width))
        self.encoder = nn.GRU(width, hidden, batch_first=True)
        self.to_latent = nn.Linear(hidden, latent)
        self.from_latent = nn.Linear(latent, hidden)
        self.decoder = nn.GRU(width + latent, hidden, batch_first=True)
        self.heads = nn.ModuleList(nn.Linear(hidden, c) for c in cardinality)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, steps, fields) negative log-likelihood of each token; 0 on padding."""
        batch, steps, _ = tokens.shape
        embedded = torch.cat([emb(tokens[..., k]) for k, emb in enumerate(self.embeddings)], dim=-1)
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, last = self.encoder(packed)
        z = self.to_latent(last[-1])
        previous = torch.cat([self.start.expand(batch, 1, -1), embedded[:, :-1]], dim=1)
        decoded, _ = self.decoder(torch.cat([previous, z.unsqueeze(1).expand(batch, steps, -1)], dim=-1),
                                  torch.tanh(self.from_latent(z)).unsqueeze(0).contiguous())
        decoded = decoded.float()
        nll = torch.stack([F.cross_entropy(head(decoded).reshape(batch * steps, -1).float(),
                                           tokens[..., k].reshape(-1), reduction="none").view(batch, steps)
                           for k, head in enumerate(self.heads)], dim=-1)
        return nll * padding_mask(lengths, steps).unsqueeze(-1)


def padding_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def event_losses(model: SequenceAutoencoder, tensors) -> torch.Tensor:
    """(batch, steps) loss per event (its tokens' summed NLL); 0 on padding."""
    tokens, lengths = tensors
    return model(tokens, lengths).sum(dim=-1)


def mean_event_loss(model, tensors) -> torch.Tensor:
    _, lengths = tensors
    return event_losses(model, tensors).sum(dim=1) / lengths.clamp(min=1)


def worst_events_mean(model, tensors, k: int) -> torch.Tensor:
    """The mean loss of each user's k worst events (all of them when fewer): a takeover is a
    handful of events at the end of a long ordinary history, which a mean over all would dilute."""
    losses = event_losses(model, tensors)
    _, lengths = tensors
    steps = losses.shape[1]
    masked = losses.masked_fill(~padding_mask(lengths, steps), float("-inf"))
    top = masked.topk(min(k, steps), dim=1).values
    valid = torch.isfinite(top)
    return top.where(valid, torch.zeros_like(top)).sum(dim=1) / valid.sum(dim=1).clamp(min=1)


class SequenceBatches:
    """Users of an EventSequences as (tokens, lengths) tensors, padded per batch only."""

    def __init__(self, sequences):
        self.sequences = sequences

    def __len__(self) -> int:
        return len(self.sequences)

    def get(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, lengths = self.sequences.padded(rows)
        return torch.from_numpy(tokens.astype(np.int64)), torch.from_numpy(lengths.astype(np.int64))
