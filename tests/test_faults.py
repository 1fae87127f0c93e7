"""Faults: a step killed part-way (SIGKILL) leaves the previous outputs intact and a rerun
completes; a full disk or a failing write is one clear error line, never a half-written file.

The kill is deterministic, not a sleep race: each step runs in a child process through a small
wrapper (`KILLER`, no hook in the pipeline's code) that replaces os.replace and os.rename, the
calls every atomic write of pipelines.io ends with, and SIGKILLs the process itself at the first
rename whose destination contains $FAULT_KILL_AT: the new output is complete in its temporary
file and the old one is still in place, the last instant before the switch. For the warehouse
the wrapper stops inside the publish transaction instead (warehouse._checkpoint).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

DAY = "2026-11-21"
REPO = Path(__file__).resolve().parents[1]

# The child: patch the renames (and the warehouse's checkpoint), then run `python -m pipelines`.
KILLER = r"""
import os, signal, sys, runpy
where = os.environ["FAULT_KILL_AT"]
mark = os.environ["FAULT_MARK"]

def die(what):
    with open(mark, "w") as fh:
        fh.write(what)
    os.kill(os.getpid(), signal.SIGKILL)

def patched(real):
    def rename(src, dst, *args, **kwargs):
        if where in os.fspath(dst):
            die(os.fspath(dst))
        return real(src, dst, *args, **kwargs)
    return rename

os.replace, os.rename = patched(os.replace), patched(os.rename)
if where.startswith("checkpoint:"):
    import pipelines.warehouse as warehouse
    real_checkpoint = warehouse._checkpoint
    def checkpoint(stage):
        if stage == where.split(":", 1)[1]:
            die(where)
        real_checkpoint(stage)
    warehouse._checkpoint = checkpoint
