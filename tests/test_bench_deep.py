"""benchmarks/bench_deep.py's check that the sequences step kept each user's latest
min(events, max_events) events: it passes on the step's output and catches a wrong one."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.sequences import build_sequences

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_deep.py"
CAP = 8


def _script():
    spec = importlib.util.spec_from_file_location("bench_deep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def heavy(tmp_path_factory):
    """300 users, about a tenth of them with 20-30 events (over CAP), and their sequences."""
    bench, work = _script(), tmp_path_factory.mktemp("bench_deep")
    events = work / "events.parquet"
    made = bench._child(bench._HEAVY_TAIL, str(events), "300", "3", "0.1", "20", "30")
    frame = build_sequences(str(events), "2026-11-30", CAP)
    return bench, work, events, frame, made


def _check(bench, work, events, frame, cap=CAP) -> dict:
    path = work / "sequences.parquet"
    frame.to_parquet(path)
    return bench._child(bench._CHECK_CHILD, str(events), str(path), "2026-11-30", str(cap))


def test_the_step_output_passes_and_the_heavy_users_are_capped(heavy):
    bench, work, events, frame, made = heavy
    c = _check(bench, work, events, frame)
    assert bench._cap_problems(c) == []
    assert c["events"] == made["events"] and c["users"] == 300
    assert c["users_over_cap"] >= made["heavy_users"] > 0
    assert c["over_cap_kept_exactly_cap"] == c["users_over_cap"] and c["longest_kept"] == CAP


def test_a_capped_user_keeping_an_older_event_is_caught(heavy):
    bench, work, events, frame, _ = heavy
    user = frame.groupby("user_id").size().idxmax()
    ev = pd.read_parquet(events)
    mine = ev[ev["user_id"] == user].sort_values(["event_time", "event_id"])
    rows = frame.index[frame["user_id"] == user]
    wrong = frame.copy()
    # the second-latest kept event swapped for the user's oldest: still CAP events, steps 0..CAP-1
    wrong.loc[rows[-2], "event_time"] = mine["event_time"].iloc[0]
    problems = bench._cap_problems(_check(bench, work, events, wrong))
    assert any("not their latest" in p for p in problems), problems


def test_sequences_cut_shorter_than_the_cap_are_caught(heavy):
    bench, work, events, frame, _ = heavy
    problems = bench._cap_problems(_check(bench, work, events, frame, cap=CAP + 1))
    assert any("not min(events, max_events)" in p for p in problems), problems
    assert any(f"kept exactly {CAP + 1}" in p for p in problems), problems


def test_heavy_tail_share_without_a_synthetic_log_is_refused(monkeypatch, capsys):
    bench = _script()
    monkeypatch.setattr(sys, "argv", ["bench_deep.py", "--heavy-tail-share", "0.02"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "needs --synthetic-events-per-user" in capsys.readouterr().err
