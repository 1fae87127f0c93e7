"""One training loop for every deep detector, as PyOD's deep base class has one: seeded
shuffled batches, a validation split, early stopping on the validation loss, a learning-rate
schedule, bf16 autocast on CUDA, and a progress bar with the loss per epoch.

A detector supplies the network, a per-row loss and its data as `Batches`, a view that turns
row indices into tensors on demand, so nothing padded or scaled is materialised for every user
at once on the device.
"""
from __future__ import annotations

import contextlib
import copy
import math
import sys
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from pipelines.errors import UserError

RowLoss = Callable[[torch.nn.Module, Sequence[torch.Tensor]], torch.Tensor]  # -> (batch,) loss per row


class Batches(Protocol):
    def __len__(self) -> int: ...

    def get(self, rows: np.ndarray) -> tuple[torch.Tensor, ...]: ...


class ArrayBatches:
    """Rows of aligned numpy arrays (features, labels, weights), as float32 tensors per batch."""

    def __init__(self, *arrays: np.ndarray):
        if not arrays or len({len(a) for a in arrays}) != 1:
            raise ValueError("ArrayBatches needs arrays of one length")
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays[0])

    def get(self, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(np.ascontiguousarray(a[rows], dtype=np.float32)) for a in self.arrays)


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    lr_schedule: str = "plateau"  # plateau | cosine | constant
    patience: int = 5  # epochs without a better validation loss before stopping
    min_delta: float = 1e-4  # relative improvement that counts as better
    validation_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True
    # torch threads on a CPU: these networks are small, and more threads than free cores
    # (a scheduler runs several tasks on one machine) made each step many times slower
    cpu_threads: int | None = 1

    @classmethod
    def from_params(cls, params: dict) -> "LoopConfig":
        return cls(**{k: params[k] for k in cls.__dataclass_fields__ if k in params})


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is cuda but torch sees no CUDA device here; use auto or cpu")
    if choice not in ("cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda, not {choice!r}")
    return torch.device(choice)


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def split_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows), a seeded random split; no validation below 10 rows."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction)) if n >= 10 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int | None):
    if device.type != "cpu" or not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _autocast(device: torch.device):
    # bf16 needs no loss scaling; CPU training stays float32 so it is exactly repeatable
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" \
        else torch.autocast(device_type="cpu", enabled=False)


def _to(tensors: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device, non_blocking=True) for t in tensors)


def _mean_loss(model, row_loss: RowLoss, data: Batches, rows: np.ndarray, batch_size: int, device) -> float:
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad(), _autocast(device):
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            total += float(row_loss(model, _to(data.get(batch), device)).float().sum())
            count += len(batch)
    return total / max(count, 1)


def fit(build: Callable[[], torch.nn.Module], row_loss: RowLoss, data: Batches, cfg: LoopConfig,
        label: str = "train") -> tuple[torch.nn.Module, list[dict]]:
    """Build the network (after seeding, so its initial weights repeat) and train it to
    minimise the mean of `row_loss`; returns it with the weights of its best validation epoch
    (on the CPU) and the history, one dict per epoch."""
    device = resolve_device(cfg.device)
    with cpu_threads(device, cfg.cpu_threads):
        return _fit(build, row_loss, data, cfg, label, device)


def _fit(build, row_loss: RowLoss, data: Batches, cfg: LoopConfig, label: str,
         device: torch.device) -> tuple[torch.nn.Module, list[dict]]:
    generator = seed_everything(cfg.seed)
    train_rows, val_rows = split_rows(len(data), cfg.validation_fraction, cfg.seed)
    if len(train_rows) == 0:
        raise UserError(f"{label}: no rows to train on")
    model = build().to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.lr_schedule == "plateau":
        schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=max(1, cfg.patience // 2))
    elif cfg.lr_schedule == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, cfg.epochs))
    elif cfg.lr_schedule == "constant":
        schedule = None
    else:
        raise UserError(f"lr_schedule must be plateau, cosine or constant, not {cfg.lr_schedule!r}")

    from tqdm.auto import tqdm  # a dependency of DVC and of this environment already

    history: list[dict] = []
    best, best_state, stale = math.inf, copy.deepcopy(model.state_dict()), 0
    from pipelines.progress import bar_wanted, progress_log  # stdlib only: still plain torch + numpy

    # a bar on a terminal; elsewhere (Airflow task logs) one plain line per epoch, no \r
    drawn = cfg.progress and bar_wanted()
    bar = tqdm(range(1, cfg.epochs + 1), desc=label, unit="epoch", file=sys.stderr, disable=not drawn, leave=True)
    for epoch in bar:
        model.train()
        order = train_rows[torch.randperm(len(train_rows), generator=generator).numpy()]
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start:start + cfg.batch_size]
            with _autocast(device):
                loss = row_loss(model, _to(data.get(batch), device)).float().mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        train_loss = total / len(order)
        val_loss = _mean_loss(model, row_loss, data, val_rows, cfg.batch_size, device) if len(val_rows) else train_loss
        if not math.isfinite(train_loss):
            raise UserError(f"{label}: the training loss diverged (NaN/inf) at epoch {epoch}; "
                            "lower learning_rate or check the features")
        lr = optimiser.param_groups[0]["lr"]
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr})
        bar.set_postfix(loss=f"{train_loss:.4g}", val=f"{val_loss:.4g}", lr=f"{lr:.2g}")
        if cfg.progress and not drawn:
            progress_log.info("%s epoch %d/%d: loss %.4g, validation %.4g, learning rate %.2g", label, epoch,
                              cfg.epochs, train_loss, val_loss, lr)
        if val_loss < best - cfg.min_delta * abs(best if math.isfinite(best) else val_loss):
            best, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
            schedule.step(val_loss)
        elif schedule is not None:
            schedule.step()
        if stale >= cfg.patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    return model.to("cpu").eval(), history


def predict(model: torch.nn.Module, row_fn: RowLoss, data: Batches, batch_size: int = 4096,
            device: str = "auto", threads: int | None = 1) -> np.ndarray:
    """`row_fn` over every row, in batches, as float64 numpy."""
    dev = resolve_device(device)
    model = model.to(dev).eval()
    out = []
    with torch.no_grad(), _autocast(dev), cpu_threads(dev, threads):
        for start in range(0, len(data), batch_size):
            rows = np.arange(start, min(start + batch_size, len(data)))
            out.append(row_fn(model, _to(data.get(rows), dev)).float().cpu().numpy())
    model.to("cpu")
    return np.concatenate(out).astype("float64") if out else np.zeros(0)
