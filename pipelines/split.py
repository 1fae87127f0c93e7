"""Which users are held out from training: a stable hash of the user id, not a random draw,
so the same user lands on the same side in every step and every rerun."""
from __future__ import annotations

import numpy as np
import pandas as pd


def holdout_mask(user_ids: pd.Series, fraction: float, seed: int = 0) -> np.ndarray:
    if not 0.0 <= fraction < 1.0:
        from pipelines.errors import UserError

        raise UserError(f"train.holdout_fraction must be in [0, 1), not {fraction}")
    salted = user_ids.astype("str") + f"#{seed}"
    buckets = pd.util.hash_pandas_object(salted, index=False).to_numpy() % 10_000
    return buckets < round(fraction * 10_000)
