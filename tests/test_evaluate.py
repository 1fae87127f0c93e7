"""pipelines.evaluate (and the holdout split it shares with train): metrics on held-out users only."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.errors import UserError
from pipelines.evaluate import check_labels, evaluate, read_labels
from pipelines.split import holdout_mask

SPLIT = {"holdout_fraction": 0.3, "split_seed": 0}
TYPES = ["refund_abuse", "card_testing", ""]


@pytest.fixture
def population():
    """400 users, every 5th an abuser (types cycle, one in three unspecified), and the held-out mask."""
    ids = pd.Series([f"u{i:04d}" for i in range(400)], dtype="str")
    is_anomaly = (np.arange(400) % 5 == 0).astype(int)
    types = [TYPES[(i // 5) % 3] if a else "" for i, a in enumerate(is_anomaly)]
    labels = pd.DataFrame({"user_id": ids, "is_anomaly": is_anomaly, "anomaly_type": types})
    held = holdout_mask(ids, SPLIT["holdout_fraction"], SPLIT["split_seed"])
    return labels, held


def scores_frame(ids, score, flagged) -> pd.DataFrame:
    return pd.DataFrame({"user_id": ids, "score": np.asarray(score, dtype="float64"),
                         "flagged": np.asarray(flagged, dtype=bool)})


def test_metric_keys_and_ranges(population):
    labels, _ = population
    rng = np.random.default_rng(0)
    score = rng.random(400) + labels["is_anomaly"] * 0.5
    metrics, _ = evaluate(scores_frame(labels["user_id"], score, score > 1.2), labels, SPLIT)
    for key in ("roc_auc", "pr_auc", "precision_at_k", "recall_at_k", "recall_per_type"):
        assert key in metrics
    for key in ("roc_auc", "pr_auc", "precision_at_k", "recall_at_k"):
        assert 0.0 <= metrics[key] <= 1.0
    assert 0.5 < metrics["roc_auc"] < 1.0
    assert isinstance(metrics["recall_per_type"], dict)


def test_perfect_and_reversed_scores(population):
    labels, held = population
    y = labels["is_anomaly"].to_numpy()
    perfect, _ = evaluate(scores_frame(labels["user_id"], y + 0.001 * np.arange(400), y == 1), labels, SPLIT)
    assert perfect["roc_auc"] == 1.0 and perfect["pr_auc"] == pytest.approx(1.0)
    assert perfect["precision_at_k"] == 1.0 and perfect["recall_at_k"] == 1.0
    assert perfect["k"] == int((y[held] == 1).sum())
    assert all(v == 1.0 for v in perfect["recall_per_type"].values())
    reversed_, _ = evaluate(scores_frame(labels["user_id"], -y, y == 0), labels, SPLIT)
    assert reversed_["roc_auc"] == 0.0 and reversed_["precision_at_k"] == 0.0 and reversed_["recall_at_k"] == 0.0


def test_only_held_out_users_count(population):
    labels, held = population
    y = labels["is_anomaly"].to_numpy()
    held_abusers = np.where(held & (y == 1))[0]
    held_normals = np.where(held & (y == 0))[0]
    flagged = np.zeros(400, dtype=bool)
    flagged[~held & (y == 1)] = True  # every training-side abuser: must not count
    flagged[~held & (y == 0)] = True  # nor these false alarms
    flagged[held_abusers[: len(held_abusers) // 2]] = True
    flagged[held_normals[:3]] = True
    hits = len(held_abusers) // 2
    metrics, _ = evaluate(scores_frame(labels["user_id"], flagged.astype(float), flagged), labels, SPLIT)
    assert metrics["holdout_users"] == int(held.sum())
    assert metrics["holdout_anomalies"] == len(held_abusers)
    assert metrics["k"] == hits + 3
    assert metrics["recall_at_k"] == pytest.approx(hits / len(held_abusers))
    assert metrics["precision_at_k"] == pytest.approx(hits / (hits + 3))


def test_recall_per_type(population):
    labels, held = population
    types = labels["anomaly_type"].where(labels["is_anomaly"] == 1)
    flagged = (labels["anomaly_type"] == "refund_abuse").to_numpy().copy()  # every refund abuser
    card = np.where(held & (types == "card_testing").to_numpy())[0]
    flagged[card[:1]] = True  # one held-out card tester
    metrics, _ = evaluate(scores_frame(labels["user_id"], flagged.astype(float), flagged), labels, SPLIT)
    per_type = metrics["recall_per_type"]
    assert set(per_type) == {"refund_abuse", "card_testing", "unspecified"}  # empty type -> "unspecified"
    assert per_type["refund_abuse"] == 1.0
    assert per_type["card_testing"] == pytest.approx(1 / len(card))
    assert per_type["unspecified"] == 0.0
    held_types = types[held].dropna().replace("", "unspecified").value_counts().to_dict()
    assert metrics["users_per_type"] == held_types
    assert set(metrics["roc_auc_per_type"]) == set(per_type)


def test_unlabelled_and_unscored_users(population):
    labels, held = population
    y = labels["is_anomaly"].to_numpy()
    scores = scores_frame(labels["user_id"], y, y == 1)
    # drop the labels of two held-out normal users; drop the scores of five users
    unlabelled = labels["user_id"][held & (y == 0)].iloc[:2]
    partial_labels = labels.loc[~labels["user_id"].isin(unlabelled)]
    unscored = scores["user_id"].iloc[-5:]
    metrics, _ = evaluate(scores.loc[~scores["user_id"].isin(unscored)], partial_labels, SPLIT)
    assert metrics["holdout_users_without_label"] == 2
    assert metrics["labelled_users_not_scored"] == 5
    assert metrics["roc_auc"] == 1.0  # unlabelled count as normal, and they score 0


def test_plots(population):
    labels, held = population
    rng = np.random.default_rng(1)
    score = rng.random(400) + labels["is_anomaly"].to_numpy()
    _, plots = evaluate(scores_frame(labels["user_id"], score, score > 1.5), labels, SPLIT)
    assert set(plots) == {"precision_recall", "roc", "score_histogram"}
    assert all(set(p) == {"recall", "precision"} for p in plots["precision_recall"])
    assert all(set(p) == {"fpr", "tpr"} for p in plots["roc"])
    assert all(set(p) == {"score", "normal", "anomalous"} for p in plots["score_histogram"])
    roc = plots["roc"]
    assert (roc[0]["fpr"], roc[0]["tpr"]) == (0.0, 0.0) and (roc[-1]["fpr"], roc[-1]["tpr"]) == (1.0, 1.0)
    assert 2 <= len(roc) <= 400 and len(plots["precision_recall"]) <= 400
    hist = plots["score_histogram"]
    y = labels["is_anomaly"].to_numpy()[held]
    assert sum(h["normal"] for h in hist) == int((y == 0).sum())
    assert sum(h["anomalous"] for h in hist) == int((y == 1).sum())
    assert [h["score"] for h in hist] == sorted(h["score"] for h in hist)


@pytest.mark.parametrize("bad", [2, "yes", None, 0.5, -1])
def test_bad_is_anomaly_is_a_user_error(population, bad):
    labels, _ = population
    labels = labels.astype({"is_anomaly": "object"})
    labels.loc[7, "is_anomaly"] = bad
    scores = scores_frame(labels["user_id"], np.zeros(400), np.zeros(400))
    with pytest.raises(UserError, match="is_anomaly must be 0 or 1"):
        evaluate(scores, labels, SPLIT)


@pytest.mark.parametrize("column", ["user_id", "is_anomaly"])
def test_missing_label_columns_are_user_errors(population, column):
    labels, _ = population
    scores = scores_frame(labels["user_id"], np.zeros(400), np.zeros(400))
    with pytest.raises(UserError, match=column):
        evaluate(scores, labels.drop(columns=column), SPLIT)


def test_labels_without_anomaly_type_and_as_text(population):
    labels, _ = population
    text = labels.drop(columns="anomaly_type").astype("str")  # as read from a CSV without the column
    checked = check_labels(text)
    assert checked["is_anomaly"].tolist() == labels["is_anomaly"].tolist()
    assert (checked["anomaly_type"] == "").all()
    y = labels["is_anomaly"].to_numpy()
    metrics, _ = evaluate(scores_frame(labels["user_id"], y, y == 1), text, SPLIT)
    assert set(metrics["recall_per_type"]) == {"unspecified"}


def test_duplicate_labels_are_a_user_error(population):
    labels, _ = population
    with pytest.raises(UserError, match="more than one row"):
        check_labels(pd.concat([labels, labels.iloc[[3]]]))


def test_held_out_users_need_both_classes(population):
    labels, _ = population
    normal = labels.assign(is_anomaly=0)
    with pytest.raises(UserError, match="both"):
        evaluate(scores_frame(labels["user_id"], np.zeros(400), np.zeros(400)), normal, SPLIT)


def test_read_labels_csv_and_parquet(population, tmp_path):
    labels, _ = population
    labels.to_csv(tmp_path / "labels.csv", index=False)
    labels.to_parquet(tmp_path / "labels.parquet", index=False)
    from_csv = read_labels(str(tmp_path / "labels.csv"))
    from_parquet = read_labels(str(tmp_path / "labels.parquet"))
    pd.testing.assert_frame_equal(from_csv, from_parquet)
    assert from_csv["user_id"].tolist() == labels["user_id"].tolist()
    assert from_csv["anomaly_type"].tolist() == labels["anomaly_type"].tolist()


def test_holdout_mask_is_a_stable_hash():
    ids = pd.Series([f"user-{i}" for i in range(5000)], dtype="str")
    mask = holdout_mask(ids, 0.3)
    assert 0.27 < mask.mean() < 0.33
    # the same user lands on the same side whatever the order or the company
    shuffled = ids.sample(frac=1.0, random_state=0)
    assert (holdout_mask(shuffled, 0.3) == mask[shuffled.index.to_numpy()]).all()
    assert (holdout_mask(ids.iloc[:100], 0.3) == mask[:100]).all()
    assert not holdout_mask(ids, 0.0).any()
    assert (holdout_mask(ids, 0.3, seed=1) != mask).any()
    with pytest.raises(UserError, match="holdout_fraction"):
        holdout_mask(ids, 1.0)


def test_end_to_end_on_simulated_users(sim, sim_features):
    from pipelines.score import score_users
    from pipelines.train import train

    split = {"holdout_fraction": 0.3, "split_seed": 0}
    det, info = train(sim_features, {"detector": "isolation_forest", "isolation_forest": {"n_estimators": 100},
                                     **split})
    scores = score_users(sim_features, det, {"top_k": 40}, sim_features.attrs["as_of"])
    metrics, plots = evaluate(scores, sim[1], split)
    # evaluation is on exactly the users training did not see
    assert metrics["holdout_users"] == info["users_held_out"]
    assert info["users_trained_on"] + info["users_held_out"] == info["users_total"] == len(scores)
    assert metrics["labelled_users_not_scored"] == len(sim[1]) - len(scores)
    assert metrics["roc_auc"] > 0.75
    assert metrics["k"] == int(scores["flagged"].to_numpy()[holdout_mask(scores["user_id"], 0.3)].sum())
