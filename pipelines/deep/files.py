"""Model files for torch networks: a state dict written with torch.save and read back with
`weights_only=True` (tensors only, never arbitrary pickled objects), its SHA-256 kept in the
model's metadata and checked before loading."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from pipelines.errors import UserError

FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model: torch.nn.Module, path: Path) -> str:
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    return sha256_file(path)


def load_weights(model: torch.nn.Module, path: Path, expected_sha256: str) -> torch.nn.Module:
    if not path.exists():
        raise UserError(f"{path}: the model's weights are missing; retrain or restore the model folder")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise UserError(f"{path}: checksum mismatch (expected {expected_sha256[:12]}, found {actual[:12]}): "
                        "the weights changed after training; retrain or restore the model folder")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{path}: the weights do not fit the network described in its metadata "
                        f"({str(exc).splitlines()[0]})") from None
    return model.eval()