sys.argv = ["python -m pipelines", *sys.argv[1:]]
runpy.run_module("pipelines", run_name="__main__", alter_sys=True)
"""


def cli(root: Path, *args: str, kill_at: str | None = None, preexec=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PIPELINES_RUN_ID": "faults"}
    if kill_at is None:
        command = [sys.executable, "-m", "pipelines", "--params", str(root / "params.yaml"), *args]
    else:
        env.update(FAULT_KILL_AT=kill_at, FAULT_MARK=str(root / "killed_at"))
        command = [sys.executable, "-c", KILLER, "--params", str(root / "params.yaml"), *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=preexec)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under the run's folders, by relative path (the warehouse and the
    wrapper's marker aside: the warehouse is compared by its rows)."""
    out = {}
    for folder in ("data", "reports", "models"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and not path.name.endswith(".lock"):
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# io's temporary files and folders: .<name>.<host>_<pid>.<random>
TEMP = re.compile(r"^\..+\.[A-Za-z0-9-]+_\d+\.")


def hidden(paths) -> list[str]:
    """Paths inside or at a temporary file or folder of io."""
    return [p for p in paths if any(TEMP.match(part) for part in Path(p).parts)]


def warehouse_rows(root: Path) -> pd.DataFrame:
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:  # read-write: replays a WAL a kill left
        return con.sql("SELECT * FROM flagged_users ORDER BY as_of, rank").to_arrow_table().to_pandas()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A small simulated month, and every step run once: the previous good outputs."""
    from pipelines.simulate import simulate

    root = tmp_path_factory.mktemp("faults")
    events, labels = simulate({"n_users": 300, "days": 6, "seed": 9, "end_date": DAY, "anomaly_rate": 0.05})
    events.to_parquet(root / "events.parquet", index=False)
    labels.to_parquet(root / "labels.parquet", index=False)
    params = {
        "as_of": DAY,
        "storage": {"data": str(root / "data"), "reports": str(root / "reports"), "models": str(root / "models")},
        "ingest": {"source": str(root / "events.parquet")},
        "features": {"threads": 1},
        "sequences": {"threads": 1},
        "score": {"top_k": 15},
        "warehouse": {"url": f"duckdb:///{root / 'warehouse.duckdb'}"},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for step in STEPS:
        ok(cli(root, *step.args(root)))
    return root


class Step:
    def __init__(self, name: str, args, kill_at: str, output: str | None, before=None):
        self.name, self._args, self.kill_at, self.output, self.before = name, args, kill_at, output, before

    def args(self, root: Path) -> list[str]:
        return self._args(root) if callable(self._args) else list(self._args)


def part(dataset: str, name: str) -> str:
    return f"data/{dataset}/as_of={DAY}/{name}"


def new_detector_params(root: Path) -> None:
    """Another setting of the detector than any before it (top_signals 4, then 3, 2: the default
    is 5), so that train makes a version the registry lacks each time it is called."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    previous = params.get("train", {}).get("ecdf_tail", {}).get("top_signals")
    top = 4 if previous is None else previous - 1
    assert top >= 1, "no setting left that the registry lacks"
    params.setdefault("train", {})["ecdf_tail"] = {"top_signals": top, "group_windows": True}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def champion(root: Path) -> str:
    return json.loads((root / "models" / "champion.json").read_text())["version"]


def trained(root: Path) -> str:
    return json.loads((root / "reports" / f"as_of={DAY}" / "train.json").read_text())["model_version"]


def trained_challenger(root: Path) -> None:
    """The promote case's precondition: the day's last train made a version that is not the
    champion (the train case leaves one; run alone, the case trains one here)."""
    if trained(root) == champion(root):
        new_detector_params(root)
        ok(cli(root, "train"))
    assert trained(root) != champion(root)


def scores_of_a_new_champion(root: Path) -> None:
    """The publish case's precondition: the day's scores are by another model than the
    warehouse's rows of the day (the train, promote and score cases leave them; run alone, the
    case makes them here), so that the rerun's rows can be told from the killed run's."""
    published = set(warehouse_rows(root)["model_version"])
    if set(pd.read_parquet(root / part("scores", "scores.parquet"), columns=["model_version"])["model_version"]) \
            == published:
        trained_challenger(root)
        ok(cli(root, "promote", "--force"))
        ok(cli(root, "score"))
    scored = set(pd.read_parquet(root / part("scores", "scores.parquet"), columns=["model_version"])["model_version"])
    assert scored == {champion(root)} and not scored & published, (scored, published)


STEPS = [
    Step("ingest", ["ingest"], part("ingested", "events.parquet"), part("ingested", "events.parquet")),
    Step("clean", ["clean"], part("clean", "events.parquet"), part("clean", "events.parquet")),
    Step("validate", lambda root: ["validate", "--suite", "clean", "--data", str(root / part("clean", "events.parquet")),
                                   "--report-dir", str(root / "reports" / "cli_validation")],
         "cli_validation/clean.json", "reports/cli_validation/clean.json"),
    Step("features", ["features"], part("features", "features.parquet"), part("features", "features.parquet")),
    Step("sequences", ["sequences"], part("sequences", "sequences.parquet"), part("sequences", "sequences.parquet")),
    # a new model version: killed as its folder is moved into the registry
    Step("train", ["train"], "models/registry/", None, before=new_detector_params),
    Step("evaluate", lambda root: ["evaluate", "--labels", str(root / "labels.parquet")],
         f"as_of={DAY}/metrics.json", f"reports/as_of={DAY}/metrics.json"),
    # killed as the champion pointer is replaced
    Step("promote", ["promote", "--force"], "models/champion.json", "models/champion.json",
         before=trained_challenger),
    Step("score", ["score"], part("scores", "scores.parquet"), part("scores", "scores.parquet")),
    Step("report", ["report"], f"as_of={DAY}/report.html", f"reports/as_of={DAY}/report.html"),
    # killed inside the publish transaction, after the day's old rows are deleted and the new ones copied in
    Step("publish", ["publish"], "checkpoint:before_commit", f"reports/as_of={DAY}/publish.json",
         before=scores_of_a_new_champion),
]


@pytest.mark.parametrize("step", STEPS, ids=[s.name for s in STEPS])
def test_a_step_killed_part_way_leaves_the_previous_outputs_and_a_rerun_completes(run, step):
    root = run
    if step.before:
        step.before(root)
    before = snapshot(root)
    rows_before = warehouse_rows(root)
    champion_before = champion(root)
    versions_before = sorted(p.name for p in (root / "models" / "registry").iterdir() if not p.name.startswith("."))
    (root / "killed_at").unlink(missing_ok=True)

    killed = cli(root, *step.args(root), kill_at=step.kill_at)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    assert step.kill_at in (root / "killed_at").read_text(), "killed somewhere else"

    after = snapshot(root)
    if step.output is not None:
        assert after[step.output] == before[step.output], f"{step.output} changed by a killed {step.name}"
    # files the step had finished before the kill are whole (a completed rename), the others untouched
    for path, digest in after.items():
        if hidden([path]):
            continue
        if path in before and digest != before[path]:
            _readable(root / path)
    # what the kill left half-done is hidden: no new visible output is a temporary file
    assert not [p for p in after if p not in before and not hidden([p]) and ".tmp" in p]
    # the registry shows no new version and the champion did not move
    versions = sorted(p.name for p in (root / "models" / "registry").iterdir() if not p.name.startswith("."))
    assert versions == versions_before
    assert champion(root) == champion_before
    # the warehouse still has the day's previous rows, all of them
    pd.testing.assert_frame_equal(warehouse_rows(root), rows_before)

    ok(cli(root, *step.args(root)))
    rerun = snapshot(root)
    if step.output is not None:
        _readable(root / step.output)
    # the rerun swept what the killed writer left behind
    assert not hidden(rerun), hidden(rerun)
    if step.name == "train":
        assert len([p for p in (root / "models" / "registry").iterdir()]) == len(versions_before) + 1
    if step.name == "promote":
        assert champion(root) == trained(root) != champion_before
    if step.name == "publish":
        rows = warehouse_rows(root)
        assert len(rows) == 15 and rows["as_of"].astype(str).eq(DAY).all()
        assert rows["model_version"].eq(champion(root)).all()  # the new champion's
        assert rows["model_version"].ne(rows_before["model_version"].iloc[0]).all()


def _readable(path: Path) -> None:
    if path.suffix == ".parquet":
        pd.read_parquet(path)
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".html":
        assert path.read_text().rstrip().endswith("</html>")


def test_a_write_removes_the_temporary_files_of_dead_writers_only(tmp_path):
    from pipelines import io

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, live_pid = int(gone.stdout), os.getppid()
    target = tmp_path / "scores.parquet"
    dead = tmp_path / f".scores.parquet.{io._HOST}_{dead_pid}.abc.parquet"
    dead_dir = tmp_path / f".scores.parquet.{io._HOST}_{dead_pid}.xyz"
    live = tmp_path / f".scores.parquet.{io._HOST}_{live_pid}.def.parquet"
    elsewhere = tmp_path / f".scores.parquet.otherhost_{dead_pid}.ghi.parquet"
    other_target = tmp_path / f".scores.parquet.bak.{io._HOST}_{dead_pid}.jkl.parquet"
    for path in (dead, live, elsewhere, other_target):
        path.write_bytes(b"half")
    dead_dir.mkdir()
    (dead_dir / "meta.json").write_text("{}")
    io.write_parquet(pd.DataFrame({"a": [1]}), target)
    assert not dead.exists() and not dead_dir.exists()
    assert live.exists() and elsewhere.exists() and other_target.exists()
    assert pd.read_parquet(target)["a"].tolist() == [1]


# ----------------------------------------------------------------------------- full disks, failing writes


def file_size_limit(limit: int):
    """preexec_fn: writes past `limit` bytes of a file fail with EFBIG (as a full disk fails with
    ENOSPC), for root too; SIGXFSZ ignored so the write returns the error instead of killing."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def test_a_write_past_the_file_size_limit_is_one_error_line_and_keeps_the_previous_file(run):
    root = run
    folder = root / "reports" / f"as_of={DAY}"
    output = folder / "report.html"
    before = output.read_bytes()
    # the limit stops report.html and nothing the report step writes before it (the drift figures)
    limit = len(before) - 1
    assert max((folder / n).stat().st_size for n in ("drift.json", "drift.parquet")) < limit
    proc = cli(root, "report", preexec=file_size_limit(limit))
    assert proc.returncode == 74, proc.stderr[-3000:]
    line = one_error_line(proc)
    assert line.startswith(f"error: cannot write {output}: file too large"), line
    assert "ulimit -f" in line and f"{output} is unchanged" in line
    assert output.read_bytes() == before
    assert not hidden(p.name for p in folder.iterdir()), list(folder.iterdir())


def test_a_full_warehouse_file_is_one_error_line_and_keeps_the_days_rows(run):
    root = run
    rows_before = warehouse_rows(root)
    publish_json = root / "reports" / f"as_of={DAY}" / "publish.json"
    previous = publish_json.read_bytes()
    # the day's rows go to the write-ahead log first: it is the file that cannot grow
    proc = cli(root, "publish", preexec=file_size_limit(1024))
    assert proc.returncode == 74, proc.stderr[-3000:]
    line = one_error_line(proc)
    assert "warehouse.duckdb" in line and "file too large" in line, line
    pd.testing.assert_frame_equal(warehouse_rows(root), rows_before)
    assert publish_json.read_bytes() == previous


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "no space left on the device; {target} is unchanged: free space"),
    (errno.EDQUOT, "disk quota exceeded"),
    (errno.EROFS, "the file system is read-only"),
    (errno.EACCES, "permission denied"),
])
def test_write_errors_leave_no_half_written_file(tmp_path, monkeypatch, code, words):
    """The kernel's other refusals, injected half-way through writing the temporary file (a full
    disk cannot be made without mounting one; chmod does not stop root)."""
    from pipelines import io
    from pipelines.errors import OutputWriteError

    target = tmp_path / "out" / "report.json"
    io.write_json({"day": 1}, target)
    previous = target.read_bytes()
    real = Path.write_bytes

    def half_then_fail(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OutputWriteError) as info:
        io.write_json({"day": 2, "padding": "x" * 1000}, target)
    message = str(info.value)
    assert message.startswith(f"cannot write {target}: ") and words.format(target=target) in message
    assert "\n" not in message
    assert target.read_bytes() == previous
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_an_unrelated_os_error_is_not_dressed_up_as_a_write_error(tmp_path, monkeypatch):
    from pipelines import io

    def broken(self, data):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "write_bytes", broken)
    with pytest.raises(OSError) as info:
        io.write_json({}, tmp_path / "x.json")
    assert info.value.errno == errno.EIO
    assert list(tmp_path.iterdir()) == []


def test_the_cli_finds_a_refused_write_behind_other_errors():
    import shutil

    from pipelines.errors import write_failure

    copy = shutil.Error([("/a/src.gif", "/tmp/snap/src.gif", "[Errno 28] No space left on device: '/a/src.gif'")])
    assert str(write_failure(copy)).startswith("cannot write /tmp/snap/src.gif: no space left on the device: free")
    # DuckDB's failed commit, masked by the ROLLBACK that followed it
    try:
        try:
            raise RuntimeError('Failed to commit: Could not write file "/w/wh.duckdb.wal": Disk quota exceeded')
        except RuntimeError:
            raise RuntimeError("cannot rollback - no transaction is active")
    except RuntimeError as exc:
        assert str(write_failure(exc)).startswith("cannot write /w/wh.duckdb.wal: disk quota exceeded: ")
    assert write_failure(ValueError("bad value")) is None
    assert write_failure(OSError(errno.EIO, "Input/output error")) is None


@pytest.mark.parametrize("step, output", [("features", "features.parquet"), ("score", "scores.parquet")])
def test_a_failing_suite_leaves_the_previous_file_though_it_was_written_meanwhile(run, monkeypatch, step, output):
    """features_stage and score_stage encode their file while their suite runs: a suite that
    fails after the encoding finished still leaves the previous day's file, and no temporary one."""
    from pipelines import stages
    from pipelines.config import load_params
    from pipelines.errors import ValidationFailed

    root = run
    params = load_params(str(root / "params.yaml"))
    target = root / "data" / step.replace("score", "scores") / f"as_of={DAY}" / output
    # a rerun of the day writes the same bytes: the previous file is marked, to tell them apart
    original = target.read_bytes()
    target.write_bytes(b"the previous file")
    before = snapshot(root)
    encoded = pd.DataFrame.to_parquet
    written = []

    def recorded(self, path, *args, **kwargs):
        encoded(self, path, *args, **kwargs)
        written.append(Path(path).name)

    def fails_once_written(df, suite, validation_dir, **options):
        if suite in ("features", "scores"):
            for _ in range(500):  # the encoding runs meanwhile; fail only after it has finished
                if any(name.endswith(".parquet") for name in written):
                    break
                time.sleep(0.01)
            raise ValidationFailed(f"validation '{suite}' failed")
        return {"evaluated": 0, "failed": 0}

    monkeypatch.setattr(pd.DataFrame, "to_parquet", recorded)
    monkeypatch.setattr(stages, "check", fails_once_written)
    try:
        with pytest.raises(ValidationFailed):
            getattr(stages, f"{step}_stage")(params, DAY)
        assert written, "the file was not encoded while the suite ran"
        assert snapshot(root) == before
        assert not hidden(str(p) for p in target.parent.rglob("*"))
    finally:  # the module's other tests start from the run's own outputs
        target.write_bytes(original)
