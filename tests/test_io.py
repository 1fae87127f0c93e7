"""Writes are atomic (a failing writer leaves the previous good output), and local paths and s3://
(a moto server on 127.0.0.1) go through the same calls."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pathlib
import shutil
import socket
import threading
import time

import pandas as pd
import pytest

from pipelines import io
from pipelines.errors import OutputWriteError, UserError


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


# --- one storage layer: the same calls on local paths and on s3:// ------------------------------------


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    """A folder that does not exist yet: under tmp_path, or under s3://events/ on the moto server."""
    if request.param == "local":
        return str(tmp_path / "store")
    request.getfixturevalue("s3")
    return "s3://events/store"


def _one_line_user_error(excinfo, uri: str) -> None:
    message = str(excinfo.value)
    assert message.startswith(uri) and "\n" not in message


def test_join_uses_slashes_for_uris_and_os_path_for_local_paths(tmp_path):
    assert io.join("s3://events/base", "models", "abc/", "meta.json") == "s3://events/base/models/abc/meta.json"
    assert io.join("s3://events/base/", "/a", "", "b") == "s3://events/base/a/b"
    assert io.join("s3://events", "x.json") == "s3://events/x.json"
    assert io.join("memory://root", "a") == "memory://root/a"
    joined = io.join(tmp_path, "models", pathlib.Path("abc"), "meta.json")
    assert isinstance(joined, str) and joined == os.path.join(str(tmp_path), "models", "abc", "meta.json")
    assert io.join("relative", "x") == os.path.join("relative", "x")


def test_bytes_text_json_round_trip(root):
    blob = io.join(root, "raw", "blob.bin")
    assert not io.exists(blob)
    io.write_bytes(b"\x00\x01payload", blob)
    assert io.exists(blob) and io.exists(io.join(root, "raw"))
    assert io.read_bytes(blob) == b"\x00\x01payload"
    io.write_bytes(b"second", blob)  # overwrite
    assert io.read_bytes(blob) == b"second"

    note = io.join(root, "note.txt")
    io.write_text("häagen ✓\n", note)
    assert io.read_text(note) == "häagen ✓\n"
    assert io.read_bytes(note) == "häagen ✓\n".encode("utf-8")

    champion = io.join(root, "models", "champion.json")
    io.write_json({"b": 1, "a": pd.Timestamp("2026-11-21")}, champion)
    assert io.read_text(champion) == '{\n  "a": "2026-11-21 00:00:00",\n  "b": 1\n}\n'
    assert io.read_json(champion) == {"a": "2026-11-21 00:00:00", "b": 1}


def test_parquet_round_trip_with_columns(root):
    frame = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "score": [0.5, 0.1, 0.9], "rank": [2, 3, 1]})
    uri = io.join(root, "scores", "scores.parquet")
    io.write_parquet(frame, uri)
    pd.testing.assert_frame_equal(io.read_parquet(uri), frame)
    pd.testing.assert_frame_equal(io.read_parquet(uri, columns=["rank", "user_id"]), frame[["rank", "user_id"]])


def test_failed_parquet_write_keeps_previous_object(root):
    uri = io.join(root, "scores.parquet")
    io.write_parquet(pd.DataFrame({"a": [1, 2]}), uri)
    unwritable = pd.DataFrame({"a": [1, "mixed", 2.5]})  # pyarrow refuses mixed object columns
    with pytest.raises(Exception):
        io.write_parquet(unwritable, uri)
    assert io.read_parquet(uri)["a"].tolist() == [1, 2]
    assert io.listdir(root) == ["scores.parquet"]


def test_missing_files_are_one_line_user_errors(root):
    missing = io.join(root, "no", "such.parquet")
    for read in (io.read_bytes, io.read_text, io.read_json, io.read_parquet):
        with pytest.raises(UserError, match="file not found") as excinfo:
            read(missing)
        _one_line_user_error(excinfo, missing)
    with pytest.raises(UserError, match="not found") as excinfo:
        with io.get_dir(io.join(root, "no-dir")):
            pass
    _one_line_user_error(excinfo, io.join(root, "no-dir"))


