"""The model registry and the promotion gate: content-addressed versions, the champion pointer,
and a gate that promotes a better model, keeps the champion against a worse one, and records
every decision with both models' figures."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import default_params, override
from pipelines.detectors.base import register
from pipelines.detectors.ecdf_tail import EcdfTailDetector
from pipelines.errors import UserError
from pipelines.promote import decide, gate
from pipelines.registry import Registry
from pipelines.train import train


@register
class InvertedEcdfTail(EcdfTailDetector):
    """A deliberately bad model: ranks the most ordinary users first."""

    name = "inverted_ecdf_tail_for_tests"

    def _score(self, X):
        return -super()._score(X)


@register
class ConstantDetector(EcdfTailDetector):
    name = "constant_for_tests"

    def _score(self, X):
        return np.zeros(len(X))


def fitted(features, detector="ecdf_tail", **train_overrides):
    params = override(default_params(), "train.detector", detector)
    for key, value in train_overrides.items():
        params = override(params, f"train.{key}", value)
    model, info = train(features, params["train"])
    return model, info, params


@pytest.fixture
def labels(sim):
    return sim[1]


def test_same_model_twice_is_one_immutable_version(tmp_path, sim_features):
    registry = Registry(str(tmp_path / "models"))
    model, info, _ = fitted(sim_features)
    record = {"trained_as_of": "2026-11-21", "training_data": {"sha256": info["training_data_sha256"]}}
    first = registry.register(model, record)
    again, _, _ = fitted(sim_features)
    second = registry.register(again, {**record, "note": "a second run"})
    assert first == second and first.startswith("ecdf_tail-")
    assert [m["version"] for m in registry.versions()] == [first]
    assert "note" not in registry.get(first)  # a version never changes once written
    other, _, _ = fitted(sim_features, "robust_zscore")
    assert registry.register(other, record) != first
    assert len(registry.versions()) == 2


def test_version_metadata_traces_the_model_to_its_data(tmp_path, sim_features):
    registry = Registry(str(tmp_path / "models"))
    model, info, params = fitted(sim_features)
    version = registry.register(model, {"trained_as_of": "2026-11-21",
                                        "training_data": {"sha256": info["training_data_sha256"], "users": len(sim_features)},
                                        "train_params": params["train"], "metrics": {"roc_auc": 0.9}})
    meta = registry.get(version)
    assert meta["training_data"]["sha256"] == info["training_data_sha256"]
    assert meta["feature_names"] == model.feature_names_
    assert meta["params"] == model.params and meta["train_params"]["detector"] == "ecdf_tail"
    assert {"python", "numpy", "pandas", "scikit-learn"} <= set(meta["libraries"])
    loaded = registry.load(version)
    X = sim_features[model.feature_names_]
    assert np.array_equal(loaded.score(X), model.score(X))


def test_training_fingerprint_changes_with_the_data(sim_features):
    _, a, _ = fitted(sim_features)
    changed = sim_features.copy()
    changed.loc[0, "share_view_28d"] = 0.123456
    _, b, _ = fitted(changed)
    assert a["training_data_sha256"] != b["training_data_sha256"]


def test_no_champion_and_unknown_versions_are_one_line_errors(tmp_path):
    registry = Registry(str(tmp_path / "models"))
    with pytest.raises(UserError, match="no champion model"):
        registry.champion_version()
    assert registry.champion_version(required=False) is None
    with pytest.raises(UserError, match="not a model version"):
        registry.version_dir("../../etc")
    with pytest.raises(UserError, match="not in the registry"):
        registry.load("ecdf_tail-0123456789ab")


def test_gate_promotes_a_better_model_keeps_against_a_worse_and_records_both(tmp_path, sim_features, labels):
    registry = Registry(str(tmp_path / "models"))
    params = default_params()
    bad, _, _ = fitted(sim_features, InvertedEcdfTail.name)
    good, _, _ = fitted(sim_features)
    bad_v, good_v = registry.register(bad, {}), registry.register(good, {})

    first = gate(registry, bad_v, sim_features, labels, "2026-11-20", params)
    assert first["promoted"] and first["reason"] == "no champion yet"
    assert registry.champion_version() == bad_v

    better = gate(registry, good_v, sim_features, labels, "2026-11-21", params)
    assert better["promoted"] and better["champion_before"] == bad_v and better["champion_after"] == good_v
    assert better["candidate_figures"]["pr_auc"] > better["champion_figures"]["pr_auc"]

    worse = gate(registry, bad_v, sim_features, labels, "2026-11-22", params)
    assert not worse["promoted"] and worse["champion_after"] == good_v
    assert "worse than" in worse["reason"]
    assert worse["candidate_figures"]["pr_auc"] < worse["champion_figures"]["pr_auc"]

    history = registry.decisions()
    assert [(d["as_of"], d["candidate"], d["promoted"]) for d in history] == [
        ("2026-11-20", bad_v, True), ("2026-11-21", good_v, True), ("2026-11-22", bad_v, False)]
    assert all("pr_auc" in d["candidate_figures"] for d in history)
    assert registry.champion()["version"] == good_v


def test_force_promotes_and_says_what_the_gate_said(tmp_path, sim_features, labels):
    registry = Registry(str(tmp_path / "models"))
    params = default_params()
    good, _, _ = fitted(sim_features)
    bad, _, _ = fitted(sim_features, InvertedEcdfTail.name)
    good_v, bad_v = registry.register(good, {}), registry.register(bad, {})
    gate(registry, good_v, sim_features, labels, "2026-11-21", params)
    forced = gate(registry, bad_v, sim_features, labels, "2026-11-21", params, force=True)
    assert forced["promoted"] and forced["forced"] and not forced["gate_promoted"]
    assert forced["reason"].startswith("forced (the gate said:")
    champion = registry.champion()
    assert champion["version"] == bad_v and champion["forced"] is True


def test_unlabelled_gate_uses_rank_agreement_and_sanity(tmp_path, sim_features):
    registry = Registry(str(tmp_path / "models"))
    params = override(default_params(), "score.top_k", 10)  # 600 users: 100 flags would break max_flag_rate
    ecdf, _, _ = fitted(sim_features)
    similar, _, _ = fitted(sim_features, "ecdf_tail", ecdf_tail={"top_signals": 4, "group_windows": True})
    inverted, _, _ = fitted(sim_features, InvertedEcdfTail.name)
    constant, _, _ = fitted(sim_features, ConstantDetector.name)
    versions = [registry.register(m, {}) for m in (ecdf, similar, inverted, constant)]
    gate(registry, versions[0], sim_features, None, "2026-11-21", params)
    agree = gate(registry, versions[1], sim_features, None, "2026-11-21", params)
    assert agree["promoted"] and agree["rank_agreement"] > 0.5 and "unlabelled" in agree["reason"]
    disagree = gate(registry, versions[2], sim_features, None, "2026-11-21", params)
    assert not disagree["promoted"] and disagree["rank_agreement"] < 0 and "rank agreement" in disagree["reason"]
    flat = gate(registry, versions[3], sim_features, None, "2026-11-21", params)
    assert not flat["promoted"] and "same score" in flat["reason"]
    assert registry.champion_version() == versions[1]


@pytest.mark.parametrize("cand, champ, agreement, expected", [
    ({"finite": True, "constant": False, "pr_auc": 0.50, "flag_rate": 0.01}, {"pr_auc": 0.505}, None, True),
    ({"finite": True, "constant": False, "pr_auc": 0.49, "flag_rate": 0.01}, {"pr_auc": 0.505}, None, False),
    ({"finite": True, "constant": False, "flag_rate": 0.2}, {"flag_rate": 0.01}, 0.9, False),
    ({"finite": True, "constant": False, "flag_rate": 0.01}, {"flag_rate": 0.01}, 0.3, False),
    ({"finite": True, "constant": False, "flag_rate": 0.01}, {"flag_rate": 0.01}, 0.8, True),
    ({"finite": False, "constant": False, "flag_rate": 0.01}, {"flag_rate": 0.01}, 0.8, False),
    ({"finite": True, "constant": False, "flag_rate": 0.01}, {"error": "missing columns"}, None, True),
])
def test_decision_rule(cand, champ, agreement, expected):
    rule = default_params()["promote"]
    promoted, reason = decide("ecdf_tail-000000000001", cand, "ecdf_tail-000000000002", champ, agreement, rule)
    assert promoted is expected and reason



def test_gate_given_trains_figures_decides_as_when_it_measures_them(tmp_path, sim_features):
    """With the candidate's figures from train, the gate scores only the held-out users (for the
    rank agreement) and reaches the same decision and agreement as when it measures everything."""
    params = override(default_params(), "score.top_k", 10)
    ecdf, _, _ = fitted(sim_features)
    similar, _, _ = fitted(sim_features, "ecdf_tail", ecdf_tail={"top_signals": 4, "group_windows": True})
    figures, _ = model_figures_of(similar, sim_features, params)
    decisions = []
    for given in (None, figures):
        registry = Registry(str(tmp_path / f"models_{given is None}"))
        champion_v, candidate_v = registry.register(ecdf, {}), registry.register(similar, {})
        gate(registry, champion_v, sim_features, None, "2026-11-20", params)
        decisions.append(gate(registry, candidate_v, sim_features, None, "2026-11-21", params,
                              candidate_figures=given))
    measured, reused = decisions
    assert (measured["candidate_figures_from"], reused["candidate_figures_from"]) == ("gate", "train")
    assert reused["candidate_figures"] == measured["candidate_figures"]
    assert reused["rank_agreement"] == pytest.approx(measured["rank_agreement"], abs=1e-12)
    assert (reused["promoted"], reused["reason"]) == (measured["promoted"], measured["reason"])


def test_gate_without_a_champion_never_loads_the_features_when_given_the_figures(tmp_path, sim_features):
    params = override(default_params(), "score.top_k", 10)
    model, _, _ = fitted(sim_features)
    figures, _ = model_figures_of(model, sim_features, params)
    registry = Registry(str(tmp_path / "models"))
    version = registry.register(model, {})

    def features():
        raise AssertionError("the features were read")

    decision = gate(registry, version, features, None, "2026-11-21", params, candidate_figures=figures)
    assert decision["promoted"] and decision["reason"] == "no champion yet"


def model_figures_of(model, features, params):
    from pipelines.promote import model_figures

    return model_figures(model, features, None, params["train"], params["score"])
