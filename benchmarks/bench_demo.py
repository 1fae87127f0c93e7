"""End-to-end demo: wall time and peak memory of `dvc repro` from nothing, on a scratch copy
of this repository (the working tree's tracked files), with the default params.

    python benchmarks/bench_demo.py [--users N]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, help="override simulate.n_users")
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "repo"
        for name in files:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, work / name)
        subprocess.run(["git", "init", "-q"], cwd=work, check=True)
        cmd = ["dvc", "repro"]
        if args.users:
            text = (work / "params.yaml").read_text()
            (work / "params.yaml").write_text(text.replace("n_users: 20000", f"n_users: {args.users}"))
        start = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
            peak_tree = _watch_tree_rss(proc)
            elapsed = time.perf_counter() - start
            out.seek(0)
            stdout = out.read()
        if proc.returncode != 0:
            print(stdout[-5000:])
            raise SystemExit(f"dvc repro failed with exit code {proc.returncode}")
        events = next((line for line in stdout.splitlines() if '"events"' in line), "")
        print(f"demo (dvc repro, all stages, {os.cpu_count()} cores): {elapsed:.1f} s wall; peak RSS of the "
              f"whole process tree {peak_tree / 1024**3:.2f} GB (sampled every 0.1 s)")
        print(f"  simulate: {events}")


def _watch_tree_rss(proc: subprocess.Popen) -> int:
    """Peak of the summed RSS of `proc` and all its descendants until it exits."""
    import psutil  # a DVC dependency, so always installed with the project

    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        except psutil.NoSuchProcess:
            break
        peak = max(peak, total)
        time.sleep(0.1)
    proc.wait()
    return peak


if __name__ == "__main__":
    main()