def test_garbage_is_a_user_error_not_a_traceback(root):
    uri = io.join(root, "bad.parquet")
    io.write_bytes(b"not parquet at all", uri)
    with pytest.raises(UserError, match="cannot read as Parquet") as excinfo:
        io.read_parquet(uri)
    _one_line_user_error(excinfo, uri)
    with pytest.raises(UserError, match="not valid JSON"):
        io.read_json(uri)


def test_bad_uris_are_user_errors(s3):
    for call in (io.read_bytes, io.read_json, lambda u: io.write_bytes(b"x", u), lambda u: io.write_json({}, u)):
        with pytest.raises(UserError, match="bucket and a key") as excinfo:
            call("s3://only-a-bucket")
        _one_line_user_error(excinfo, "s3://only-a-bucket")
    with pytest.raises(UserError) as excinfo:
        io.read_bytes("nosuchprotocol://x/y")
    _one_line_user_error(excinfo, "nosuchprotocol://x/y")
    with pytest.raises(UserError, match="cannot upload to S3") as excinfo:
        io.write_json({"a": 1}, "s3://no-such-bucket/champion.json")
    _one_line_user_error(excinfo, "s3://no-such-bucket/champion.json")


def test_listdir_names_sorted_and_empty_when_missing(root):
    assert io.listdir(root) == []
    assert io.listdir(io.join(root, "nested", "deeper")) == []
    for name in ("b.json", "a.parquet", "sub/c.txt", "sub/deeper/d.txt", ".abc.partial/meta.json", ".x.tmp"):
        io.write_bytes(b"x", io.join(root, name))
    assert io.listdir(root) == ["a.parquet", "b.json", "sub"]  # hidden (temporary) names left out
    assert io.listdir(io.join(root, "sub")) == ["c.txt", "deeper"]
    assert io.listdir(root + "/") == ["a.parquet", "b.json", "sub"]
    with pytest.raises(UserError, match="not a directory"):
        io.listdir(io.join(root, "b.json"))


def test_remove_files_and_trees_without_error_when_missing(root):
    io.write_bytes(b"x", io.join(root, "keep.txt"))
    io.write_bytes(b"x", io.join(root, "gone.txt"))
    io.write_bytes(b"x", io.join(root, "tree", "a.txt"))
    io.write_bytes(b"x", io.join(root, "tree", "sub", "b.txt"))
    io.remove(io.join(root, "gone.txt"))
    assert not io.exists(io.join(root, "gone.txt"))
    io.remove(io.join(root, "gone.txt"))  # again: no error
    io.remove(io.join(root, "never", "was.txt"), recursive=True)
    with pytest.raises(UserError, match="recursive=True"):
        io.remove(io.join(root, "tree"))
    assert io.exists(io.join(root, "tree", "sub", "b.txt"))
    io.remove(io.join(root, "tree"), recursive=True)
    assert not io.exists(io.join(root, "tree", "sub", "b.txt"))
    assert io.listdir(root) == ["keep.txt"]


def _model_dir(path: pathlib.Path, version: str) -> pathlib.Path:
    (path / "weights").mkdir(parents=True)
    (path / "weights" / "w.npy").write_bytes(b"w" + version.encode())
    (path / "params.json").write_text('{"k": 3}')
    (path / "meta.json").write_text(f'{{"version": "{version}"}}')
    return path


def test_put_dir_get_dir_round_trip(root, tmp_path):
    source = _model_dir(tmp_path / "built" / "abc123", "v1")
    target = io.join(root, "models", "abc123")
    io.put_dir(source, target)
    assert io.listdir(io.join(root, "models")) == ["abc123"]
    assert io.listdir(target) == ["meta.json", "params.json", "weights"]
    with io.get_dir(target) as local:
        assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == [
            "meta.json", "params.json", "weights/w.npy"]
        assert (local / "weights" / "w.npy").read_bytes() == b"wv1"
        assert (local / "meta.json").read_text() == '{"version": "v1"}'
    # a sibling whose name starts with ours is not part of our directory
    io.write_bytes(b"other", io.join(root, "models", "abc1234", "meta.json"))
    with io.get_dir(target) as local:
        assert sorted(p.name for p in local.iterdir()) == ["meta.json", "params.json", "weights"]


