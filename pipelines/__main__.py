"""Thin CLI over the steps: `python -m pipelines <step>`.

Daily steps take the run date from `--as-of` (default: `as_of` in params.yaml) and read and
write that date's partitions under `storage`; every path can still be given explicitly.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import uuid

from pipelines.errors import TransientWarehouseError, UserError, write_failure

RAW_EVENTS = "data/raw/events.parquet"
RAW_LABELS = "data/raw/labels.parquet"
DAILY_STEPS = ("ingest", "clean", "features", "sequences", "train", "evaluate", "promote", "score", "publish",
               "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="parameters file (default: $PIPELINES_PARAMS or params.yaml)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log info and progress to stderr even when it is not a terminal (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only: no info, no progress")
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")

    def daily(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--as-of", help="the run date, YYYY-MM-DD (default: as_of in params.yaml)")
        return p

    p = sub.add_parser("simulate", help="generate a labelled event log (params: simulate)")
    p.add_argument("--events-out", default=RAW_EVENTS)
    p.add_argument("--labels-out", default=RAW_LABELS)

    p = daily("ingest", "read events (contract, REES46, Taobao, RetailRocket; local or s3://)")
    p.add_argument("--source", help="overrides ingest.source")
    p.add_argument("--out", help="default: <data>/ingested/as_of=<date>/events.parquet")

    p = daily("clean", "coerce types, drop exact duplicates, quarantine bad rows")
    p.add_argument("--in", dest="inp")
    p.add_argument("--out")
    p.add_argument("--quarantine")
    p.add_argument("--report")

    p = sub.add_parser("validate", help="run one Great Expectations suite on a Parquet file")
    p.add_argument("--suite", required=True, choices=["raw", "clean", "features", "sequences", "scores"])
    p.add_argument("--data", required=True)
    p.add_argument("--report-dir", default="reports/validation")

    p = daily("features", "per-user features as of the run date (params: features)")
    p.add_argument("--in", dest="inp")
    p.add_argument("--out")

    p = daily("sequences", "each user's last events as tokens, for the sequence detectors (params: sequences)")
    p.add_argument("--in", dest="inp")
    p.add_argument("--out")

    p = daily("train", "fit the configured detector and register it as a model version (params: train)")
    p.add_argument("--features")
    p.add_argument("--labels", help="optional: record the version's held-out metrics (never used to fit)")

    p = daily("evaluate", "held-out metrics and curves of a model version on labelled users")
    p.add_argument("--labels", default=RAW_LABELS)
    p.add_argument("--model", help="a model version (default: the one trained for the date)")
    p.add_argument("--features")
    p.add_argument("--metrics")
    p.add_argument("--plots")

    p = daily("promote", "the gate: make the newly trained model the champion if it is not worse (params: promote)")
    p.add_argument("--candidate", help="a model version (default: the one trained for the date)")
    p.add_argument("--labels", help="labels for the gate's metric; without them the unlabelled checks apply")
    p.add_argument("--force", action="store_true", help="promote whatever the gate says, and record that")

    p = daily("score", "score, rank, explain and flag every user with the champion (params: score)")
    p.add_argument("--features")
    p.add_argument("--model", help="a model version (default: the champion)")
    p.add_argument("--out")

    p = daily("report", "the day's drift figures and self-contained HTML run report again (score writes them)")
    p.add_argument("--scores", help="default: <data>/scores/as_of=<date>/scores.parquet")
    p.add_argument("--labels", help="adds PR/ROC curves and recall per abuse type (default: report.labels)")
    p.add_argument("--out", help="default: <reports>/as_of=<date>/report.html")

    p = daily("publish", "replace the date's rows of the flagged-users table in one transaction")
    p.add_argument("--scores")
    p.add_argument("--run-id", help="recorded with the rows (default: PIPELINES_RUN_ID or random)")
    p.add_argument("--experiment", action="store_true",
                   help="publish to warehouse.experiment_url (what dvc repro uses), not the production warehouse")
    p.add_argument("--warehouse", help="overrides the target URL for this call")

    p = sub.add_parser("run", help="the whole pipeline on your own events file (contract section 5)")
    p.add_argument("--events", required=True)
    p.add_argument("--labels")
    p.add_argument("--out", required=True)
    p.add_argument("--warehouse", help="overrides warehouse.url, e.g. postgresql://user@host/db")
    p.add_argument("--run-id")
    p.add_argument("--as-of", help="default: the day of the file's last event")

    p = sub.add_parser("warehouse", help="set up the warehouse: migrations (owner role) and roles (PostgreSQL)")
    wsub = p.add_subparsers(dest="warehouse_command", required=True, metavar="COMMAND")
    for name, help in (("migrate", "apply the pending schema migrations, in order (run as the owner role)"),
                       ("grant-reader", "create or update a read-only role: SELECT on the tables and views"),
                       ("grant-writer", "create or update the publishing role: SELECT, INSERT, DELETE, no DDL")):
        w = wsub.add_parser(name, help=help)
        if name != "migrate":
            w.add_argument("name", metavar="NAME", help="the PostgreSQL role")
            w.add_argument("--password-env", metavar="VAR",
                           help="set the role's password from this environment variable (never on the command line)")
        w.add_argument("--warehouse", help="the URL (default: WAREHOUSE_URL or warehouse.url)")
        w.add_argument("--experiment", action="store_true", help="the experiment warehouse (warehouse.experiment_url)")

    p = sub.add_parser("benchmark", help="detectors on an ADBench-style .npz (contract section 6)")
    p.add_argument("--npz", required=True)
    p.add_argument("--detectors", help="comma-separated, ours or pyod:IForest, pyod:ECOD, pyod:AutoEncoder, "
                                       "pyod:DeepSVDD (default: every table detector of ours)")
    p.add_argument("--with-pyod", action="store_true", help="also PyOD's IForest, ECOD, AutoEncoder, DeepSVDD")
    p.add_argument("--out", help="write the metrics JSON here")

    p = sub.add_parser("registry", help="model versions, the champion and the promotion history")
    p.add_argument("--limit", type=int, default=5, help="decisions to show, newest last")

    p = sub.add_parser("show", help="the registry, then the top flagged users of a day and its metrics")
    p.add_argument("--as-of", help="day (default: the latest in the table)")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--experiment", action="store_true", help="read the experiment table (what dvc repro publishes)")
    p.add_argument("--warehouse", help="read this warehouse URL instead")
    _verbosity_options(sub)
    return parser


def _verbosity_options(sub: argparse._SubParsersAction) -> None:
    """-v / -q after any (sub)command too (`score -v` as `-v score`); kept apart from the
    top-level ones (dest sub_*, no default), which a subcommand's default would overwrite."""
    for p in sub.choices.values():
        p.add_argument("-v", "--verbose", dest="sub_verbose", action="count", default=argparse.SUPPRESS,
                       help="log info and progress to stderr even when it is not a terminal (-vv: debug)")
        p.add_argument("-q", "--quiet", dest="sub_quiet", action="store_true", default=argparse.SUPPRESS,
                       help="warnings and errors only: no info, no progress")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _verbosity_options(action)


