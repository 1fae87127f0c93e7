"""The held-out users: the promotion gate's figures (model_figures) and the challenger's scores
for the rank agreement (heldout_scores, when train's figures are reused) cover the same users,
those train held out; evaluate measures on them and drift's training reference leaves them out."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import default_params, override, section
from pipelines.drift import reference_for_training
from pipelines.evaluate import evaluate
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


def test_train_evaluate_and_drift_reference_share_the_held_out_users(sim, sim_features):
    params = override(override(default_params(), "train.holdout_fraction", 0.4), "train.split_seed", 9)
    held = heldout_users(sim_features, params["train"])
    assert held.sum() != holdout_mask(sim_features["user_id"], 0.3, 0).sum()  # not the defaults' split
    detector, info = train(sim_features, params["train"])
    assert (info["users_held_out"], info["users_trained_on"]) == (held.sum(), (~held).sum())
    # flag exactly the held-out users: evaluate sees as many users as it flags only if they are those
    scores = sim_features[["user_id"]].assign(score=held.astype(float), flagged=held)
    metrics, _ = evaluate(scores, sim[1], params["train"])
    assert metrics["holdout_users"] == metrics["k"] == held.sum()
    reference = reference_for_training(detector, sim_features, params["train"], section(params, "drift"))
    assert reference["score"]["users"] == (~held).sum()


def test_the_train_step_hashes_the_held_out_users_once_and_its_figures_are_those_of_its_own_split(
        sim_features, tmp_path, monkeypatch):
    from pipelines import io, promote, split, stages
    from pipelines import train as train_module
    from pipelines.layout import Layout

    params = override(override(default_params(), "train.holdout_fraction", 0.4), "train.split_seed", 9)
    lay = Layout.under(str(tmp_path))
    params = override(params, "storage", {"data": lay.data, "reports": lay.reports, "models": str(tmp_path / "models")})
    path, day = tmp_path / "features.parquet", sim_features.attrs["as_of"]
    io.write_parquet(sim_features, str(path))
    calls = []
    real = split.heldout_users

    def counted(frame, train_params):
        calls.append(len(frame))
        return real(frame, train_params)

    for module in (split, train_module, promote):
        monkeypatch.setattr(module, "heldout_users", counted)
    info = stages.train_stage(params, day, features_in=str(path), report_out=str(tmp_path / "train.json"))
    assert calls == [len(sim_features)]
    held = real(sim_features, params["train"])
    assert (info["users_held_out"], info["metrics"]["heldout_users"]) == (held.sum(), held.sum())
    detector, _ = train(sim_features, params["train"])
    reference = reference_for_training(detector, sim_features, params["train"], section(params, "drift"))
    given = reference_for_training(detector, sim_features, params["train"], section(params, "drift"), held=held)
    assert reference == given
