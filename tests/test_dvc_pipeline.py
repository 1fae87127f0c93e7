"""`dvc repro` as a data scientist uses it, on a scratch copy of the repository with a small
simulation: a second repro does nothing, a training knob reruns only training and what
depends on it, `dvc exp run -S` works, metrics and plots show."""
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


def test_repro_then_nothing_to_do(project):
    first = sh("dvc", "repro", cwd=project)
    assert stages_run(first.stdout) == ["simulate", "ingest", "clean", "features", "train", "score", "evaluate"]
    metrics = json.loads((project / "metrics.json").read_text())
    assert metrics["k"] > 0 and 0.5 < metrics["roc_auc"] <= 1.0
    assert (project / "data" / "warehouse.duckdb").exists()
    report = json.loads((project / "reports" / "clean_report.json").read_text())
    assert report["identity_holds"]

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
    assert stages_run(out.stdout) == ["train", "score", "evaluate"]
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
    assert stages_run(out.stdout) == ["score", "evaluate"]
    assert json.loads((project / "metrics.json").read_text())["k"] > 0


def test_exp_run_metrics_and_plots(project):
    sh("dvc", "repro", cwd=project)
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-qm", "baseline", cwd=project)
    exp = sh("dvc", "exp", "run", "-S", "train.detector=robust_zscore", cwd=project)
    assert "train" in stages_run(exp.stdout)
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=project).stdout)
    assert "robust_zscore" in json.dumps(shown)

    metrics = json.loads(sh("dvc", "metrics", "show", "--json", cwd=project).stdout)
    assert "roc_auc" in json.dumps(metrics)
    sh("dvc", "plots", "show", "-o", "dvc_plots", cwd=project)
    html = (project / "dvc_plots" / "index.html").read_text()
    assert "Precision-recall" in html and "ROC" in html


def test_show_prints_top_flagged_users_and_metrics(project):
    sh("dvc", "repro", cwd=project)
    out = sh(sys.executable, "-m", "pipelines", "show", "--limit", "5", cwd=project).stdout
    assert re.search(r"Top 5 of \d+ flagged users on 2026-11-21", out), out
    assert out.count("score=") == 5
    assert "ROC-AUC" in out and "Recall per abuse type" in out
