"""train(): unsupervised, fitted only on users outside the holdout, on the features params choose."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.errors import UserError
from pipelines.split import holdout_mask
from pipelines.train import select_features, train


def test_fits_only_on_users_outside_the_holdout(sim_features):
    params = {"detector": "ecdf_tail", "holdout_fraction": 0.3, "split_seed": 0}
    detector, info = train(sim_features, params)
    held = holdout_mask(sim_features["user_id"], 0.3, 0)
    assert info["users_held_out"] == held.sum() and info["users_trained_on"] == (~held).sum()
    # the reference quantiles are those of the training users alone
    col = detector.feature_names_.index("share_view_28d")
    expected = np.quantile(sim_features.loc[~held, "share_view_28d"], [0, 0.5, 1])
    got = detector.reference_.quantiles[[0, 1000, 2000], col]
    np.testing.assert_allclose(got, expected)


def test_holdout_is_stable_and_seeded():
    users = pd.Series([f"u{i}" for i in range(5000)])
    a, b = holdout_mask(users, 0.3, 0), holdout_mask(users, 0.3, 0)
    assert (a == b).all() and 0.27 < a.mean() < 0.33
    assert (holdout_mask(users, 0.3, 1) != a).any()
    # a user's side does not depend on who else is in the table
    assert (holdout_mask(users[::-1], 0.3, 0)[::-1] == a).all()
    with pytest.raises(UserError, match="holdout_fraction"):
        holdout_mask(users, 1.0)


def test_exclude_features_by_glob(sim_features):
    detector, info = train(sim_features, {"detector": "robust_zscore", "exclude_features": ["n_*", "*_28d"]})
    assert not any(c.startswith("n_") or c.endswith("_28d") for c in detector.feature_names_)
    assert "share_view_7d" in detector.feature_names_
    assert info["features"] == len(detector.feature_names_)


def test_select_features_errors_when_nothing_is_left():
    assert select_features(["a_1d", "b_1d"], ["a_*"]) == ["b_1d"]
    with pytest.raises(UserError, match="removes every feature"):
        select_features(["a_1d"], ["*"])


def test_detector_params_come_from_their_own_section(sim_features):
    detector, info = train(sim_features, {"detector": "isolation_forest", "isolation_forest": {"n_estimators": 7}})
    assert detector.params["n_estimators"] == 7 and info["params"]["n_estimators"] == 7
    with pytest.raises(UserError, match="unknown parameter"):
        train(sim_features, {"detector": "isolation_forest", "isolation_forest": {"trees": 7}})


def test_partial_params_get_params_yaml_defaults(sim_features):
    """Called with only a detector name, train() uses params.yaml's exclusions, not none."""
    detector, _ = train(sim_features, {"detector": "ecdf_tail"})
    assert "n_events_28d" not in detector.feature_names_ and "share_view_28d" in detector.feature_names_
    detector, _ = train(sim_features, {})
    assert detector.name == "ecdf_tail"


def test_an_unsupervised_detector_fits_on_a_seeded_sample_of_the_training_users(sim_features, sim):
    params = {"detector": "ecdf_tail", "holdout_fraction": 0.3, "split_seed": 0, "fit_sample_users": 200}
    detector, info = train(sim_features, params)
    held = holdout_mask(sim_features["user_id"], 0.3, 0)
    assert info["users_trained_on"] == 200 and info["users_available_for_training"] == (~held).sum()
    again, info_again = train(sim_features, params)
    assert info_again["training_data_sha256"] == info["training_data_sha256"]
    np.testing.assert_array_equal(again.reference_.quantiles, detector.reference_.quantiles)
    # the sample comes from training users only, and another seed draws another sample
    _, other = train(sim_features, {**params, "split_seed": 1})
    assert other["training_data_sha256"] != info["training_data_sha256"]
    everyone, _ = train(sim_features, {**params, "fit_sample_users": None})
    assert not np.array_equal(everyone.reference_.quantiles, detector.reference_.quantiles)
    # labels are rare: a supervised detector keeps every training user
    _, labels = sim
    _, supervised = train(sim_features, {**params, "detector": "supervised_mlp",
                                         "supervised_mlp": {"epochs": 1, "progress": False}}, labels)
    assert supervised["users_trained_on"] == (~holdout_mask(sim_features["user_id"], 0.3, 0)).sum()
