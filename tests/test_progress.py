"""Progress and logs: plain log lines with the step, the as-of date and the run id when stderr
is not a terminal, a bar when it is, nothing but warnings and the error line with -q; -v and -q
before or after the subcommand."""
from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import progress
from pipelines.progress import Progress

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO|WARNING|ERROR|DEBUG) (\w+) as_of=(\S+) run=(\S+) (.*)$")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PIPELINES_PROGRESS_SECONDS": "0", **env})


@pytest.fixture(scope="module")
def events_csv(tmp_path_factory) -> Path:
    from pipelines.simulate import simulate

    folder = tmp_path_factory.mktemp("progress")
    events, _ = simulate({"n_users": 300, "days": 6, "seed": 5, "anomaly_rate": 0.05, "end_date": "2026-11-21"})
    events = events.assign(event_time=events["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    events.to_csv(folder / "events.csv", index=False)
    return folder / "events.csv"


@pytest.fixture
def restore_logging():
    root, ours = logging.getLogger(), logging.getLogger("pipelines")
    handlers, level, our_level = list(root.handlers), root.level, ours.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    ours.setLevel(our_level)


# ----------------------------------------------------------------------------- the CLI, not a terminal


def test_a_run_logs_plain_lines_with_step_as_of_and_run_id_when_stderr_is_not_a_terminal(tmp_path, events_csv):
    proc = cli("run", "--events", str(events_csv), "--out", "out", "--warehouse", f"duckdb:///{tmp_path}/wh.duckdb",
               "--run-id", "progress42", "-v", cwd=tmp_path)  # -v after the subcommand
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" not in proc.stderr, "no progress bar in a log file"
    lines = proc.stderr.strip().splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed) if not m][:5]
    steps = {m.group(2) for m in parsed}
    assert {"ingest", "clean", "features", "train", "promote", "score", "publish"} <= steps, steps
    assert {m.group(4) for m in parsed} == {"progress42"}
    by_step = {}
    for m in parsed:
        by_step.setdefault(m.group(2), []).append(m)
    assert {m.group(3) for m in by_step["score"]} == {"2026-11-21"}
    score_messages = [m.group(5) for m in by_step["score"]]
    assert any(re.fullmatch(r"scored (\d+) of \1 users \(100%, [\d.]+ s\)", s) for s in score_messages), score_messages
    assert any(s.startswith("done in ") and "users_scored=" in s for s in score_messages)
    features = [m.group(5) for m in by_step["features"]]
    assert any(re.fullmatch(r"building features from \d+ events with one DuckDB query", s) for s in features)
    assert any(re.fullmatch(r"built \d+ features for \d+ users", s) for s in features)
    train = [m.group(5) for m in by_step["train"]]
    assert any(s.startswith("fitting ecdf_tail on ") for s in train) and any(s.startswith("done in ") for s in train)


