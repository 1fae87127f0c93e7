"""A day whose features step has not run: every step that reads that day's features (train,
evaluate, promote, score, and drift in the report step) stops with the same one-line error,
with a model version registered (and its drift reference), so the features are the only thing
missing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines import stages
from pipelines.config import default_params, override
from pipelines.errors import UserError
from pipelines.layout import Layout, require_features
from pipelines.registry import Registry

DAY = "2026-11-22"  # no features were built for this day


def missing(path: str) -> str:
    return f"{path}: no features for {DAY}; run the features step for that date first"


@pytest.fixture(scope="module")
def registered(tmp_path_factory, sim_features) -> tuple[dict, str]:
    from pipelines.drift import REFERENCE_FILE, reference_for_training
    from pipelines.train import train

    root = tmp_path_factory.mktemp("no_features")
    params = override(default_params(), "storage", {"data": str(root / "data"), "reports": str(root / "reports"),
                                                    "models": str(root / "models")})
    detector, info = train(sim_features, params["train"])
    reference = reference_for_training(detector, sim_features, params["train"], params["drift"])
    registry = Registry(params["storage"]["models"])
    version = registry.register(detector, {"trained_as_of": "2026-11-21", "train_params": params["train"]},
                                extra_json={REFERENCE_FILE: reference})
    return params, version


@pytest.mark.parametrize("step", ["train", "evaluate", "promote", "score", "report"])
def test_each_step_reading_features_says_to_run_the_features_step(registered, tmp_path, step):
    params, version = registered
    path = Layout.from_params(params).features(DAY)
    assert not Path(path).exists()
    if step == "train":
        call = lambda: stages.train_stage(params, DAY)  # noqa: E731
    elif step == "evaluate":
        labels = tmp_path / "labels.parquet"
        pd.DataFrame({"user_id": ["u1"], "is_anomaly": [False]}).to_parquet(labels, index=False)
        call = lambda: stages.evaluate_stage(params, DAY, str(labels), model=version)  # noqa: E731
    elif step == "promote":
        call = lambda: stages.promote_stage(params, DAY, candidate=version)  # noqa: E731
    elif step == "score":
        call = lambda: stages.score_stage(params, DAY, model=version)  # noqa: E731
    else:
        # drift comes first in the report step; it reaches the features once the scores are there
        scores = tmp_path / "scores.parquet"
        pd.DataFrame({"user_id": ["u1"], "score": [0.5], "model_version": [version]}).to_parquet(scores, index=False)
        call = lambda: stages.report_stage(params, DAY, scores_in=str(scores))  # noqa: E731
    with pytest.raises(UserError) as caught:
        call()
    assert str(caught.value) == missing(path)


def test_require_features_lives_with_the_layout(tmp_path):
    path = tmp_path / "features.parquet"
    with pytest.raises(UserError) as caught:
        require_features(str(path), DAY)
    assert str(caught.value) == missing(str(path))
    path.write_bytes(b"")
    assert require_features(str(path), DAY) is None


def test_drift_says_to_run_the_features_step(registered, tmp_path):
    from pipelines.drift import day_drift

    params, version = registered
    path = str(tmp_path / "features.parquet")
    with pytest.raises(UserError) as caught:
        day_drift(params, DAY, Registry(params["storage"]["models"]), version, path, str(tmp_path / "scores.parquet"))
    assert str(caught.value) == missing(path)


def test_the_cli_prints_it_on_one_line(tmp_path):
    """A folder with a params.yaml of one key and no data: the default storage, relative to it."""
    (tmp_path / "params.yaml").write_text(f"as_of: '{DAY}'\n")
    env = {k: v for k, v in os.environ.items() if k != "PIPELINES_PARAMS"}
    proc = subprocess.run([sys.executable, "-m", "pipelines", "promote", "--candidate", "any"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {missing(Layout.from_params(default_params()).features(DAY))}"]
