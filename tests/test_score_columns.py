"""The score step reads only the columns its model scores (plus the ids and, for
score.active_within_days, the recency): the same scores and reasons as from the whole table."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines import io, stages
from pipelines.config import default_params
from pipelines.detectors import make_detector
from pipelines.score import score_users

DAY = "2026-11-21"


def _features(normal_features: pd.DataFrame) -> pd.DataFrame:
    frame = normal_features.copy()
    frame.insert(0, "user_id", [f"u{i}" for i in range(len(frame))])
    frame["days_since_last_event"] = np.arange(len(frame)) % 30.0
    frame["not_in_the_model"] = np.nan  # a column the model was not trained on
    frame.attrs["as_of"] = DAY
    return frame


def test_feature_batches_read_only_the_asked_columns_in_the_files_order(tmp_path, normal_features):
    path = str(tmp_path / "features.parquet")
    io.write_parquet(_features(normal_features), path)
    with stages._feature_batches(path, DAY, 150, ["typical_gap_s_1d", "user_id", "absent", "n_view_1d"]) as batches:
        parts = list(batches)
    assert [len(p) for p in parts] == [150, 150, 100]
    assert all(list(p.columns) == ["user_id", "n_view_1d", "typical_gap_s_1d"] for p in parts)
    with stages._feature_batches(path, DAY, 1000) as batches:
        assert list(next(batches).columns) == list(_features(normal_features).columns)


def test_scoring_columns_give_the_scores_of_the_whole_table(tmp_path, normal_features):
    features = _features(normal_features)
    detector = make_detector("ecdf_tail").fit(features[normal_features.columns[:4]])
    params = default_params()["score"]
    assert stages._scoring_columns(detector, params) == ["user_id", *normal_features.columns[:4]]
    active = {**params, "active_within_days": 7}
    assert stages._scoring_columns(detector, active)[-1] == "days_since_last_event"
    path = str(tmp_path / "features.parquet")
    io.write_parquet(features, path)
    with stages._feature_batches(path, DAY, 150, stages._scoring_columns(detector, params)) as batches:
        read = pd.concat(list(batches), ignore_index=True)
    assert "not_in_the_model" not in read.columns
    whole = score_users(features.drop(columns="days_since_last_event"), detector, params, DAY)
    pruned = score_users(read, detector, params, DAY)
    pd.testing.assert_frame_equal(pruned, whole)
    assert whole["score"].to_numpy().tobytes() == pruned["score"].to_numpy().tobytes()
