"""The deep detectors' own contract: repeatable CPU training, one shared loop with early
stopping, safe model files (checksum, format, shape), labels only for the supervised one,
and torch never loaded by the detectors that do not need it."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors import Detector, make_detector
from pipelines.errors import UserError

NET = {"hidden": [16], "epochs": 25, "batch_size": 64, "patience": 25, "progress": False, "device": "cpu"}


def table(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Correlated features (windows of one signal move together), a constant column, and 5% of
    users labelled anomalous, who have high refund ratios and many devices."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 2.0, n)
    y = (rng.random(n) < 0.05).astype(int)
    X = pd.DataFrame({
        "n_view_1d": rng.poisson(base), "n_view_7d": rng.poisson(7 * base), "n_view_28d": rng.poisson(28 * base),
        "refund_ratio_28d": np.where(y == 1, rng.uniform(0.5, 1.0, n), rng.beta(1, 30, n)),
        "distinct_devices_28d": np.where(y == 1, rng.integers(4, 9, n), rng.integers(1, 3, n)),
        "typical_gap_s_1d": rng.lognormal(7, 0.5, n),
        "always_zero_7d": np.zeros(n),
    }).astype("float64")
    return X, y


def fit(name: str, X, y=None, **params) -> Detector:
    det = make_detector(name, {**NET, **params})
    return det.fit(X, y) if det.supervised else det.fit(X)


@pytest.mark.parametrize("name", ["autoencoder", "vae", "supervised_mlp"])
def test_cpu_training_is_repeatable_and_a_round_trip_scores_identically(name, tmp_path):
    X, y = table()
    a, b = fit(name, X, y), fit(name, X, y)
    np.testing.assert_array_equal(a.score(X), b.score(X))
    assert a.history_ == b.history_
    version = a.save(tmp_path / "m")
    loaded = Detector.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score(X), a.score(X))
    assert loaded.explain(X.iloc[:20]) == a.explain(X.iloc[:20]) and loaded.model_version_ == version
    assert fit(name, X, y, seed=1).save(tmp_path / "other") != version  # the seed is part of the model


@pytest.mark.parametrize("name", ["autoencoder", "vae"])
def test_unsupervised_networks_rank_the_anomalous_users_high(name):
    from sklearn.metrics import roc_auc_score

    X, y = table(1500)
    # a narrow code for six features, three of them one signal; the abusers are 5% of the
    # training users, and the autoencoder's Huber loss keeps it from learning to reconstruct them
    det = fit(name, X, epochs=40, latent=2)
    assert roc_auc_score(y, det.score(X)) > 0.9
    assert det.dropped_features == ["always_zero_7d"]  # constant among training users: not fed to the net


def test_supervised_mlp_needs_labels_and_gives_calibrated_probabilities():
    X, y = table(3000)
    with pytest.raises(UserError, match="supervised and needs labels"):
        make_detector("supervised_mlp", NET).fit(X)
    with pytest.raises(UserError, match="both normal and anomalous"):
        make_detector("supervised_mlp", NET).fit(X, np.zeros(len(X)))
    det = fit("supervised_mlp", X, y, epochs=30)
    p = det.score(X)
    assert ((p >= 0) & (p <= 1)).all()
    assert abs(p.mean() - y.mean()) < 0.02  # Platt scaling brings the weighted classifier back to the base rate
    assert p[y == 1].mean() > 0.6 and p[y == 0].mean() < 0.05
    assert det.reasons(X[y == 1].iloc[:5], top_n=2)[0][0].feature in ("refund_ratio_28d", "distinct_devices_28d")


def test_train_passes_labels_only_to_a_supervised_detector():
    from pipelines.train import train

    X, y = table(800)
    features = X.assign(user_id=[f"u{i:04d}" for i in range(len(X))])
    labels = pd.DataFrame({"user_id": features["user_id"][:700], "is_anomaly": y[:700], "anomaly_type": ""})
    params = {"detector": "supervised_mlp", "exclude_features": [], "supervised_mlp": {**NET, "epochs": 5}}
    with pytest.raises(UserError, match="is supervised: give the train step --labels"):
        train(features, params)
    det, info = train(features, params, labels)
    assert info["supervised"] and info["positives_trained_on"] > 0
    assert 0 < info["users_without_label"] <= 100  # counted as normal, and reported
    assert info["dropped_constant_features"] == ["always_zero_7d"]  # train drops it before the detector sees it
    assert len(info["fit"]["history"]) == 5
    # an unsupervised detector is fitted the same with or without labels
    ae = {"detector": "autoencoder", "exclude_features": [], "autoencoder": {**NET, "epochs": 3}}
    np.testing.assert_array_equal(train(features, ae)[0].score(X), train(features, ae, labels)[0].score(X))


def test_early_stopping_keeps_the_best_epoch():
    from pipelines.deep import loop

    X, _ = table(400)
    det = fit("autoencoder", X, epochs=200, patience=2, learning_rate=0.05)
    history = det.history_
    assert len(history) < 200  # stopped early
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    assert len(history) - 1 - best >= 2  # it waited `patience` epochs past the best
    assert history[-1]["lr"] <= history[0]["lr"]
    Z = det.scaler_.transform(X.to_numpy(dtype="float64"))
    _, val = loop.split_rows(len(Z), det.params["validation_fraction"], det.params["seed"])
    reached = loop.predict(det.model_, det._row_loss, loop.ArrayBatches(Z[val]), device="cpu").mean()
    assert reached == pytest.approx(history[best]["val_loss"], rel=1e-4)  # the best epoch's weights were kept


def test_tampered_weights_and_mismatched_files_are_refused(tmp_path):
    X, _ = table(300)
    det = fit("autoencoder", X, epochs=3)
    det.save(tmp_path / "m")
    weights = tmp_path / "m" / "weights.pt"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(UserError, match="checksum mismatch"):
        Detector.load(tmp_path / "m")

    det.save(tmp_path / "n")
    meta = json.loads((tmp_path / "n" / "network.json").read_text())
    (tmp_path / "n" / "network.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(UserError, match="format 99"):
        Detector.load(tmp_path / "n")
    (tmp_path / "n" / "network.json").write_text(json.dumps({**meta, "n_inputs": meta["n_inputs"] + 1}))
    with pytest.raises(UserError, match="does not match the feature list"):
        Detector.load(tmp_path / "n")
    with pytest.raises(UserError, match="missing .*n_view_7d"):
        det.score(X.drop(columns=["n_view_7d"]))


def test_cuda_trains_where_there_is_a_gpu_and_is_one_line_where_there_is_none():
    import torch

    X, _ = table(100)
    if torch.cuda.is_available():
        assert np.isfinite(fit("autoencoder", X, device="cuda", epochs=2).score(X)).all()
    else:
        with pytest.raises(UserError, match="train.device is cuda but torch sees no CUDA device"):
            fit("autoencoder", X, device="cuda")


def test_scoring_with_ecdf_tail_and_validating_params_never_import_torch(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train: {detector: autoencoder, autoencoder: {epochs: 3}}\n")
    code = f"""
import sys
import numpy as np, pandas as pd
from pipelines.config import load_params
from pipelines.detectors import REGISTRY, make_detector
from pipelines.score import score_users
assert load_params({str(params)!r})["train"]["autoencoder"]["epochs"] == 3
assert "autoencoder" in REGISTRY and REGISTRY["autoencoder"].wants_gpu
X = pd.DataFrame({{"a_7d": np.arange(50.0), "b_7d": np.arange(50.0) % 7}})
det = make_detector("ecdf_tail").fit(X)
score_users(X.assign(user_id=[str(i) for i in range(50)]), det, {{}}, "2026-11-21")
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