def test_put_dir_is_a_no_op_when_already_published(root, tmp_path):
    target = io.join(root, "models", "abc123")
    io.put_dir(_model_dir(tmp_path / "first", "v1"), target)
    io.put_dir(_model_dir(tmp_path / "second", "v2"), target)  # no error; the first one stays
    assert io.read_json(io.join(target, "meta.json")) == {"version": "v1"}
    assert io.read_bytes(io.join(target, "weights", "w.npy")) == b"wv1"


def _record_s3_uploads(monkeypatch, fail_on: str | None = None) -> list[str]:
    """Patch s3fs's single-file upload (used by put_file and put) to record keys, failing on `fail_on`."""
    import s3fs

    uploads: list[str] = []
    real = s3fs.S3FileSystem._put_file

    async def recording_put_file(self, lpath, rpath, *args, **kwargs):
        if fail_on is not None and rpath.endswith(fail_on):
            raise RuntimeError(f"connection lost while uploading {rpath}")
        await real(self, lpath, rpath, *args, **kwargs)
        uploads.append(rpath)

    s3fs.S3FileSystem.clear_instance_cache()  # new instances bind the patched method
    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", recording_put_file)
    return uploads


def test_put_dir_to_s3_uploads_meta_json_last(s3, monkeypatch, tmp_path):
    for i in range(8):
        (tmp_path / "m" / "parts").mkdir(parents=True, exist_ok=True)
        (tmp_path / "m" / "parts" / f"p{i}.bin").write_bytes(bytes([i]))
    _model_dir(tmp_path / "m", "v1")
    (tmp_path / "m" / "zz.txt").write_text("sorts after meta.json")
    uploads = _record_s3_uploads(monkeypatch)
    io.put_dir(tmp_path / "m", "s3://events/models/abc")
    assert len(uploads) == 12
    assert uploads[-1] == "events/models/abc/meta.json"
    expected = ["meta.json", "params.json", *(f"parts/p{i}.bin" for i in range(8)), "weights/w.npy", "zz.txt"]
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="events")["Contents"]) == [
        f"models/abc/{name}" for name in expected]
    assert sorted(uploads) == [f"events/models/abc/{name}" for name in expected]


def test_put_dir_to_s3_failing_midway_leaves_no_meta_json(s3, monkeypatch, tmp_path):
    source = _model_dir(tmp_path / "m", "v1")
    _record_s3_uploads(monkeypatch, fail_on="weights/w.npy")
    with pytest.raises(RuntimeError, match="connection lost"):
        io.put_dir(source, "s3://events/models/abc")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="events").get("Contents", [])]
    assert "models/abc/meta.json" not in keys
    assert not io.exists("s3://events/models/abc/meta.json")


def test_put_dir_local_failure_midway_leaves_no_target(tmp_path, monkeypatch):
    source = _model_dir(tmp_path / "built", "v1")
    models = tmp_path / "models"
    real_copytree = shutil.copytree
    copied: list[str] = []

    def copy_one_then_fail(src, dst, *args, **kwargs):
        if copied:
            raise OSError(28, "No space left on device")
        copied.append(str(src))
        return shutil.copy2(src, dst, *args, **kwargs)

    def disk_fills_up(src, dst, *args, **kwargs):
        if args or "copy_function" in kwargs:  # copytree's own recursion passes its arguments on
            return real_copytree(src, dst, *args, **kwargs)
        return real_copytree(src, dst, copy_function=copy_one_then_fail, **kwargs)

    monkeypatch.setattr(shutil, "copytree", disk_fills_up)
    with pytest.raises(OutputWriteError, match=f"cannot write {models / 'abc'}: no space left"):
        io.put_dir(source, models / "abc")
    assert copied  # it did fail midway, after one file
    assert not (models / "abc").exists()
    assert os.listdir(models) == []  # no temporary folder left behind either
    monkeypatch.setattr(shutil, "copytree", real_copytree)
    io.put_dir(source, models / "abc")
    assert sorted(os.listdir(models / "abc")) == ["meta.json", "params.json", "weights"]


