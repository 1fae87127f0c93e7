"""knn: distance to the nearest training users, in robust z-scores, among a seeded sample."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.config import default_params, override
from pipelines.detectors import Detector, get_detector_class, make_detector
from pipelines.errors import UserError


def _two_clusters(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Half the users near (-5, -5), half near (5, 5): each feature alone is common at -5 and at 5."""
    rng = np.random.default_rng(seed)
    centre = np.where(rng.random(n) < 0.5, -5.0, 5.0)
    return pd.DataFrame({"a": centre + rng.normal(size=n), "b": centre + rng.normal(size=n)})


def test_a_user_between_clusters_ranks_first_where_the_tails_see_nothing():
    X = _two_clusters()
    probe = pd.concat([X, pd.DataFrame({"a": [5.0], "b": [-5.0]})], ignore_index=True)  # each value common
    knn = make_detector("knn").fit(X).score(probe)
    assert int(np.argmax(knn)) == len(X)
    tail = make_detector("ecdf_tail").fit(X).score(probe)
    assert (tail >= tail[-1]).mean() > 0.2  # per-feature tails: an ordinary user


def test_round_trip_scores_and_reasons_identical(tmp_path):
    X = _two_clusters()
    Y = X.copy()
    Y.loc[3, "a"] = 40.0  # far out on one feature: a tail reason
    det = make_detector("knn", {"k": 7, "aggregate": "kth"}).fit(X)
    det.save(tmp_path / "model")
    loaded = Detector.load(tmp_path / "model")
    assert loaded.params == det.params
    np.testing.assert_array_equal(loaded.score(Y), det.score(Y))
    assert loaded.explain(Y) == det.explain(Y)
    assert det.explain(Y)[3].startswith("a=40")
    assert "proxy" in det.reasons_kind  # the reasons are not the distance's own attribution


def test_deterministic_and_the_sample_is_seeded():
    X = _two_clusters(n=2000)
    a = make_detector("knn", {"max_samples": 100}).fit(X)
    b = make_detector("knn", {"max_samples": 100}).fit(X)
    np.testing.assert_array_equal(a.score(X), b.score(X))
    assert a.sample_.shape == (100, 2)  # at most max_samples neighbours are kept
    other = make_detector("knn", {"max_samples": 100, "random_state": 1}).fit(X)
    assert not np.array_equal(other.sample_, a.sample_)
    # fewer training users than max_samples: all of them, whatever the seed
    small = X.iloc[:50]
    np.testing.assert_array_equal(make_detector("knn", {"random_state": 3}).fit(small).score(X),
                                  make_detector("knn").fit(small).score(X))


def test_mean_and_kth_distance():
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    scale = make_detector("knn").fit(X).reference_.scale[0]
    probe = pd.DataFrame({"a": [10.0]})  # 4, 5, 6 away from its three nearest
    mean = make_detector("knn", {"k": 3}).fit(X).score(probe)[0]
    kth = make_detector("knn", {"k": 3, "aggregate": "kth"}).fit(X).score(probe)[0]
    assert mean == pytest.approx(5.0 / scale)
    assert kth == pytest.approx(6.0 / scale)


def test_missing_value_is_the_median():
    X = _two_clusters()
    det = make_detector("knn").fit(X)
    median_b = det.reference_.median[1]
    with_nan = pd.DataFrame({"a": [5.0], "b": [np.nan]})
    np.testing.assert_array_equal(det.score(with_nan), det.score(pd.DataFrame({"a": [5.0], "b": [median_b]})))


@pytest.mark.parametrize("params, message", [
    ({"k": 0}, "knn.k must be a whole number >= 1"),
    ({"max_samples": 2.5}, "knn.max_samples must be a whole number >= 1"),
    ({"aggregate": "median"}, "knn.aggregate must be one of mean, kth"),
    ({"space": "rank"}, "unknown parameter"),
])
def test_bad_params_are_one_line_errors(params, message):
    with pytest.raises(UserError, match=message) as err:
        make_detector("knn", params)
    assert "\n" not in str(err.value)


def test_params_yaml_key_reaches_the_detector():
    params = override(default_params(), "train.knn.k", 5, source="test")
    assert get_detector_class("knn").params_from_train(params["train"])["k"] == 5
    with pytest.raises(Exception, match="k"):
        override(default_params(), "train.knn.k", "many", source="test")
