"""The docs scripts that simulate days (docs/make_drift_example.py,
docs/make_run_report_screenshot.py) share their set-up through docs/_simulation.py: each must
still find it when run as the README says, `python docs/NAME.py` (docs/ then on sys.path)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["make_drift_example.py", "make_run_report_screenshot.py"])
def test_a_docs_script_imports_the_shared_simulation(script):
    done = subprocess.run([sys.executable, str(REPO / "docs" / script), "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_the_shared_simulation_lives_in_one_module():
    code = ("import sys; sys.path.insert(0, 'docs'); import _simulation, make_drift_example as d, "
            "make_run_report_screenshot as s; "
            "assert d.simulated_world is s.simulated_world is _simulation.simulated_world; "
            "assert d.scored_days is s.scored_days is _simulation.scored_days")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
