"""The commands outsiders use (contract sections 5 and 6), run as a user would: in a
subprocess, from a directory with no params.yaml, so the built-in defaults apply."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from pipelines.schema import SCORE_COLUMNS
from pipelines.simulate import simulate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
if not SHARED.exists():
    SHARED = Path(__file__).resolve().parents[1] / "shared" / "datasets"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def simulated_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("byo")
    events, labels = simulate({"n_users": 1500, "days": 10, "seed": 3, "anomaly_rate": 0.05})
    # as an outsider would hand it over: CSV, ISO text times, integer-looking ids
    events = events.assign(event_time=events["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    events.to_csv(folder / "events.csv", index=False)
    labels.to_csv(folder / "labels.csv", index=False)
    return folder / "events.csv", folder / "labels.csv"


@pytest.mark.slow
def test_run_with_labels_writes_scores_metrics_and_warehouse(tmp_path, simulated_files):
    events, labels = simulated_files
    warehouse = tmp_path / "wh.duckdb"
    proc = cli("run", "--events", str(events), "--labels", str(labels), "--out", "out",
               "--warehouse", f"duckdb:///{warehouse}", "--run-id", "first", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr

    scores = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert list(scores.columns[: len(SCORE_COLUMNS)]) == list(SCORE_COLUMNS)
    assert scores["user_id"].is_unique
    assert sorted(scores["rank"]) == list(range(1, len(scores) + 1))
    assert scores["flagged"].sum() == min(100, len(scores))
    flagged_reasons = scores.loc[scores["flagged"], "reasons"]
    assert (flagged_reasons.str.len() > 0).mean() > 0.9, "nearly every flag must carry a reason"
    # every reason given is a "; "-separated list of `feature=value (pNN.N)`, each piece whole
    pieces = flagged_reasons[flagged_reasons != ""].str.split("; ").explode()
    malformed = pieces[~pieces.str.fullmatch(r"\w+=\S+ \(p\d+\.\d+\)")]
    assert len(pieces) > 0 and malformed.empty, malformed.head().tolist()

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in ("roc_auc", "pr_auc", "precision_at_k", "recall_at_k", "recall_per_type"):
        assert key in metrics
    assert metrics["roc_auc"] > 0.7, "the baseline must beat chance clearly on the simulation"
    assert set(metrics["recall_per_type"]) >= {"brushing", "refund_abuse", "account_takeover", "card_testing",
                                               "scraping_bot", "fake_review_ring"}

    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("SELECT user_id, rank, run_id, as_of FROM flagged_users ORDER BY rank").fetchall()
    assert len(rows) == scores["flagged"].sum()
    assert {r[2] for r in rows} == {"first"}
    top = scores.loc[scores["flagged"]].sort_values("rank")
    assert [r[0] for r in rows] == top["user_id"].tolist()


@pytest.mark.slow
def test_rerunning_a_day_replaces_its_rows(tmp_path, simulated_files):
    events, _ = simulated_files
    warehouse = tmp_path / "wh.duckdb"
    for run_id in ("one", "two"):
        proc = cli("run", "--events", str(events), "--out", "out", "--warehouse", f"duckdb:///{warehouse}",
                   "--run-id", run_id, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    with duckdb.connect(str(warehouse), read_only=True) as con:
        per_run = dict(con.execute("SELECT run_id, count(*) FROM flagged_users GROUP BY run_id").fetchall())
        days = con.execute("SELECT count(DISTINCT as_of) FROM flagged_users").fetchone()[0]
    assert per_run == {"two": 100}, "the second run of the same day must replace the first, not add to it"
    assert days == 1


@pytest.mark.slow
@pytest.mark.parametrize("sample", ["rees46_2019-Oct-sample.csv", "taobao_UserBehavior_sample.csv"])
def test_run_on_real_public_samples(tmp_path, sample):
    path = SHARED / "ecommerce" / sample
    assert path.exists(), f"{path} is missing: the shared samples are part of the checkout"
    proc = cli("run", "--events", str(path), "--out", "out", "--warehouse", f"duckdb:///{tmp_path}/wh.duckdb",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    scores = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    report = json.loads((tmp_path / "out" / "clean_report.json").read_text())
    assert report["rows_in"] == report["rows_clean"] + report["rows_quarantined"] + report["exact_duplicates_removed"]
    assert len(scores) > 0 and scores["user_id"].is_unique


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "not found"),
        ("user,when,what\n1,2024-01-01,view\n", "event_time,user_id,event_type"),
        ("", "empty"),
    ],
)
def test_run_rejects_unusable_input_with_one_line(tmp_path, content, needle):
    path = tmp_path / "events.csv"
    if content is not None:
        path.write_text(content)
    proc = cli("run", "--events", str(path), "--out", "out", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_run_rejects_events_where_every_row_is_bad(tmp_path):
    (tmp_path / "events.csv").write_text("event_time,user_id,event_type\nnot-a-time,1,view\n2024-01-01,2,teleport\n")
    proc = cli("run", "--events", "events.csv", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "all 2 rows were quarantined" in lines[0], proc.stderr
    assert "unparseable event_time" in lines[0] and "unknown event_type" in lines[0]
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert sorted(quarantine["quarantine_reason"]) == ["unknown event_type", "unparseable event_time"]


def test_benchmark_on_adbench_file(tmp_path):
    path = SHARED / "adbench" / "6_cardio.npz"
    assert path.exists(), f"{path} is missing: the shared samples are part of the checkout"
    proc = cli("benchmark", "--npz", str(path), "--detectors", "isolation_forest,robust_zscore,supervised_mlp,pyod:ECOD",
               "--out", "m.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["seeds"] == [0, 1, 2]
    assert result["detectors"]["supervised_mlp"]["supervised"] is True  # fitted with the training part's labels
    assert result["detectors"]["isolation_forest"]["supervised"] is False
    for name in ("isolation_forest", "robust_zscore", "pyod:ECOD"):
        entry = result["detectors"][name]
        assert len(entry["runs"]) == 3
        assert entry["roc_auc"] > 0.6, f"{name} should beat chance on cardio"
        assert 0 < entry["pr_auc"] <= 1


def test_benchmark_rejects_bad_input(tmp_path):
    import numpy as np

    np.savez(tmp_path / "bad.npz", X=np.zeros((4, 2)))
    proc = cli("benchmark", "--npz", "bad.npz", cwd=tmp_path)
    assert proc.returncode == 2 and "y" in proc.stderr and "Traceback" not in proc.stderr
    good = tmp_path / "good.npz"
    np.savez(good, X=np.random.default_rng(0).normal(size=(40, 3)), y=np.r_[np.zeros(36), np.ones(4)])
    proc = cli("benchmark", "--npz", str(good), "--detectors", "nope", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown detector" in proc.stderr


@pytest.mark.slow
def test_steps_in_their_own_processes_give_the_same_run_and_the_same_one_line_errors(tmp_path, simulated_files):
    """run.isolate_steps (auto for big files) forks each step: the scores, the warehouse rows
    and a refused input's one line are those of the steps run in one process."""
    import yaml

    events, _ = simulated_files
    runs = {}
    for isolated in (True, False):
        folder = tmp_path / f"isolated_{isolated}"
        folder.mkdir()
        (folder / "params.yaml").write_text(yaml.safe_dump({"run": {"isolate_steps": isolated}}))
        proc = cli("run", "--events", str(events), "--out", "out", "--warehouse", f"duckdb:///{folder}/wh.duckdb",
                   "--run-id", "same", cwd=folder)
        assert proc.returncode == 0, proc.stderr
        with duckdb.connect(str(folder / "wh.duckdb"), read_only=True) as con:
            rows = con.execute("SELECT user_id, rank, score, reasons FROM flagged_users ORDER BY rank").fetchall()
        runs[isolated] = json.loads(proc.stdout), pd.read_parquet(folder / "out" / "scores.parquet"), rows
    (summary, scores, rows), (alone_summary, alone_scores, alone_rows) = runs[True], runs[False]
    pd.testing.assert_frame_equal(scores, alone_scores)
    assert rows == alone_rows and len(rows) == 100
    assert set(summary["steps"]) == {"ingest", "clean", "features", "train", "promote", "score", "publish"}
    # seconds to 0.1: a promote that takes train's figures can round to 0.0
    assert all(s["seconds"] >= 0 and 0 < s["peak_rss_gib"] < 8 for s in summary["steps"].values())
    assert "steps" not in alone_summary and summary["score"] == alone_summary["score"]

    folder = tmp_path / "isolated_True"
    (folder / "bad.csv").write_text("event_time,user_id,event_type\nnot-a-time,1,view\n2024-01-01,2,teleport\n")
    proc = cli("run", "--events", "bad.csv", "--out", "bad", cwd=folder)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "all 2 rows were quarantined" in lines[0], proc.stderr


def test_isolate_steps_auto_follows_the_events_file_size(tmp_path):
    """auto forks the steps for an events file of at least run.isolate_above_mb, not below it, and a
    path that cannot be read leaves ingest to say what is wrong (no fork, no error here)."""
    from pipelines import run
    from pipelines.config import default_params

    events = tmp_path / "events.csv"
    events.write_bytes(b"x" * 2048)
    params = default_params()
    params["run"] = {**params["run"], "isolate_steps": "auto", "isolate_above_mb": 1024 / 2**20}
    assert run._isolate(params, str(events)) is True
    params["run"]["isolate_above_mb"] = 4096 / 2**20
    assert run._isolate(params, str(events)) is False
    assert run._isolate(params, str(tmp_path / "missing.csv")) is False


@pytest.mark.parametrize("isolated", [True, False])
def test_isolated_steps_inherit_great_expectations_from_the_parent(isolated):
    """Forked steps share the parent's one import of Great Expectations instead of each paying for
    it; steps run in one process import it only when a step validates (a fresh interpreter, so
    this test's own imports do not count)."""
    code = ("import sys; from pipelines.run import _Steps; _Steps(isolated=%s); "
            "print('great_expectations' in sys.modules)" % isolated)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(isolated)
