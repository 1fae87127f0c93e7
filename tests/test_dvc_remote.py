"""The DVC remote on S3 (README, "S3"): `dvc push` to an s3:// remote on a moto server on
127.0.0.1, then `dvc pull` in a fresh `git clone` restores the tracked data and a pipeline
stage's output, byte for byte, from the bucket alone."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REMOTE = "s3://events/dvc-store"


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dvc_push_then_pull_in_a_fresh_clone_restores_the_data(s3, tmp_path):
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    # DVC must find the server through the remote's `endpointurl`, as the README says, not
    # through the variable the pipeline uses; credentials stay boto's (environment here).
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")}
    env.update(DVC_NO_ANALYTICS="1", DVC_GLOBAL_CONFIG_DIR=str(tmp_path / "dvc-global"),
               DVC_SITE_CACHE_DIR=str(tmp_path / "dvc-site"), GIT_CONFIG_NOSYSTEM="1",
               HOME=str(tmp_path / "home"), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    (tmp_path / "home").mkdir()
    dvc = [sys.executable, "-m", "dvc"]
    git = ["git", "-c", "init.defaultBranch=main"]

    origin = tmp_path / "origin"
    (origin / "data" / "raw").mkdir(parents=True)
    (origin / "data" / "raw" / "events.csv").write_text("user_id,event_type\nu1,view\nu2,purchase\n")
    (origin / "data" / "raw" / "part-2.bin").write_bytes(os.urandom(300_000))  # not compressible
    (origin / "make_report.py").write_text(
        "import pathlib\n"
        "rows = pathlib.Path('data/raw/events.csv').read_text().splitlines()[1:]\n"
        "pathlib.Path('report.txt').write_text(f'{len(rows)} events\\n')\n")
    (origin / "dvc.yaml").write_text(
        "stages:\n"
        "  report:\n"
        f"    cmd: {sys.executable} make_report.py\n"
        "    deps: [make_report.py, data/raw]\n"
        "    outs: [report.txt]\n")
    _run([*git, "init", "-q"], origin, env)
    _run([*dvc, "init", "-q"], origin, env)
    _run([*dvc, "add", "-q", "data/raw"], origin, env)
    _run([*dvc, "repro", "-q"], origin, env)
    # the README's two commands
    _run([*dvc, "remote", "add", "-d", "storage", REMOTE], origin, env)
    _run([*dvc, "remote", "modify", "storage", "endpointurl", endpoint], origin, env)
    assert "secret" not in (origin / ".dvc" / "config").read_text().lower()  # credentials never committed
    _run(["git", "add", "-A"], origin, env)
    _run(["git", "commit", "-q", "-m", "data, a stage, an S3 remote"], origin, env)
    _run([*dvc, "push", "-q"], origin, env)

    stored = [o["Key"] for o in s3.list_objects_v2(Bucket="events", Prefix="dvc-store/")["Contents"]]
    assert any(k.endswith(".dir") for k in stored)  # the directory's manifest
    assert len(stored) == 4  # events.csv, part-2.bin, their .dir, report.txt

    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    assert not (clone / "data" / "raw").exists() and not (clone / "report.txt").exists()
    shutil.rmtree(origin / ".dvc" / "cache")  # the pull can only come from the bucket
    _run([*dvc, "pull", "-q"], clone, env)

    assert _digest(clone / "data" / "raw") == _digest(origin / "data" / "raw")
    assert (clone / "report.txt").read_text() == (origin / "report.txt").read_text() == "2 events\n"
    status = _run([*dvc, "status"], clone, env)
    assert "up to date" in status.lower() or status.strip() == "", status
