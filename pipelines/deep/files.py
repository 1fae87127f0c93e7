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


def save_network(model: torch.nn.Module, directory: Path, **meta) -> None:
    """weights.pt and network.json (format version, checksum and the detector's own `meta`)."""
    import json

    sha = save_weights(model, directory / "weights.pt")
    (directory / "network.json").write_text(json.dumps({
        "format_version": FORMAT_VERSION, "weights": "weights.pt", "weights_sha256": sha, **meta,
    }, indent=2, sort_keys=True) + "\n")


def network_meta(directory: Path) -> dict:
    """network.json, once its format version is one this code reads."""
    import json

    path = directory / "network.json"
    if not path.exists():
        raise UserError(f"{directory}: network.json missing; retrain or restore the model folder")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{directory}: model file format {meta.get('format_version')} is not {FORMAT_VERSION}, "
                        "the one this version reads; retrain the model")
    return meta


def load_network(model: torch.nn.Module, directory: Path, meta: dict) -> torch.nn.Module:
    return load_weights(model, directory / meta["weights"], meta["weights_sha256"])