def test_put_dir_local_loses_race_gracefully(tmp_path, monkeypatch):
    """Another process renames its copy into place while ours is being copied: theirs stays, whole."""
    ours = _model_dir(tmp_path / "ours", "ours")
    target = tmp_path / "models" / "abc"
    real_copytree = shutil.copytree

    def copytree_while_other_publishes(src, dst, *args, **kwargs):
        result = real_copytree(src, dst, *args, **kwargs)
        if not args:  # the outer call, not copytree's own recursion into weights/
            _model_dir(tmp_path / "theirs", "theirs").rename(target)
        return result

    monkeypatch.setattr(shutil, "copytree", copytree_while_other_publishes)
    io.put_dir(ours, target)
    assert (target / "meta.json").read_text() == '{"version": "theirs"}'
    assert (target / "weights" / "w.npy").read_bytes() == b"wtheirs"
    assert os.listdir(target.parent) == ["abc"]


def test_put_dir_rejects_missing_source(tmp_path):
    with pytest.raises(UserError, match="directory not found"):
        io.put_dir(tmp_path / "nothing", tmp_path / "models" / "abc")


def _increment_under_lock(path: str, times: int) -> None:
    for _ in range(times):
        with io.lock(path):
            value = int(pathlib.Path(path).read_text())
            time.sleep(0.001)  # widen the read-decide-write window
            io.write_text(str(value + 1), path)


def test_lock_excludes_other_processes(tmp_path):
    counter = tmp_path / "state" / "counter.txt"
    io.write_text("0", counter)
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_increment_under_lock, args=(str(counter), 50)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert counter.read_text() == "100"
    assert (tmp_path / "state" / "counter.txt.lock").exists()


def test_lock_blocks_until_released(tmp_path):
    target = tmp_path / "champion.json"
    ctx = multiprocessing.get_context("fork")
    acquired = ctx.Event()

    def grab():
        with io.lock(target):
            acquired.set()

    with io.lock(target):
        child = ctx.Process(target=grab)
        child.start()
        assert not acquired.wait(0.5)  # held by us: the child waits
    assert acquired.wait(10)
    child.join(10)
    assert child.exitcode == 0


def test_lock_on_object_store_is_a_logged_no_op(s3, caplog):
    caplog.set_level(logging.DEBUG, logger="pipelines.io")
    with io.lock("s3://events/models/champion.json"):
        io.write_json({"v": 1}, "s3://events/models/champion.json")
    assert "last-writer-wins" in caplog.text
    assert io.listdir("s3://events/models") == ["champion.json"]


def test_is_local_and_is_s3(tmp_path):
    assert io.is_local(tmp_path) and io.is_local("relative/x.json") and io.is_local(f"file://{tmp_path}/x")
    assert not io.is_local("s3://events/x.json") and not io.is_local("memory://x")
    assert io.is_s3("s3://events/x.json") and not io.is_s3(tmp_path)


def test_file_uris_are_local_and_atomic(tmp_path):
    uri = f"file://{tmp_path}/out/metrics.json"
    io.write_json({"a": 1}, uri)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == {"a": 1}
    with io.local_copy(uri) as path:
        assert path == tmp_path / "out" / "metrics.json"
    assert io.listdir(f"file://{tmp_path}/out") == ["metrics.json"]


