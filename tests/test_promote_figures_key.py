"""figures_key, which lets the gate take train's figures instead of measuring them again: the
same inputs give the same key wherever they lie; any change to what the figures depend on gives
another, even a file replaced by one of the same size and modification time."""
from __future__ import annotations

import os
import shutil

import pandas as pd

from pipelines.config import default_params, override
from pipelines.promote import figures_key


def test_figures_key_follows_the_bytes_and_the_sections(tmp_path, sim_features):
    params = default_params()
    features = tmp_path / "features.parquet"
    sim_features.to_parquet(features, index=False)
    key = figures_key(str(features), None, params)

    moved = tmp_path / "elsewhere" / "features.parquet"
    moved.parent.mkdir()
    shutil.copy(features, moved)
    assert figures_key(str(moved), None, params) == key
    assert figures_key(str(features), None, params, str(tmp_path / "no_sequences.parquet")) == key

    # one byte of another value, same size, same times: what a stat-based key would take for the same file
    stat = features.stat()
    data = bytearray(features.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF
    replaced = tmp_path / "replaced.parquet"
    replaced.write_bytes(bytes(data))
    os.replace(replaced, features)
    os.utime(features, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert features.stat().st_size == stat.st_size and features.stat().st_mtime_ns == stat.st_mtime_ns
    assert figures_key(str(features), None, params) != key
    shutil.copy(moved, features)

    labels = tmp_path / "labels.parquet"
    pd.DataFrame({"user_id": sim_features["user_id"], "is_anomaly": False}).to_parquet(labels, index=False)
    sequences = tmp_path / "sequences.parquet"
    pd.DataFrame({"user_id": sim_features["user_id"]}).to_parquet(sequences, index=False)
    others = {
        "labels": figures_key(str(features), str(labels), params),
        "sequences": figures_key(str(features), None, params, str(sequences)),
        "holdout": figures_key(str(features), None, override(params, "train.split_seed", 1)),
        "flagging": figures_key(str(features), None, override(params, "score.top_k", 7)),
    }
    assert figures_key(str(features), None, params) == key
    assert len(set(others.values()) | {key}) == len(others) + 1, others
