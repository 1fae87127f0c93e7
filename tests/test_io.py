"""Writes are atomic (a failing writer leaves the previous good output), and s3:// works both ways."""
from __future__ import annotations

import pandas as pd
import pytest

from pipelines import io
from pipelines.errors import UserError


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out" / "scores.parquet"
    io.write_parquet(pd.DataFrame({"a": [1, 2]}), target)
    with pytest.raises(RuntimeError):
        with io.atomic_path(target, ".parquet") as tmp:
            pd.DataFrame({"a": [9]}).to_parquet(tmp)
            raise RuntimeError("killed half way")
    assert pd.read_parquet(target)["a"].tolist() == [1, 2]
    assert sorted(p.name for p in target.parent.iterdir()) == ["scores.parquet"]


def test_unwritable_frame_keeps_previous_json(tmp_path):
    target = tmp_path / "metrics.json"
    io.write_json({"roc_auc": 0.9}, target)
    with pytest.raises(TypeError):
        io.write_json({"bad": object.__new__(type("NoStr", (), {"__str__": None}))}, target)
    assert io.read_json(target) == {"roc_auc": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_failed_directory_swap_keeps_previous_model(tmp_path):
    model = tmp_path / "models" / "detector"
    with io.atomic_dir(model) as tmp:
        (tmp / "meta.json").write_text("v1")
    with pytest.raises(RuntimeError):
        with io.atomic_dir(model) as tmp:
            (tmp / "meta.json").write_text("v2")
            raise RuntimeError("killed")
    assert (model / "meta.json").read_text() == "v1"
    with io.atomic_dir(model) as tmp:
        (tmp / "meta.json").write_text("v3")
    assert (model / "meta.json").read_text() == "v3"
    assert sorted(p.name for p in model.parent.iterdir()) == ["detector"]


def test_parquet_round_trip_through_s3(s3):
    frame = pd.DataFrame({"user_id": ["u1", "u2"], "score": [0.5, 0.1]})
    io.write_parquet(frame, "s3://events/scores/2026-11-21/scores.parquet")
    with io.local_copy("s3://events/scores/2026-11-21/scores.parquet") as path:
        back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, frame)


def test_s3_errors_are_one_line_user_errors(s3):
    with pytest.raises(UserError, match="cannot download"):
        with io.local_copy("s3://events/missing.parquet"):
            pass
    with pytest.raises(UserError, match="bucket and a key"):
        with io.local_copy("s3://only-a-bucket"):
            pass


@pytest.mark.parametrize("name, fmt", [("a.parquet", "parquet"), ("a.csv.gz", "csv"), ("A.CSV", "csv")])
def test_detect_format(name, fmt):
    assert io.detect_format(name) == fmt


def test_detect_format_rejects_unknown():
    with pytest.raises(UserError, match="csv or .parquet"):
        io.detect_format("events.xlsx")