def dispatch(args: argparse.Namespace) -> dict | None:
    from pipelines import progress, stages
    from pipelines.config import load_params, override, section

    params = load_params(args.params, required=args.step not in ("run", "benchmark", "validate", "warehouse"))
    if getattr(args, "as_of", None):
        params = override(params, "as_of", args.as_of)
    as_of = params.get("as_of")
    if args.step in DAILY_STEPS:  # (run learns its date from the events; simulate has none)
        progress.update(as_of=as_of)
    if args.step in DAILY_STEPS and not as_of:
        raise UserError("no run date: pass --as-of YYYY-MM-DD or set as_of in params.yaml")
    if args.step == "simulate":
        return stages.simulate_stage(params, args.events_out, args.labels_out)
    if args.step == "ingest":
        return stages.ingest_stage(params, as_of, source=args.source, out=args.out)
    if args.step == "clean":
        return stages.clean_stage(params, as_of, args.inp, args.out, args.quarantine, args.report)
    if args.step == "validate":
        from pipelines.validate import validate_file

        summary = validate_file(args.data, args.suite, args.report_dir)
        return {k: summary[k] for k in ("suite", "success", "evaluated", "failed", "rows")}
    if args.step == "features":
        return stages.features_stage(params, as_of, args.inp, args.out)
    if args.step == "sequences":
        return stages.sequences_stage(params, as_of, args.inp, args.out)
    if args.step == "train":
        info = stages.train_stage(params, as_of, args.features, labels=args.labels)
        return {k: info[k] for k in ("as_of", "detector", "model_version", "users_trained_on", "users_held_out",
                                     "features")}
    if args.step == "evaluate":
        return stages.evaluate_stage(params, as_of, args.labels, args.features, args.model, args.metrics, args.plots)
    if args.step == "promote":
        return stages.promote_stage(params, as_of, candidate=args.candidate, labels=args.labels, force=args.force)
    if args.step == "score":
        return stages.score_stage(params, as_of, args.features, args.model, args.out)
    if args.step == "report":
        return stages.report_stage(params, as_of, scores_in=args.scores, labels=args.labels, report_out=args.out)
    if args.step == "publish":
        return stages.publish_stage(params, as_of, args.scores, run_id=args.run_id, experiment=args.experiment,
                                    url=args.warehouse)
    if args.step == "run":
        from pipelines.run import run_pipeline

        if args.warehouse:
            os.environ["WAREHOUSE_URL"] = args.warehouse
        return run_pipeline(args.events, args.out, params, labels=args.labels, run_id=args.run_id,
                            as_of=args.as_of)
    if args.step == "warehouse":
        from pipelines import warehouse

        target = warehouse.Target.from_params(params, url=args.warehouse, experiment=args.experiment)
        if args.warehouse_command == "migrate":
            return warehouse.migrate(target)
        grant = warehouse.grant_reader if args.warehouse_command == "grant-reader" else warehouse.grant_writer
        password = warehouse.password_from_env(args.password_env) if args.password_env is not None else None
        return grant(target, args.name, password=password)
    if args.step == "benchmark":
        from pathlib import Path

        from pipelines import io
        from pipelines.benchmark import PYOD, benchmark, load_npz
        from pipelines.detectors import REGISTRY

        X, y = load_npz(args.npz)
        names = [d.strip() for d in args.detectors.split(",")] if args.detectors else \
            [n for n in sorted(REGISTRY) if REGISTRY[n].input_kind == "table"]
        result = benchmark(X, y, names + (list(PYOD) if args.with_pyod else []), section(params, "train"))
        result["dataset"] = Path(args.npz).name
        if args.out:
            io.write_json(result, args.out)
        return result
    if args.step == "registry":
        from pipelines.show import print_registry

        print_registry(params, args.limit)
        return None
    if args.step == "show":
        from pipelines.show import show

        show(params, args.as_of, args.limit, experiment=args.experiment, url=args.warehouse)
        return None
    raise AssertionError(args.step)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipelines import progress

    verbose = args.verbose + getattr(args, "sub_verbose", 0)
    progress.setup_cli_logging(progress.cli_level(verbose, args.quiet or getattr(args, "sub_quiet", False)))
    # the run id of the log lines; publish records the same one with the day's rows
    run_id = getattr(args, "run_id", None) or os.environ.get("PIPELINES_RUN_ID") or uuid.uuid4().hex[:12]
    if hasattr(args, "run_id"):
        args.run_id = run_id
    try:
        with progress.context(step=args.step, as_of=getattr(args, "as_of", None), run_id=run_id):
            result = dispatch(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TransientWarehouseError as exc:  # worth retrying as it is: a distinct status for schedulers
        print(f"error (temporary, retry later): {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a full disk or an unwritable folder: one line, not a traceback
        failure = write_failure(exc)
        if failure is None:
            raise
        print(f"error: {failure}", file=sys.stderr)
        return failure.exit_code
    if result is not None:
        print(json.dumps(result, default=str, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
