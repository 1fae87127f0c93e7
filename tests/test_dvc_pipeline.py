"""`dvc repro` as a data scientist uses it, on a scratch copy of the repository with a small
simulation: a second repro does nothing, a training knob reruns only training and what
depends on it, `dvc exp run -S` works, metrics and plots show, publishing goes to the
experiment table, and neither `pipelines run` nor `dvc exp run` leaves DVC anything to redo."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def sh(*cmd: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("dvc") / "repo"
    files = sh("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout.split()
    for name in files:
        if name.startswith("tests/") or not (REPO / name).is_file():
            continue
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, work / name)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["simulate"].update({"n_users": 1500, "days": 10, "anomaly_rate": 0.05})
    params["train"]["isolation_forest"]["n_estimators"] = 50
    params["score"]["top_k"] = 30
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=work)
    sh("git", "add", "-A", cwd=work)
    sh("git", "commit", "-qm", "scratch", cwd=work)
    return work


AS_OF = "2026-11-21"
ALL_STAGES = ["simulate", "ingest", "clean", "features", "sequences", "train", "evaluate", "promote", "score", "publish"]


def report(project: Path, name: str) -> dict:
    return json.loads((project / "reports" / f"as_of={AS_OF}" / name).read_text())


def assert_in_order(ran: list[str], expected: list[str]) -> None:
    """DVC may run sibling stages (evaluate, promote) in either order; dependencies come first."""
    assert sorted(ran) == sorted(expected), ran
    position = {stage: i for i, stage in enumerate(ran)}
    for before, after in [("sequences", "train"), ("train", "evaluate"), ("train", "promote"), ("promote", "score"), ("score", "publish")]:
        if before in position and after in position:
            assert position[before] < position[after], ran


def test_repro_then_nothing_to_do(project):
    first = sh("dvc", "repro", cwd=project)
    assert_in_order(stages_run(first.stdout), ALL_STAGES)
    metrics = report(project, "metrics.json")
    assert metrics["k"] > 0 and 0.5 < metrics["roc_auc"] <= 1.0
    assert report(project, "clean_report.json")["identity_holds"]
    assert (project / "data" / "features" / f"as_of={AS_OF}" / "features.parquet").exists()
    # dvc publishes to the experiment table, never to the production warehouse
    assert (project / "data" / "experiments.duckdb").exists()
    assert not (project / "data" / "warehouse.duckdb").exists()
    assert report(project, "publish.json")["experiment"] is True
    champion = json.loads((project / "models" / "champion.json").read_text())
    assert champion["version"] == report(project, "train.json")["model_version"]

    second = sh("dvc", "repro", cwd=project)
    assert stages_run(second.stdout) == []
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=project).stdout


def test_training_knob_reruns_only_training_and_downstream(project):
    sh("dvc", "repro", cwd=project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    detector = params["train"]["detector"]
    knob = {"ecdf_tail": ("top_signals", 4), "isolation_forest": ("n_estimators", 60),
            "robust_zscore": ("top_features", 4)}[detector]
    params["train"].setdefault(detector, {})[knob[0]] = knob[1]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc", "repro", cwd=project)
    decision = report(project, "promotion.json")
    # scoring reruns only when the gate changed the champion
    expected = ["train", "evaluate", "promote"] + (["score", "publish"] if decision["promoted"] else [])
    assert_in_order(stages_run(out.stdout), expected)
    # a knob of a detector that is not in use retrains to the same model: DVC stops there
    unused = "robust_zscore" if detector != "robust_zscore" else "ecdf_tail"
    params["train"].setdefault(unused, {})["log_transform" if unused == "robust_zscore" else "top_signals"] = (
        False if unused == "robust_zscore" else 3)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc", "repro", cwd=project)
    assert stages_run(out.stdout) == ["train"]


def test_scoring_budget_does_not_retrain(project):
    sh("dvc", "repro", cwd=project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["score"]["top_k"] = 40
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc", "repro", cwd=project)
    assert "train" not in stages_run(out.stdout)
    assert {"score", "publish", "evaluate"} <= set(stages_run(out.stdout))
    assert report(project, "score.json")["flagged"] == 40


def test_pipelines_run_leaves_dvc_nothing_to_do(project, tmp_path):
    sh("dvc", "repro", cwd=project)
    events = project / "data" / "raw" / "events.parquet"
    sh(sys.executable, "-m", "pipelines", "run", "--events", str(events), "--out", str(tmp_path / "mine"), cwd=project)
    assert (project / "data" / "warehouse.duckdb").exists()  # `run` publishes to the configured warehouse
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=project).stdout
    assert stages_run(sh("dvc", "repro", cwd=project).stdout) == []


def test_exp_run_metrics_and_plots_then_nothing_to_do(project):
    sh("dvc", "repro", cwd=project)
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-qm", "baseline", cwd=project)
    exp = sh("dvc", "exp", "run", "-S", "train.detector=robust_zscore", cwd=project)
    assert "train" in stages_run(exp.stdout)
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=project).stdout)
    assert "robust_zscore" in json.dumps(shown)
    # the experiment's metrics are the challenger's, whatever the gate decided
    assert report(project, "metrics.json")["model_version"].startswith("robust_zscore-")

    metrics = json.loads(sh("dvc", "metrics", "show", "--json", cwd=project).stdout)
    assert "roc_auc" in json.dumps(metrics)
    sh("dvc", "plots", "show", "-o", "dvc_plots", cwd=project)
    html = (project / "dvc_plots" / "index.html").read_text()
    assert "Precision-recall" in html and "ROC" in html
    assert stages_run(sh("dvc", "repro", cwd=project).stdout) == []


def test_show_prints_registry_top_flagged_users_and_metrics(project):
    sh("dvc", "repro", cwd=project)
    out = sh(sys.executable, "-m", "pipelines", "show", "--experiment", "--limit", "5", cwd=project).stdout
    assert re.search(r"Model registry at models: \d+ version", out), out
    assert re.search(r"Champion: \w+-[0-9a-f]{12}", out) and "Last decision (" in out
    assert re.search(r"Top 5 of \d+ flagged users on 2026-11-21", out), out
    assert out.count("score=") == 5
    assert "ROC-AUC" in out and "Recall per abuse type" in out