def test_a_new_endpoint_is_not_served_by_a_cached_client(s3, monkeypatch):
    """fsspec caches filesystems: the endpoint must be part of the key, or tests and MinIO users
    that switch AWS_ENDPOINT_URL would silently keep talking to the old server."""
    io.write_bytes(b"x", "s3://events/a.bin")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead_port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    # nothing listens there: a transient failure (retried by schedulers), not a user mistake
    with pytest.raises(io.TransientStorageError, match="cannot read from S3") as excinfo:
        io.read_bytes("s3://events/a.bin")
    _one_line_user_error(excinfo, "s3://events/a.bin")


def test_a_frame_read_from_parquet_can_be_assigned_into(tmp_path):
    """Zero-copy Arrow blocks are read-only; a frame the pipeline hands on must take writes."""
    path = tmp_path / "f.parquet"
    pd.DataFrame({"user_id": ["a", "b"], "x": [1.0, 2.0], "y": [3.0, 4.0]}).to_parquet(path, index=False)
    frame = io.read_parquet(path)
    frame.loc[0, "x"] = 9.0
    frame.iloc[1, 2] = float("nan")
    assert frame["x"].tolist() == [9.0, 2.0] and frame["y"].isna().tolist() == [False, True]


def test_a_local_parquet_file_is_read_into_jemalloc_or_else_the_system_pool(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.DataFrame({"user_id": ["u1", "u2", None], "n": [1.5, None, 3.0], "k": [1, 2, 3]})
    frame.attrs["as_of"] = "2026-11-30"
    path = tmp_path / "f.parquet"
    io.write_parquet(frame, str(path))
    expected = pq.read_table(path).to_pandas()
    assert io._table_pool().backend_name in ("jemalloc", "system")
    got = io.read_parquet(str(path))
    pd.testing.assert_frame_equal(got, expected)
    assert got.attrs == {"as_of": "2026-11-30"}

    def not_built():
        raise pa.ArrowNotImplementedError("jemalloc not built")

    monkeypatch.setattr(pa, "jemalloc_memory_pool", not_built)
    assert io._table_pool().backend_name == "system"
    pd.testing.assert_frame_equal(io.read_parquet(str(path), ["n"]), expected[["n"]])


def test_a_check_run_while_writing_overlaps_the_write_and_gates_the_file(root, monkeypatch):
    """write_parquet(while_writing=check): the check runs while the file is encoded, and the
    file takes its place only after the check returned; a check that raises leaves the old file."""
    target = io.join(root, "out", "features.parquet")
    io.write_parquet(pd.DataFrame({"a": [1, 2]}), target)
    checking = threading.Event()
    encode = pd.DataFrame.to_parquet

    def waits_for_the_check(self, *args, **kwargs):
        # one after the other, the write would wait here for a check that has not started
        assert checking.wait(timeout=10), "the write did not overlap the check"
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", waits_for_the_check)

    def failing_check():
        checking.set()
        time.sleep(0.2)  # the write finishes meanwhile: it must still not replace the old file
        raise ValueError("expectation failed")

    with pytest.raises(ValueError, match="expectation failed"):
        io.write_parquet(pd.DataFrame({"a": [9]}), target, while_writing=failing_check)
    assert io.read_parquet(target)["a"].tolist() == [1, 2]
    assert io.listdir(io.join(root, "out")) == ["features.parquet"]

    def passing_check():
        checking.set()
        return {"failed": 0}

    assert io.write_parquet(pd.DataFrame({"a": [7, 8, 9]}), target, while_writing=passing_check) == {"failed": 0}
    assert io.read_parquet(target)["a"].tolist() == [7, 8, 9]


def test_a_failed_write_after_a_passing_check_raises_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "scores.parquet"
    io.write_parquet(pd.DataFrame({"a": [1]}), target)

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    with pytest.raises(OutputWriteError, match="scores.parquet"):
        io.write_parquet(pd.DataFrame({"a": [2]}), target, while_writing=lambda: None)
    monkeypatch.undo()
    assert pd.read_parquet(target)["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]
