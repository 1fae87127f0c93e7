"""Candidates for the default detector against both halves of issue 7's test, side by side.

A. ADBench (`pipelines benchmark`'s protocol and code: the three files, seeds 0..2): ROC-AUC at
   least the best PyOD detector's on each file and a mean above every PyOD detector's mean,
   checked by pipelines.benchmark.criterion against saved PyOD figures (`--pyod`, from
   `python -m pipelines benchmark --npz F --detectors pyod:IForest,pyod:ECOD,pyod:AutoEncoder,pyod:DeepSVDD --out F.json`).
B. The simulation (benchmarks/bench_detectors_sim.py, held-out users): a PR-AUC above ecdf_tail's
   without losing more than 0.01 of ROC-AUC on any abuse type. Tune on `--sim dev` only; run
   `--sim frozen` once, at the end, for the chosen candidate.

    python benchmarks/bench_ensemble_candidates.py --pyod P1.json P2.json P3.json [--sim dev|frozen]
        [--cache DIR] [--only NAME,NAME] [--skip-sim | --skip-adbench] [--out FILE] [--from FILE]

`--from` reads the figures of an earlier `--out` instead of measuring again (to judge them
against other PyOD files).

Each candidate is a set of train.* overrides of params.yaml (CANDIDATES below); the same
settings on every file and on the simulation.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ADBENCH = REPO.parent / "shared" / "datasets" / "adbench"
FILES = ("6_cardio.npz", "38_thyroid.npz", "32_shuttle.npz")


def _ens(members: dict[str, float], combine: str, **extra) -> dict:
    return {"train.detector": "ensemble", "train.ensemble.members": members, "train.ensemble.combine": combine,
            **extra}


# name -> train.* overrides (the baseline, ecdf_tail, is params.yaml's default)
CANDIDATES: dict[str, dict] = {
    "ecdf_tail": {"train.detector": "ecdf_tail"},
    "ens_mean_if25": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.25}, "mean"),
    "ens_harmonic_if25": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.25}, "harmonic"),
    "ens_max_if25": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.25}, "max"),
    "ens_harmonic_if15": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.15}, "harmonic"),
    "ens_harmonic_if50": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.5}, "harmonic"),
    "ens_mean_if100": _ens({"ecdf_tail": 1.0, "isolation_forest": 1.0}, "mean"),
    "ens_harmonic_if25_t1000": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.25}, "harmonic",
                                    **{"train.isolation_forest.n_estimators": 1000}),
    "ens_harmonic_if25_ecod10": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.25, "ecod": 0.1}, "harmonic"),
    "ens_mean_if25_ecod25": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.25, "ecod": 0.25}, "mean"),
    "ens_arith_if200": _ens({"ecdf_tail": 1.0, "isolation_forest": 2.0}, "arithmetic"),
    "ens_arith_if25_rz50": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.25, "robust_zscore": 0.5}, "arithmetic"),
    "ens_arith_if25": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.25}, "arithmetic"),
    # the forest's variance (more trees), and the forest on ecdf_tail's per-feature tail rarity
    "ens_mean_if25_t1000": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.25}, "mean",
                                **{"train.isolation_forest.n_estimators": 1000}),
    "isolation_forest": {"train.detector": "isolation_forest"},
    "ecod": {"train.detector": "ecod"},
    "iftail": {"train.detector": "isolation_forest", "train.isolation_forest.tail_transform": True},
    "if_ms1024": {"train.detector": "isolation_forest", "train.isolation_forest.max_samples": 1024},
    "if_ms4096": {"train.detector": "isolation_forest", "train.isolation_forest.max_samples": 4096},
    "if_mf50": {"train.detector": "isolation_forest", "train.isolation_forest.max_features": 0.5},
    "ens_mean_iftail25": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.25}, "mean",
                              **{"train.isolation_forest.tail_transform": True}),
    "ens_mean_iftail50": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.5}, "mean",
                              **{"train.isolation_forest.tail_transform": True}),
    "ens_mean_iftail100": _ens({"ecdf_tail": 1.0, "isolation_forest": 1.0}, "mean",
                               **{"train.isolation_forest.tail_transform": True}),
    "ens_arith_iftail25": _ens({"ecdf_tail": 1.0, "isolation_forest": 0.25}, "arithmetic",
                               **{"train.isolation_forest.tail_transform": True}),
    # k-nearest-neighbour distance (pipelines/detectors/knn.py, its defaults: k 20 among 256 sampled
    # training users, robust z-scores)
    "knn": {"train.detector": "knn"},
    "ens_mean_knn25": _ens({"ecdf_tail": 1.0, "knn": 0.25}, "mean"),
    "ens_mean_knn50": _ens({"ecdf_tail": 1.0, "knn": 0.5}, "mean"),
    "ens_arith_knn100": _ens({"ecdf_tail": 1.0, "knn": 1.0}, "arithmetic"),
    # ecdf_tail summing every signal's tail (as PyOD's ECOD does) instead of the rarest 5
    "ecdf_all": {"train.detector": "ecdf_tail", "train.ecdf_tail.top_signals": 1000},
    # ecdf_skew (pipelines/detectors/ecdf_skew.py): ecdf_tail, the tail against each feature's skew
    # counting skew_penalty less; alone and with the forest
    "ecdf_skew25": {"train.detector": "ecdf_skew", "train.ecdf_skew.skew_penalty": 0.25},
    "ecdf_skew50": {"train.detector": "ecdf_skew", "train.ecdf_skew.skew_penalty": 0.5},
    **{f"ens_{short}_skew{int(p * 100)}_if{int(w * 100)}":
       _ens({"ecdf_skew": 1.0, "isolation_forest": w}, how, **{"train.ecdf_skew.skew_penalty": p})
       for p in (0.25, 0.5) for how, short, ws in (("mean", "mean", (0.25, 0.5, 1.0)),
                                                   ("harmonic", "harmonic", (0.25, 0.5, 1.0)),
                                                   ("arithmetic", "arith", (1.0, 2.0, 3.0))) for w in ws},
}


def adbench(names: list[str], adbench_dir: Path) -> list[dict]:
    """Ours on each file, as `pipelines benchmark --out` writes it (one result per file)."""
    from pipelines.benchmark import benchmark, load_npz
    from pipelines.config import default_params, override

    out = []
    for file in FILES:
        X, y = load_npz(str(adbench_dir / file))
        result = {"dataset": file, "detectors": {}}
        for name in names:
            params = default_params()
            for key, value in CANDIDATES[name].items():
                params = override(params, key, value, source=name)
            detector = params["train"]["detector"]
            figures = benchmark(X, y, [detector], params["train"])["detectors"][detector]
            result["detectors"][name] = figures
            print(f"{file:16s} {name:26s} ROC-AUC {figures['roc_auc']:.5f}", flush=True)
        out.append(result)
    return out


def simulation(names: list[str], sim: str, cache: str | None) -> dict:
    """bench_detectors_sim.py on the same simulation: ecdf_tail and every candidate as a variant."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sim.json"
        cmd = [sys.executable, str(REPO / "benchmarks" / "bench_detectors_sim.py"), "--sim", sim,
               "--detectors", "ecdf_tail", "--out", str(out)]
        if cache:
            cmd += ["--cache", cache]
        for name in names:
            if name == "ecdf_tail":
                continue
            cmd += ["--variant", name, *[f"{k}={json.dumps(v)}" for k, v in CANDIDATES[name].items()]]
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text())["detectors"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pyod", nargs="+", required=True, metavar="PYOD.json",
                    help="`pipelines benchmark --out` files with PyOD's four detectors, one per ADBench file")
    ap.add_argument("--sim", choices=("dev", "frozen"), default="dev")
    ap.add_argument("--cache", help="bench_detectors_sim.py's --cache (the built simulation, reused)")
    ap.add_argument("--adbench", default=str(ADBENCH), help="folder of the ADBench .npz files")
    ap.add_argument("--only", help="comma-separated candidate names (default: all)")
    ap.add_argument("--skip-sim", action="store_true", help="ADBench only")
    ap.add_argument("--skip-adbench", action="store_true", help="the simulation only")
    ap.add_argument("--out", help="write both halves' figures as JSON")
    ap.add_argument("--from", dest="reuse", help="an earlier --out: its figures, not measured again")
    args = ap.parse_args()
    if args.skip_sim and args.skip_adbench:
        ap.error("--skip-sim and --skip-adbench leave nothing to measure")
    earlier = json.loads(Path(args.reuse).read_text()) if args.reuse else None
    names = args.only.split(",") if args.only else list(earlier["candidates"] if earlier else CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        ap.error(f"unknown candidate(s) {', '.join(unknown)}; known: {', '.join(CANDIDATES)}")

    from pipelines.benchmark import criterion, merge_results

    pyod = []
    for path in args.pyod:
        try:
            pyod.append((json.loads(Path(path).read_text()), ""))
        except (OSError, ValueError) as exc:
            ap.error(f"{path}: not a readable benchmark --out file ({exc})")
    if earlier:
        ours, sim, args.sim = earlier["ours"], earlier["simulation"], earlier["sim"]
    else:
        ours = [] if args.skip_adbench else adbench(names, Path(args.adbench))
        sim = {} if args.skip_sim else simulation(names, args.sim, args.cache)
    merged = merge_results(pyod + [(r, "") for r in ours])
    a = {n: criterion(merged, n) for n in names}

    base = sim.get("ecdf_tail")
    print(f"\n| candidate | {' | '.join(Path(f).stem.split('_', 1)[1] for f in FILES)} | mean | A | "
          f"{args.sim} PR-AUC | {args.sim} ROC-AUC | worst type dROC | B |")
    print("|---" * 10 + "|")
    rows = {}
    for n in names:
        c = a[n]
        measured = all(n in merged.get(f, {}) for f in FILES)
        cells = [f"{merged[f][n]['roc_auc']:.5f}" + ("" if "files" not in c or c["files"][f]["reached"] else " (below)")
                 if measured else "-" for f in FILES]
        mean = f"{sum(merged[f][n]['roc_auc'] for f in FILES) / len(FILES):.5f}" if measured else "-"
        row = {"adbench": c}
        sim_cells = ["-", "-", "-", "-"]
        if base and n in sim:
            r = sim[n]
            drop = min(r["roc_auc_per_type"][t] - base["roc_auc_per_type"][t] for t in base["roc_auc_per_type"])
            b = (n != "ecdf_tail") and r["pr_auc"] > base["pr_auc"] and drop >= -0.01
            sim_cells = [f"{r['pr_auc']:.4f}", f"{r['roc_auc']:.4f}", f"{drop:+.4f}", "yes" if b else "no"]
            row["simulation"] = {"pr_auc": r["pr_auc"], "roc_auc": r["roc_auc"], "worst_type_roc_auc_change": drop,
                                 "roc_auc_per_type": r["roc_auc_per_type"], "met": b}
        rows[n] = row
        print(f"| {n} | {' | '.join(cells)} | {mean} | {'yes' if c['met'] else 'no'} | {' | '.join(sim_cells)} |")
    best = {f: max((d for d in merged.get(f, {}) if d.startswith("pyod:")), key=lambda d: merged[f][d]["roc_auc"],
                   default=None)
            for f in FILES}
    print("best PyOD: " + ", ".join(f"{Path(f).stem} {best[f]} {merged[f][best[f]]['roc_auc']:.5f}" if best[f]
                                    else f"{Path(f).stem} none given" for f in FILES))
    if not all("files" in a[n] for n in names):
        print("A not judged for some: " + a[names[0]].get("why", ""))
    both = [n for n in names if rows[n]["adbench"]["met"] and rows[n].get("simulation", {}).get("met")]
    print("both halves hold for: " + (", ".join(both) if both else "none of these"))
    if args.out:
        Path(args.out).write_text(json.dumps({"sim": args.sim, "candidates": {n: CANDIDATES.get(n) for n in names},
                                              "ours": ours, "simulation": sim, "results": rows},
                                             indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
