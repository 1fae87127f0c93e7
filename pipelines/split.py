"""Which users are held out from training: a stable hash of the user id, not a random draw,
so the same user lands on the same side in every step and every rerun."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd


def holdout_mask(user_ids: pd.Series, fraction: float, seed: int = 0) -> np.ndarray:
    if not 0.0 <= fraction < 1.0:
        from pipelines.errors import UserError

        raise UserError(f"train.holdout_fraction must be in [0, 1), not {fraction}")
    salted = user_ids.astype("str") + f"#{seed}"
    buckets = pd.util.hash_pandas_object(salted, index=False).to_numpy() % 10_000
    return buckets < round(fraction * 10_000)


def heldout_users(frame: pd.DataFrame, train_params: Mapping[str, Any]) -> np.ndarray:
    """The held-out rows of a table with a user_id column under train's holdout_fraction and
    split_seed: train, evaluate, drift's training reference, the promotion gate's figures and its
    rank agreement all select them here, so every step means the same users."""
    return holdout_mask(frame["user_id"], train_params["holdout_fraction"], train_params["split_seed"])
