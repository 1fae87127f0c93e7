"""isolation_forest's tail_transform: the forest splits on each feature's signed tail rarity."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from pipelines.config import default_params, override
from pipelines.detectors import Detector, get_detector_class, make_detector


def _table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.lognormal(size=n), "c": rng.exponential(size=n)})
    X.loc[:4, "b"] = 60.0  # a few far out on one feature
    return X


def test_off_by_default_and_scores_as_before():
    """Without tail_transform the forest sees the raw values (median-imputed), as before the option."""
    from sklearn.ensemble import IsolationForest

    assert get_detector_class("isolation_forest").defaults["tail_transform"] is False
    X = _table()
    X.loc[7, "a"] = np.nan
    det = make_detector("isolation_forest", {"n_estimators": 40}).fit(X)
    raw = X.fillna({"a": X["a"].median()}).to_numpy()
    expected = -IsolationForest(n_estimators=40, max_samples=256, random_state=0).fit(raw).score_samples(raw)
    np.testing.assert_allclose(det.score(X), expected)


def test_signed_tail_keeps_order_is_zero_at_the_median_and_for_missing():
    X = _table()
    det = make_detector("isolation_forest", {"n_estimators": 20, "tail_transform": True}).fit(X)
    grid = np.linspace(-4, 4, 81)
    probe = np.column_stack([grid, np.full_like(grid, np.nan), np.full_like(grid, X["c"].median())])
    t = det._signed_tail(probe)
    assert np.all(np.diff(t[:, 0]) >= 0)  # monotone in the value
    assert t[0, 0] < -3 and t[-1, 0] > 3  # both tails stretched, the low one negative
    assert abs(t[40, 0]) < 0.05  # 0 at (about) the median
    assert np.all(t[:, 1] == 0.0) and np.all(t[:, 2] == 0.0)  # missing, and the median itself


def test_tail_transform_ignores_each_features_units_and_skew():
    """A strictly increasing change of a feature's scale (exp, affine) leaves the ranking as it
    was: the transform sees only the feature's order among the training users."""
    X = _table()
    Y = X.assign(a=np.exp(X["a"]), b=1000.0 * X["b"] - 7.0, c=np.log(X["c"]))
    def agreement(tail: bool) -> float:
        params = {"n_estimators": 100, "tail_transform": tail}
        s_x = make_detector("isolation_forest", params).fit(X).score(X)
        s_y = make_detector("isolation_forest", params).fit(Y).score(Y)
        return spearmanr(s_x, s_y)[0]

    assert agreement(True) > 0.99
    assert agreement(False) < 0.9  # on the raw values the same change reorders the users (about 0.75)


def test_tail_transform_survives_save_and_load(tmp_path):
    X = _table()
    det = make_detector("isolation_forest", {"n_estimators": 30, "tail_transform": True}).fit(X)
    det.save(tmp_path / "model")
    loaded = Detector.load(tmp_path / "model")
    assert loaded.params["tail_transform"] is True
    np.testing.assert_allclose(loaded.score(X), det.score(X))


def test_params_yaml_key_reaches_the_detector():
    params = override(default_params(), "train.isolation_forest.tail_transform", True, source="test")
    built = get_detector_class("isolation_forest").params_from_train(params["train"])
    assert built["tail_transform"] is True
    with pytest.raises(Exception, match="tail_transform"):
        override(default_params(), "train.isolation_forest.tail_transform", "often", source="test")
