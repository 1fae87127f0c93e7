"""The promotion gate's held-out users: the figures (model_figures) and the challenger's scores
for the rank agreement (heldout_scores, when train's figures are reused) cover the same users,
those train held out."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import default_params, override
from pipelines.promote import heldout_scores, model_figures
from pipelines.split import heldout_users, holdout_mask
from pipelines.train import train


@pytest.mark.parametrize("fraction, seed", [(0.3, 0), (0.5, 7)])
def test_heldout_scores_are_model_figures_held_out_users(sim_features, fraction, seed):
    params = override(override(default_params(), "train.holdout_fraction", fraction), "train.split_seed", seed)
    detector, info = train(sim_features, params["train"])
    figures, held_scores = model_figures(detector, sim_features, None, params["train"], params["score"])
    alone = heldout_scores(detector, sim_features, params["train"], params["score"])
    assert figures["heldout_users"] == info["users_held_out"] == len(alone)
    np.testing.assert_array_equal(alone, held_scores)


def test_heldout_users_is_train_split(sim_features):
    held = heldout_users(sim_features, {"holdout_fraction": 0.3, "split_seed": 4})
    assert (held == holdout_mask(sim_features["user_id"], 0.3, 4)).all()
    assert 0 < held.sum() < len(sim_features)