def test_simulate_reports_progress_per_part_with_v_before_the_subcommand(tmp_path):
    (tmp_path / "params.yaml").write_text("simulate:\n  n_users: 200\n  days: 3\n")
    proc = cli("-v", "simulate", cwd=tmp_path, PIPELINES_RUN_ID="sim7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" not in proc.stderr
    messages = [LINE.match(line) for line in proc.stderr.strip().splitlines()]
    assert all(messages) and {(m.group(2), m.group(3), m.group(4)) for m in messages} == {("simulate", "-", "sim7")}
    parts = [m.group(5) for m in messages if m.group(5).startswith("simulated ")]
    assert re.fullmatch(r"simulated 1 of (\d+) parts \(\d+%, [\d.]+ s\) world", parts[0]), parts
    assert any(p.endswith(" brushing") for p in parts)
    total = re.match(r"simulated 1 of (\d+)", parts[0]).group(1)
    assert parts[-1].startswith(f"simulated {total} of {total} parts (100%")
    assert len(parts) == int(total), "one line per part, and no repeated last line"


def test_quiet_shows_no_log_lines_but_an_error_still_prints_its_one_line(tmp_path, events_csv):
    proc = cli("-q", "run", "--events", str(events_csv), "--out", "out",
               "--warehouse", f"duckdb:///{tmp_path}/wh.duckdb", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not [line for line in proc.stderr.splitlines() if " INFO " in line], proc.stderr[-3000:]
    assert "\r" not in proc.stderr and "scored" not in proc.stderr
    (tmp_path / "params.yaml").write_text("as_of: '2026-11-21'\n")
    loud = cli("score", "-v", cwd=tmp_path)
    assert loud.returncode == 2 and LINE.match(loud.stderr.splitlines()[0]), loud.stderr
    assert loud.stderr.strip().splitlines()[-1].startswith("error: no champion model")
    proc = cli("score", "-q", "-v", cwd=tmp_path)  # -q wins over -v
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no champion model") and len(proc.stderr.strip().splitlines()) == 1


def test_v_and_q_are_accepted_before_and_after_every_subcommand():
    from pipelines.__main__ import build_parser

    parser = build_parser()
    assert parser.parse_args(["-v", "score"]).verbose == 1
    args = parser.parse_args(["score", "-v"])
    assert args.verbose == 0 and args.sub_verbose == 1
    assert parser.parse_args(["warehouse", "migrate", "-q"]).sub_quiet is True
    assert parser.parse_args(["-q", "registry"]).quiet is True
    assert not hasattr(parser.parse_args(["score"]), "sub_verbose")


def test_the_default_level_is_info_in_a_terminal_and_slow_progress_otherwise():
    assert progress.cli_level(stream=FakeTTY()) == logging.INFO
    assert progress.cli_level(stream=io.StringIO()) == progress.PROGRESS_WHEN_SLOW
    assert logging.INFO < progress.PROGRESS_WHEN_SLOW < logging.WARNING
    assert progress.cli_level(1, stream=io.StringIO()) == logging.INFO
    assert progress.cli_level(2, stream=io.StringIO()) == logging.DEBUG
    assert progress.cli_level(1, quiet=True, stream=FakeTTY()) == logging.WARNING


def test_off_a_terminal_without_v_a_quick_command_is_silent_and_a_slow_one_shows_plain_progress(tmp_path):
    # 5,000 users: the step takes ~0.3 s on the shared 2-core VM, several intervals of 0.05 s (200
    # users now simulate in under 0.2 s, and a step quicker than the interval rightly says nothing)
    (tmp_path / "params.yaml").write_text("simulate:\n  n_users: 5000\n  days: 7\n")
    quick = cli("simulate", cwd=tmp_path, PIPELINES_PROGRESS_SECONDS="300", PIPELINES_RUN_ID="q1")
    assert quick.returncode == 0, quick.stderr[-3000:]
    assert quick.stderr == ""  # scripts and tests get just the outcome
    slow = cli("simulate", cwd=tmp_path, PIPELINES_PROGRESS_SECONDS="0.05", PIPELINES_RUN_ID="s1")
    assert slow.returncode == 0, slow.stderr[-3000:]
    assert "\r" not in slow.stderr
    lines = slow.stderr.strip().splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert lines and all(parsed), lines[:5]
    assert {m.group(1) for m in parsed} == {"INFO"} and {m.group(4) for m in parsed} == {"s1"}
    messages = [m.group(5) for m in parsed]
    # a periodic line (the step's heartbeat, or simulate's parts), then the step's end
    assert len(messages) >= 2 and messages[-1].startswith("done in ") and "events=" in messages[-1], messages
    assert all(re.fullmatch(r"still running after [\d.]+ s|simulated \d+ of \d+ parts \(\d+%, [\d.]+ s\).*", m)
               for m in messages[:-1]), messages
    # only the progress lines: not the step's start, nor its other info lines
    assert not [m for m in messages if m == "started"]


@pytest.fixture
def slow_default(restore_logging, monkeypatch):
    """The CLI's plain default off a terminal, with PIPELINES_PROGRESS_SECONDS=0.2."""
    stream = io.StringIO()
    monkeypatch.setenv("PIPELINES_PROGRESS_SECONDS", "0.2")
    progress.setup_cli_logging(progress.PROGRESS_WHEN_SLOW, stream=stream)
    yield stream
    progress.setup_cli_logging(logging.WARNING, stream=io.StringIO())  # _slow_only off again


def test_the_plain_default_says_nothing_of_a_quick_step_and_heartbeats_a_slow_one(slow_default):
    import time

    @progress.logged_step("features")
    def step(params, as_of, seconds):
        logging.getLogger("pipelines").info("an info line of the step")
        time.sleep(seconds)
        return {"users": 3}

    with progress.context(run_id="r9"):
        step({}, "2026-11-21", 0.0)
        assert slow_default.getvalue() == ""
        step({}, "2026-11-21", 0.75)
    lines = slow_default.getvalue().splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert {(m.group(1), m.group(2), m.group(3), m.group(4)) for m in parsed} == {("INFO", "features", "2026-11-21", "r9")}
    messages = [m.group(5) for m in parsed]
    beats = [m for m in messages if m.startswith("still running after ")]
    assert 2 <= len(beats) <= 4, messages
    assert re.fullmatch(r"done in 0\.\d s: users=3", messages[-1]) and len(messages) == len(beats) + 1
    assert "an info line of the step" not in slow_default.getvalue()


def test_the_plain_default_logs_a_quick_progress_not_at_all_and_a_slow_one_with_its_end(slow_default):
    import time

    with Progress("scored", 30, "users", stream=io.StringIO()) as p:
        p.update(30)
    assert slow_default.getvalue() == ""
    with Progress("scored", 30, "users", stream=io.StringIO()) as p:
        for _ in range(3):
            time.sleep(0.25)
            p.update(10)
    messages = [line.split(" INFO ", 1)[1] for line in slow_default.getvalue().splitlines()]
    assert [m.split(" (")[0] for m in messages] == ["scored 10 of 30 users", "scored 20 of 30 users",
                                                    "scored 30 of 30 users"], messages


def test_a_step_heartbeat_is_quiet_while_its_progress_reports_and_with_q(restore_logging, monkeypatch, caplog):
    import time

    monkeypatch.setenv("PIPELINES_PROGRESS_SECONDS", "0.2")

    @progress.logged_step("score")
    def step(params, as_of):
        with Progress("scored", 8, "users", stream=io.StringIO(), interval_s=0.1) as p:
            for _ in range(8):
                time.sleep(0.1)
                p.update(1)
        return {}

    with caplog.at_level(logging.INFO, logger="pipelines"):
        step({}, "2026-11-21")
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.progress"]
    assert len([m for m in lines if m.startswith("scored ")]) >= 4
    assert not [m for m in lines if m.startswith("still running")], lines
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelines"):  # -q
        step({}, "2026-11-21")
    assert not caplog.records


# ----------------------------------------------------------------------------- the CLI in a terminal


def in_a_terminal(*args: str, cwd: Path, timeout_s: float = 120, **env: str) -> tuple[int, str]:
    """(exit status, everything written) of `python -m pipelines ARGS` with stdin, stdout and
    stderr on a real pseudo-terminal (120 columns), read from its master side until it exits."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines", *args], cwd=cwd, stdin=slave, stdout=slave,
                                stderr=slave, env={**os.environ, **env}, start_new_session=True)
    finally:
        os.close(slave)  # the child holds it now: the master reads EOF (EIO) once the child has exited
    chunks, deadline = [], time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: every writer of the slave side has closed it
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            proc.kill()
            pytest.fail(f"{args} did not finish in {timeout_s} s under a pseudo-terminal: "
                        f"{b''.join(chunks).decode(errors='replace')[-2000:]}")
        return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)


def test_a_real_terminal_gets_a_tqdm_bar_and_a_pipe_gets_plain_lines_from_the_same_command(tmp_path):
    (tmp_path / "params.yaml").write_text("simulate:\n  n_users: 200\n  days: 3\n")
    # the same command and environment both times; interval 0: off a terminal every part is a line
    env = {"PIPELINES_PROGRESS_SECONDS": "0", "PIPELINES_RUN_ID": "tty1"}
    status, shown = in_a_terminal("simulate", cwd=tmp_path, **env)
    assert status == 0, shown[-3000:]
    # the terminal's own line discipline turns every "\n" into "\r\n": only a "\r" that does not end
    # a line is tqdm redrawing its bar
    redraws = re.findall(r"\r(?!\n)([^\r\n]*)", shown)
    bars = [r for r in redraws if r.startswith("simulate simulated: ")]  # desc: the step, then Progress's what
    assert len(bars) >= 2, shown[-3000:]  # drawn at the start and redrawn at least at the end
    last = re.fullmatch(r"simulate simulated: 100%\|(.*?)\| (\d+)/(\d+) \[[\d:]+<[\d:]+, +"
                        r"[\d.]+(?: parts/s|s/ parts)(?:, (.*))?\]", bars[-1].rstrip())
    assert last, bars[-1]
    assert last.group(2) == last.group(3) and int(last.group(3)) >= 5  # world, shoppers, scenarios..., tables
    assert set(last.group(1)) == {"█"} and len(last.group(1)) >= 10, "a full bar of tqdm's block characters"
    assert re.fullmatch(r"simulate simulated:\s+0%\|\s*\| 0/\d+ .*", bars[0].rstrip()), bars[0]
    # a bar instead of the periodic lines, and the step's other info lines still shown (through tqdm.write)
    assert not re.search(r"simulated \d+ of \d+ parts \(", shown), shown[-3000:]
    lines = [LINE.match(line) for line in shown.replace("\r\n", "\n").split("\n")]
    messages = [m.group(5) for m in lines if m and m.group(2) == "simulate" and m.group(4) == "tty1"]
    assert "started" in messages and any(m.startswith("done in ") for m in messages), shown[-3000:]
    piped = cli("simulate", cwd=tmp_path, **env)
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert "\r" not in piped.stderr and "%|" not in piped.stderr and "parts/s" not in piped.stderr
    parts = re.findall(r"simulated (\d+) of (\d+) parts \(", piped.stderr)
    assert len(parts) == int(last.group(3)) and parts[-1][0] == parts[-1][1], piped.stderr[-3000:]


# ----------------------------------------------------------------------------- the helper


def test_progress_logs_periodic_lines_when_the_stream_is_not_a_terminal(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="pipelines.progress"):
        with Progress("scored", 300, "users", stream=stream, interval_s=0) as p:
            for _ in range(3):
                p.update(100)
        with Progress("scored", None, "users", stream=stream, interval_s=3600) as p:
            for _ in range(3):
                p.update(100)  # within the interval: only the last line
    messages = [r.getMessage() for r in caplog.records if r.name == "pipelines.progress"]
    assert [m.split(" (")[0] for m in messages] == ["scored 100 of 300 users", "scored 200 of 300 users",
                                                    "scored 300 of 300 users", "scored 300 users"]
    assert messages[0].startswith("scored 100 of 300 users (33%, ")
    assert stream.getvalue() == "", "no bar on a stream that is not a terminal"


def test_progress_draws_a_bar_on_a_terminal_and_nothing_when_info_is_off(caplog):
    tty = FakeTTY()
    with caplog.at_level(logging.INFO, logger="pipelines.progress"):
        with progress.context(step="score", as_of="2026-11-30", run_id="abc123"):
            with Progress("scored", 10, "users", stream=tty, interval_s=0) as p:
                for _ in range(10):
                    p.update(1)
    drawn = tty.getvalue()
    assert "\r" in drawn and "100%|" in drawn and "10/10" in drawn and drawn.startswith("\rscore scored")
    assert not [r for r in caplog.records if r.name == "pipelines.progress"], "a bar, not log lines"
    quiet = FakeTTY()
    with caplog.at_level(logging.WARNING, logger="pipelines.progress"):
        with Progress("scored", 10, "users", stream=quiet, interval_s=0) as p:
            p.update(10)
    assert quiet.getvalue() == ""


def test_cli_format_carries_step_as_of_and_run_id(restore_logging):
    stream = io.StringIO()
    progress.setup_cli_logging(logging.INFO, stream=stream)
    log = logging.getLogger("pipelines.test")
    log.info("outside")
    with progress.context(step="score", as_of="2026-11-30", run_id="abc123"):
        log.info("scored %d of %d users", 100000, 1000000)
        with progress.context(step="report"):
            logging.getLogger("py.warnings").warning("any logger")
            logging.getLogger("great_expectations").info("a library's info is not shown")
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO outside", lines[0])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO score as_of=2026-11-30 run=abc123 "
                        r"scored 100000 of 1000000 users", lines[1]), lines[1]
    assert lines[2].endswith("WARNING report as_of=2026-11-30 run=abc123 any logger")
    assert len(lines) == 3


def test_embedded_context_puts_the_prefix_in_pipelines_messages_for_foreign_handlers(caplog):
    with caplog.at_level(logging.INFO):
        with progress.context(step="features", as_of="2026-11-21", run_id="scheduled__2026-11-21T00:00:00+00:00",
                              embed=True):
            logging.getLogger("pipelines").info("built %d features for %d users", 56, 300)
            logging.getLogger("pipelines.progress").info("100% done")
            logging.getLogger("airflow.task").info("not ours")
        logging.getLogger("pipelines").info("after")
    messages = {r.name: r.getMessage() for r in caplog.records}
    prefix = "features as_of=2026-11-21 run=scheduled__2026-11-21T00:00:00+00:00 "
    assert [r.getMessage() for r in caplog.records if r.name == "pipelines"] == [
        prefix + "built 56 features for 300 users", "after"]
    assert messages["pipelines.progress"] == prefix + "100% done"
    assert messages["airflow.task"] == "not ours"


def test_a_step_logs_its_start_and_end_with_its_as_of(caplog):
    @progress.logged_step("score")
    def step(params, as_of, out=None):
        logging.getLogger("pipelines").info("inside")
        return {"as_of": as_of, "users_scored": 3, "flagged": True, "out": "x"}

    with caplog.at_level(logging.INFO, logger="pipelines"):
        with progress.context(step="run", run_id="r1", embed=True):
            step({}, "2026-11-21")
    messages = [r.getMessage() for r in caplog.records if r.name == "pipelines"]
    assert messages[0] == "score as_of=2026-11-21 run=r1 started"
    assert messages[1] == "score as_of=2026-11-21 run=r1 inside"
    assert re.fullmatch(r"score as_of=2026-11-21 run=r1 done in [\d.]+ s: users_scored=3", messages[2])
    assert progress.current() == {}


def test_deep_training_logs_one_plain_line_per_epoch_and_no_bar_off_a_terminal(caplog, capsys, normal_features):
    import logging

    from pipelines.detectors import make_detector

    with caplog.at_level(logging.INFO, logger="pipelines"):
        make_detector("autoencoder", {"epochs": 2, "patience": 2, "progress": True, "device": "cpu"}).fit(
            normal_features.iloc[:200])
    epochs = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage()]
    assert len(epochs) == 2 and "epoch 1/2: loss" in epochs[0] and "epoch 2/2: loss" in epochs[1]
    assert "\r" not in capsys.readouterr().err  # pytest's stderr is not a terminal: no tqdm bar
