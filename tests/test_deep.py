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


def test_an_ensemble_scores_with_reasons_calling_each_member_once(monkeypatch):
    """ensemble.score_and_reasons calls each member's score_and_reasons once, so a sequence
    member's network reads the users once (not once for the score, once for the shares and once
    for the reasons), and it gives exactly what score and reasons give called alone."""
    import pipelines.deep.sequence_net as net
    from pipelines.config import default_params
    from pipelines.features import build_features
    from pipelines.sequences import EventSequences, build_sequences, model_input
    from pipelines.train import train
    from sequence_data import event_log

    day = "2026-11-20"
    log, _ = event_log(0, n_normal=120, n_planted=6)
    features = build_features(log, {"as_of": day, "threads": 1})
    sequences = EventSequences.from_frame(build_sequences(log, day, 48))
    params = {**default_params()["train"], "detector": "ensemble", "holdout_fraction": 0.0,
              "ensemble": {"members": {"ecdf_tail": 1.0, "sequence_autoencoder": 1.0}},
              "sequence_autoencoder": {"epochs": 3, "batch_size": 32, "progress": False, "device": "cpu",
                                       "score_top_events": 5}}
    ensemble, _ = train(features, params, None, lambda: sequences)
    X = model_input(ensemble, features.iloc[:40], sequences)
    calls: dict[str, int] = {}

    def counted(key, method):
        def wrapper(*args, **kwargs):
            calls[key] = calls.get(key, 0) + 1
            return method(*args, **kwargs)
        return wrapper

    for name, member in ensemble.members_.items():
        for method in ("score_and_reasons", "score", "reasons"):
            monkeypatch.setattr(member, method, counted(f"{name}.{method}", getattr(member, method)))
    monkeypatch.setattr(net, "event_losses", counted("forward", net.event_losses))

    def counting(run):
        calls.clear()
        result = run()
        return result, dict(calls)

    (scores, reasons), both = counting(lambda: ensemble.score_and_reasons(X, top_n=3))
    # each member once; the table member's own score_and_reasons is Detector's, its score then its reasons
    assert both == {"ecdf_tail.score_and_reasons": 1, "ecdf_tail.score": 1, "ecdf_tail.reasons": 1,
                    "sequence_autoencoder.score_and_reasons": 1, "forward": 1}
    alone_scores, by_score = counting(lambda: ensemble.score(X))
    assert by_score == {"ecdf_tail.score": 1, "sequence_autoencoder.score": 1, "forward": 1}
    alone_reasons, by_reasons = counting(lambda: ensemble.reasons(X, top_n=3))
    assert by_reasons["sequence_autoencoder.score_and_reasons"] == 1 and by_reasons["forward"] == 1
    np.testing.assert_array_equal(scores, alone_scores)
    assert reasons == alone_reasons and any(reasons)
    assert {r.kind for rs in reasons for r in rs} == {"feature", "event"}
    # the one-line refusals of the wrong input stay
    with pytest.raises(UserError, match="sequence member"):
        ensemble.score_and_reasons(X.table)
    with pytest.raises(UserError, match="not the same users"):
        ensemble.score_and_reasons(type(X)(X.table.iloc[:10], X.sequences))
