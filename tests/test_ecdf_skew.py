"""ecdf_skew: ecdf_tail, the tail against each feature's skew counting skew_penalty less."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.config import default_params, override
from pipelines.detectors import Detector, get_detector_class, make_detector
from pipelines.errors import UserError


def _skewed(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """`a` right-skewed (lognormal), `b` left-skewed (its mirror), `c` symmetric."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.lognormal(size=n), "b": -rng.lognormal(size=n), "c": rng.normal(size=n)})


def test_no_penalty_is_ecdf_tail_to_the_bit(normal_features):
    Y = normal_features.copy()
    Y.loc[3, "refund_ratio_28d"] = np.nan
    skew = make_detector("ecdf_skew", {"skew_penalty": 0.0}).fit(normal_features)
    tail = make_detector("ecdf_tail").fit(normal_features)
    np.testing.assert_array_equal(skew.score(Y), tail.score(Y))
    assert skew.explain(Y) == tail.explain(Y)


def test_the_side_against_the_skew_counts_the_penalty_less():
    X = _skewed()
    det = make_detector("ecdf_skew", {"skew_penalty": 0.5, "top_signals": 1}).fit(X)
    tail = make_detector("ecdf_tail", {"top_signals": 1}).fit(X)
    assert det.skew_sign_.tolist()[:2] == [1.0, -1.0]
    med = X.median()
    # one value far out at a time: a's short (low) side, a's long side, b's short (high) side, c's low side
    probe = pd.DataFrame({"a": [X["a"].min(), X["a"].quantile(0.999), med["a"], med["a"]],
                          "b": [med["b"], med["b"], X["b"].max(), med["b"]],
                          "c": [med["c"], med["c"], med["c"], X["c"].quantile(0.001)]})
    drop = tail.score(probe) - det.score(probe)
    np.testing.assert_allclose(drop[[0, 2]], 0.5)  # against the skew: 0.5 less
    assert drop[1] == 0.0  # with the skew: as ecdf_tail
    # c's skew sign is that of a sample's noise; whichever it is, only the side against it pays
    assert min(abs(drop[3]), abs(drop[3] - 0.5)) < 1e-9


def test_reasons_are_the_penalised_terms():
    X = _skewed()
    det = make_detector("ecdf_skew", {"skew_penalty": 4.5}).fit(X)
    # a at its long side and b at its short side, equally rare (-log 0.001 = 6.9): only a is
    # named once b pays 4.5 (a reason needs at least -log 0.05 = 3.0)
    probe = pd.DataFrame({"a": [X["a"].quantile(0.999)], "b": [X["b"].quantile(0.999)], "c": [0.0]})
    assert make_detector("ecdf_tail").fit(X).explain(probe)[0].count("=") == 2
    assert [r.feature for r in det.reasons(probe)[0]] == ["a"]


def test_round_trip_identical_scores_and_reasons(tmp_path):
    X = _skewed()
    Y = X.copy()
    Y.loc[5, "b"] = 50.0
    det = make_detector("ecdf_skew").fit(X)
    det.save(tmp_path / "model")
    loaded = Detector.load(tmp_path / "model")
    assert loaded.params == det.params
    np.testing.assert_array_equal(loaded.skew_sign_, det.skew_sign_)
    np.testing.assert_array_equal(loaded.score(Y), det.score(Y))
    assert loaded.explain(Y) == det.explain(Y) and loaded.explain(Y)[5].startswith("b=50")
    np.testing.assert_array_equal(make_detector("ecdf_skew").fit(X).score(Y), det.score(Y))  # deterministic


@pytest.mark.parametrize("bad", [-0.1, "high", True, float("inf")])
def test_bad_penalty_is_a_one_line_error(bad):
    with pytest.raises(UserError, match="skew_penalty must be a number >= 0") as err:
        make_detector("ecdf_skew", {"skew_penalty": bad})
    assert "\n" not in str(err.value)


def test_params_yaml_key_reaches_the_detector():
    params = override(default_params(), "train.ecdf_skew.skew_penalty", 0.5, source="test")
    assert get_detector_class("ecdf_skew").params_from_train(params["train"])["skew_penalty"] == 0.5
