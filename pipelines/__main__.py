"""Thin CLI over the steps: `python -m pipelines <step>`. Default paths are the DVC layout."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pipelines.errors import UserError

RAW_EVENTS = "data/raw/events.parquet"
RAW_LABELS = "data/raw/labels.parquet"
INGESTED = "data/ingested/events.parquet"
CLEAN = "data/clean/events.parquet"
QUARANTINE = "data/clean/quarantine.parquet"
CLEAN_REPORT = "reports/clean_report.json"
FEATURES = "data/features/features.parquet"
MODEL = "models/detector"
TRAIN_REPORT = "reports/train.json"
SCORES = "data/scores/scores.parquet"
METRICS = "metrics.json"
PLOTS = "plots"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    parser.add_argument("--params", help="parameters file (default: $PIPELINES_PARAMS or params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")

    p = sub.add_parser("simulate", help="generate a labelled event log (params: simulate)")
    p.add_argument("--events-out", default=RAW_EVENTS)
    p.add_argument("--labels-out", default=RAW_LABELS)

    p = sub.add_parser("ingest", help="read events (contract, REES46, Taobao, RetailRocket; local or s3://)")
    p.add_argument("--source", help="overrides ingest.source")
    p.add_argument("--out", default=INGESTED)

    p = sub.add_parser("clean", help="coerce types, drop exact duplicates, quarantine bad rows")
    p.add_argument("--in", dest="inp", default=INGESTED)
    p.add_argument("--out", default=CLEAN)
    p.add_argument("--quarantine", default=QUARANTINE)
    p.add_argument("--report", default=CLEAN_REPORT)

    p = sub.add_parser("validate", help="run one Great Expectations suite on a Parquet file")
    p.add_argument("--suite", required=True, choices=["raw", "clean", "features", "scores"])
    p.add_argument("--data", required=True)
    p.add_argument("--report-dir", default="reports/validation")

    p = sub.add_parser("features", help="per-user features as of a day (params: features)")
    p.add_argument("--in", dest="inp", default=CLEAN)
    p.add_argument("--out", default=FEATURES)

    p = sub.add_parser("train", help="fit the configured detector (params: train)")
    p.add_argument("--features", default=FEATURES)
    p.add_argument("--model", default=MODEL)
    p.add_argument("--report", default=TRAIN_REPORT)

    p = sub.add_parser("score", help="score, rank, explain and flag every user; write the warehouse table")
    p.add_argument("--features", default=FEATURES)
    p.add_argument("--model", default=MODEL)
    p.add_argument("--out", default=SCORES)
    p.add_argument("--run-id", help="recorded with the flagged rows (default: PIPELINES_RUN_ID or random)")
    p.add_argument("--no-warehouse", action="store_true", help="only write the scores file")

    p = sub.add_parser("evaluate", help="metrics and plots on held-out labelled users")
    p.add_argument("--scores", default=SCORES)
    p.add_argument("--labels", default=RAW_LABELS)
    p.add_argument("--metrics", default=METRICS)
    p.add_argument("--plots", default=PLOTS)

    p = sub.add_parser("run", help="the whole pipeline on your own events file (contract section 5)")
    p.add_argument("--events", required=True)
    p.add_argument("--labels")
    p.add_argument("--out", required=True)
    p.add_argument("--warehouse", help="overrides warehouse.url, e.g. postgresql://user@host/db")
    p.add_argument("--run-id")

    p = sub.add_parser("benchmark", help="detectors on an ADBench-style .npz (contract section 6)")
    p.add_argument("--npz", required=True)
    p.add_argument("--detectors", help="comma-separated (default: all)")
    p.add_argument("--out", help="write the metrics JSON here")

    p = sub.add_parser("show", help="print the top flagged users of a day from the warehouse")
    p.add_argument("--as-of", help="day (default: the latest in the table)")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--metrics", default=METRICS, help="also print these metrics if the file exists")
    return parser


def dispatch(args: argparse.Namespace) -> dict | None:
    from pipelines import stages
    from pipelines.config import load_params, section

    params = load_params(args.params, required=args.step not in ("run", "benchmark", "validate"))
    if args.step == "simulate":
        return stages.simulate_stage(params, args.events_out, args.labels_out)
    if args.step == "ingest":
        return stages.ingest_stage(params, args.out, source=args.source)
    if args.step == "clean":
        return stages.clean_stage(params, args.inp, args.out, args.quarantine, args.report)
    if args.step == "validate":
        from pipelines.validate import validate_file

        summary = validate_file(args.data, args.suite, args.report_dir)
        return {k: summary[k] for k in ("suite", "success", "evaluated", "failed", "rows")}
    if args.step == "features":
        return stages.features_stage(params, args.inp, args.out)
    if args.step == "train":
        return stages.train_stage(params, args.features, args.model, args.report)
    if args.step == "score":
        return stages.score_stage(params, args.features, args.model, args.out, run_id=args.run_id,
                                  write_warehouse=not args.no_warehouse)
    if args.step == "evaluate":
        return stages.evaluate_stage(params, args.scores, args.labels, args.metrics, args.plots)
    if args.step == "run":
        from pipelines.run import run_pipeline

        if args.warehouse:
            os.environ["WAREHOUSE_URL"] = args.warehouse
        return run_pipeline(args.events, args.out, params, labels=args.labels, run_id=args.run_id)
    if args.step == "benchmark":
        from pipelines import io
        from pipelines.benchmark import benchmark, load_npz

        X, y = load_npz(args.npz)
        names = [d.strip() for d in args.detectors.split(",")] if args.detectors else None
        from pipelines.detectors import REGISTRY

        result = benchmark(X, y, names or sorted(REGISTRY), section(params, "train"))
        result["dataset"] = Path(args.npz).name
        if args.out:
            io.write_json(result, args.out)
        return result
    if args.step == "show":
        show(params, args.as_of, args.limit, args.metrics)
        return None
    raise AssertionError(args.step)


def show(params: dict, as_of: str | None, limit: int, metrics_path: str) -> None:
    from pipelines.config import warehouse_target
    from pipelines.warehouse import read_table

    table = read_table(*warehouse_target(params))
    if table.empty:
        print("no flagged users in the warehouse yet")
        return
    day = as_of or str(max(table["as_of"]))
    rows = table[table["as_of"].astype("str") == day].sort_values("rank").head(limit)
    print(f"Top {len(rows)} of {int((table['as_of'].astype('str') == day).sum())} flagged users on {day} "
          f"(model {rows['model_version'].iloc[0] if len(rows) else '-'}):")
    for r in rows.itertuples():
        hint = f" [{r.anomaly_types}]" if r.anomaly_types else ""
        print(f"  #{r.rank:<3} {r.user_id:<12} score={r.score:.3f}{hint}  {r.reasons}")
    if Path(metrics_path).exists():
        m = json.loads(Path(metrics_path).read_text())
        print(f"Held-out evaluation ({m['holdout_users']} users, {m['holdout_anomalies']} abusers): "
              f"ROC-AUC {m['roc_auc']:.3f}, PR-AUC {m['pr_auc']:.3f}, "
              f"precision@{m['k']} {m['precision_at_k']:.3f}, recall@{m['k']} {m['recall_at_k']:.3f}")
        per_type = ", ".join(f"{t} {v:.2f}" for t, v in sorted(m["recall_per_type"].items()))
        print(f"Recall per abuse type at the budget: {per_type}")
        auc_per_type = ", ".join(f"{t} {v:.3f}" for t, v in sorted(m.get("roc_auc_per_type", {}).items()))
        print(f"ROC-AUC per abuse type (how well each is ranked, whatever the budget): {auc_per_type}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        result = dispatch(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if result is not None:
        print(json.dumps(result, default=str, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
