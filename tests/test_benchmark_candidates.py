"""benchmarks/bench_ensemble_candidates.py judges saved figures (--from) against both halves."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ensemble_candidates.py"
FILES = ("6_cardio.npz", "38_thyroid.npz", "32_shuttle.npz")
PYOD_BEST = {"6_cardio.npz": 0.93993, "38_thyroid.npz": 0.98498, "32_shuttle.npz": 0.99711}
TYPES = ("card_testing", "refund_abuse")


def _script():
    spec = importlib.util.spec_from_file_location("bench_ensemble_candidates", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pyod_files(tmp_path: Path) -> list[str]:
    paths = []
    for f in FILES:
        detectors = {"pyod:IForest": {"roc_auc": PYOD_BEST[f] - 0.001}, "pyod:ECOD": {"roc_auc": PYOD_BEST[f]}}
        path = tmp_path / f"pyod_{f}.json"
        path.write_text(json.dumps({"dataset": f, "detectors": detectors}))
        paths.append(str(path))
    return paths


def _sim(pr: float, roc: dict[str, float]) -> dict:
    return {"pr_auc": pr, "roc_auc": sum(roc.values()) / len(roc), "roc_auc_per_type": roc}


def _run(tmp_path, monkeypatch, capsys, earlier: dict) -> str:
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--pyod", *_pyod_files(tmp_path), "--from",
                                      str(tmp_path / "earlier.json"), "--out", str(tmp_path / "again.json")])
    assert _script().main() == 0
    return capsys.readouterr().out


def _ours(**per_candidate: tuple[float, float, float]) -> list[dict]:
    return [{"dataset": f, "detectors": {n: {"roc_auc": v[i]} for n, v in per_candidate.items()}}
            for i, f in enumerate(FILES)]


def test_both_halves_judged_from_saved_figures(tmp_path, monkeypatch, capsys):
    base_roc = {"card_testing": 0.99, "refund_abuse": 0.90}
    earlier = {"sim": "dev", "candidates": {"ecdf_tail": {}, "ens_mean_if25": {}, "ens_harmonic_if25": {}},
               "ours": _ours(ecdf_tail=(0.935, 0.984, 0.993), ens_mean_if25=(0.941, 0.986, 0.998),
                             ens_harmonic_if25=(0.941, 0.986, 0.996)),  # below PyOD's best on shuttle
               "simulation": {"ecdf_tail": _sim(0.52, base_roc),
                              "ens_mean_if25": _sim(0.53, {"card_testing": 0.99, "refund_abuse": 0.895}),
                              "ens_harmonic_if25": _sim(0.53, base_roc)}}
    out = _run(tmp_path, monkeypatch, capsys, earlier)
    assert "both halves hold for: ens_mean_if25\n" in out
    assert "0.99600 (below)" in out
    saved = json.loads((tmp_path / "again.json").read_text())["results"]
    assert saved["ens_mean_if25"]["adbench"]["met"] and saved["ens_mean_if25"]["simulation"]["met"]
    assert not saved["ens_harmonic_if25"]["adbench"]["met"] and saved["ens_harmonic_if25"]["simulation"]["met"]
    # losing more than 0.01 of ROC-AUC on one type fails the simulation half, whatever the PR-AUC
    earlier["simulation"]["ens_mean_if25"] = _sim(0.60, {"card_testing": 0.99, "refund_abuse": 0.889})
    out = _run(tmp_path, monkeypatch, capsys, earlier)
    assert "both halves hold for: none of these" in out


def test_simulation_only_figures_leave_the_adbench_cells_empty(tmp_path, monkeypatch, capsys):
    """--skip-adbench's output (no ADBench figures of ours) is judged without failing."""
    roc = {"card_testing": 0.99, "refund_abuse": 0.90}
    earlier = {"sim": "dev", "ours": [], "candidates": {"ecdf_tail": {}, "ens_mean_if25": {}},
               "simulation": {"ecdf_tail": _sim(0.52, roc), "ens_mean_if25": _sim(0.53, roc)}}
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--pyod", *_pyod_files(tmp_path), "--from",
                                      str(tmp_path / "earlier.json")])  # the candidates the file names
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    assert _script().main() == 0
    out = capsys.readouterr().out
    assert "| ens_mean_if25 | - | - | - | - | no | 0.5300 |" in out
    assert "both halves hold for: none of these" in out


def test_skipping_both_halves_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--pyod", "x.json", "--skip-sim", "--skip-adbench"])
    with pytest.raises(SystemExit):
        _script().main()
    assert "leave nothing to measure" in capsys.readouterr().err


def test_every_candidate_is_valid_params():
    """Each candidate's overrides go through params.yaml's validation (a typo fails here, not
    half an hour into a run)."""
    from pipelines.config import default_params, override

    for name, changes in _script().CANDIDATES.items():
        params = default_params()
        for key, value in changes.items():
            params = override(params, key, value, source=name)
