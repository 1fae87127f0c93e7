"""The steps with their I/O: read inputs, call the pure step function, validate the dataset at
its boundary, write outputs atomically. DVC stages, `python -m pipelines run` and the Airflow
DAGs all call these, so the logic exists once.

Every step takes the run date (`as_of`) from its caller and, unless given explicit paths,
reads and writes the partitions of that date (pipelines/layout.py). Steps return small dicts
(counts, paths, versions), never data.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from pipelines import io
from pipelines.config import section
from pipelines.errors import UserError
from pipelines.layout import Layout, parse_as_of, require_features
from pipelines.progress import logged_step, parquet_rows
from pipelines.registry import Registry

log = logging.getLogger("pipelines")


def check(df: pd.DataFrame, suite: str, validation_dir: str | os.PathLike | None, **options: Any) -> dict:
    """Great Expectations at a dataset boundary: raises ValidationFailed with a short summary.
    Reports and Data Docs go to validation_dir/<suite>/ (for an object store, the summary only)."""
    from pipelines.validate import validate_dataframe

    if validation_dir is None:
        summary = validate_dataframe(df, suite, report_dir=None, **options)
    elif io.is_local(validation_dir):
        summary = validate_dataframe(df, suite, report_dir=Path(validation_dir) / suite, **options)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                summary = validate_dataframe(df, suite, report_dir=Path(tmp), **options)
            finally:
                local_summary = Path(tmp) / f"{suite}.json"
                if local_summary.exists():
                    io.write_bytes(local_summary.read_bytes(), io.join(str(validation_dir), suite, f"{suite}.json"))
    log.info("validation %s: %s of %s expectations passed", suite, summary["evaluated"] - summary["failed"],
             summary["evaluated"])
    return summary


@logged_step("simulate")
def simulate_stage(params: dict, events_out: str, labels_out: str) -> dict:
    from pipelines.simulate import simulate

    events, labels = simulate(section(params, "simulate"))
    io.write_parquet(events, events_out)
    io.write_parquet(labels, labels_out)
    return {"events": len(events), "users": len(labels), "anomalous_users": int(labels["is_anomaly"].sum())}


@logged_step("ingest")
def ingest_stage(params: dict, as_of: str | None, source: str | None = None, out: str | None = None,
                 validation_dir: str | None = None) -> dict:
    from pipelines.ingest import ingest

    paths = _DatedPaths(params, as_of)
    p = section(params, "ingest")
    source = str(source or p["source"])
    events = ingest(source, p["format"])
    validation = validation_dir or paths.validation()
    out = out or paths.ingested()
    # the file is written while the raw suite runs, and kept only if it passes
    io.write_parquet(_parquet_safe(events), out, while_writing=lambda: check(events, "raw", validation))
    return {"as_of": paths.as_of, "source": source, "rows": len(events), "out": str(out)}


@logged_step("clean")
def clean_stage(params: dict, as_of: str | None, events_in: str | None = None, out: str | None = None,
                quarantine_out: str | None = None, report_out: str | None = None,
                validation_dir: str | None = None) -> dict:
    from pipelines.clean import clean

    paths = _DatedPaths(params, as_of)
    quarantine_out = quarantine_out or paths.quarantine()
    clean_events, quarantine, report = clean(io.read_parquet(events_in or paths.ingested()), section(params, "clean"))
    report = {"as_of": paths.as_of, **report}
    # the quarantine and the accounting are the evidence a user needs when the run stops here
    io.write_parquet(quarantine, quarantine_out)
    io.write_json(report, report_out or paths.report("clean_report.json"))
    if report["rows_clean"] == 0:
        reasons = ", ".join(f"{n} {r}" for r, n in report["quarantine_reasons"].items())
        raise UserError(f"no usable events: all {report['rows_in']} rows were quarantined ({reasons}); "
                        f"see {quarantine_out}")
    validation = validation_dir or paths.validation()
    # the file is written while the clean suite runs, and kept only if it passes
    io.write_parquet(clean_events, out or paths.clean(), while_writing=lambda: check(clean_events, "clean", validation))
    return report


@logged_step("features")
def features_stage(params: dict, as_of: str, events_in: str | None = None, out: str | None = None,
                   report_out: str | None = None, validation_dir: str | None = None) -> dict:
    from pipelines.features import build_features, window_suffixes

    as_of, lay = parse_as_of(as_of), Layout.from_params(params)
    p = {**section(params, "features"), "as_of": as_of}
    with io.local_copy(events_in or lay.clean(as_of)) as local_events:  # DuckDB scans a local file
        # one DuckDB query does all the work, so there is no progress to show, only its start and end
        log.info("building features from %s events with one DuckDB query", parquet_rows(local_events) or "the")
        features = build_features(str(local_events), p)
    log.info("built %d features for %d users", features.shape[1] - 1, len(features))
    validation = validation_dir or lay.validation(as_of)
    # the file is written while the features suite runs, and kept only if it passes
    io.write_parquet(features, out or lay.features(as_of),
                     while_writing=lambda: check(features, "features", validation, windows=window_suffixes(p)))
    info = {"as_of": as_of, "users": len(features), "features": features.shape[1] - 1,
            **features.attrs.get("population", {}),
            # which signals the log has, and the "small" amount used (features.small_amount: auto)
            **{k: features.attrs[k] for k in ("signals", "small_amount") if k in features.attrs}}
    io.write_json(info, report_out or lay.report(as_of, "features.json"))
    return info


@logged_step("sequences")
def sequences_stage(params: dict, as_of: str, events_in: str | None = None, out: str | None = None,
                    report_out: str | None = None, validation_dir: str | None = None) -> dict:
    """Each user's last events as tokens, for the sequence detectors (pipelines/sequences.py)."""
    from pipelines.sequences import build_sequences

    as_of, lay = parse_as_of(as_of), Layout.from_params(params)
    p = section(params, "sequences")
    with io.local_copy(events_in or lay.clean(as_of)) as local_events:
        frame = build_sequences(str(local_events), as_of, p["max_events"], p["threads"], p["memory_limit"])
    validation = validation_dir or lay.validation(as_of)
    # the file is written while the sequences suite runs, and kept only if it passes
    io.write_parquet(frame, out or lay.sequences(as_of), while_writing=lambda: check(frame, "sequences", validation))
    info = {"as_of": as_of, **frame.attrs["population"]}
    io.write_json(info, report_out or lay.report(as_of, "sequences.json"))
    return info


@logged_step("train")
def train_stage(params: dict, as_of: str, features_in: str | None = None, report_out: str | None = None,
                labels: str | None = None, sequences_in: str | None = None) -> dict:
    """Fit the configured detector (labels reach the fit only for a supervised detector) and
    register it as a version. With labels, the version's metadata also holds its held-out
    metrics. training_history.json holds a deep detector's losses per epoch (empty for others)."""
    from pipelines.promote import figures_key, model_figures
    from pipelines.split import heldout_users
    from pipelines.train import train

    as_of, lay = parse_as_of(as_of), Layout.from_params(params)
    features_path = features_in or lay.features(as_of)
    features = _read_features(features_path, as_of)
    label_frame = _read_labels(labels)
    sequences_path = sequences_in or lay.sequences(as_of)
    sequences = sequences_loader(sequences_path, as_of)
    # the held-out users once for the step (a hash of every user id: 0.55 CPU s at a million users),
    # the same mask for the fit, the gate's figures and the drift reference
    held_out = heldout_users(features, section(params, "train"))
    log.info("fitting %s on the features of %d users", section(params, "train")["detector"], len(features))
    detector, info = train(features, section(params, "train"), label_frame, sequences, held_out=held_out)
    log.info("fitted %s on %d users", section(params, "train")["detector"], info["users_trained_on"])
    history = info.get("fit", {}).pop("history", [])
    io.write_json(history, lay.report(as_of, "training_history.json"))
    figures, _ = model_figures(detector, features, label_frame, section(params, "train"),
                               section(params, "score"), sequences, held=held_out)
    record = {
        "trained_as_of": as_of,
        "training_data": {"as_of": as_of, "users": info["users_total"], "rows_trained_on": info["users_trained_on"],
                          "users_held_out": info["users_held_out"], "sha256": info["training_data_sha256"]},
        "train_params": section(params, "train"),
        "metrics": figures,
        # what the figures were measured on: promote reuses them when its day's inputs are the same
        "figures_key": figures_key(features_path, labels, params, sequences_path),
    }
    from pipelines.drift import REFERENCE_FILE, reference_for_training

    reference = reference_for_training(detector, features, section(params, "train"), section(params, "drift"),
                                       sequences, int(section(params, "score")["batch_users"]), held=held_out)
    version = Registry(lay.models).register(detector, record, extra_json={REFERENCE_FILE: reference})
    info.update({"as_of": as_of, "model_version": version, "registry": lay.models, "metrics": figures})
    io.write_json(info, report_out or lay.report(as_of, "train.json"))
    return info


@logged_step("evaluate")
def evaluate_stage(params: dict, as_of: str, labels: str, features_in: str | None = None,
                   model: str | None = None, metrics_out: str | None = None, plots_dir: str | None = None,
                   sequences_in: str | None = None) -> dict:
    """Held-out metrics and curves of a model version (default: the one trained for this date)."""
    from pipelines.evaluate import evaluate, read_labels
    from pipelines.score import score_users

    as_of, lay = parse_as_of(as_of), Layout.from_params(params)
    version = model or _trained_version(lay, as_of)
    features = _read_features(features_in or lay.features(as_of), as_of)
    scores = score_users(features, Registry(lay.models).load(version), section(params, "score"), as_of,
                         explain=False, sequences=sequences_loader(sequences_in or lay.sequences(as_of), as_of))
    metrics, plots = evaluate(scores, read_labels(labels), section(params, "train"))
    plots_dir = plots_dir or lay.report(as_of, "plots")
    for name, rows in plots.items():
        io.write_json(rows, io.join(plots_dir, f"{name}.json"))
    metrics = {"as_of": as_of, "model_version": version, **metrics}
    io.write_json(metrics, metrics_out or lay.report(as_of, "metrics.json"))
    return metrics


@logged_step("promote")
def promote_stage(params: dict, as_of: str, candidate: str | None = None, features_in: str | None = None,
                  labels: str | None = None, force: bool = False, report_out: str | None = None,
                  sequences_in: str | None = None) -> dict:
    """The gate: the candidate (default: the model trained for this date) against the champion.
    The candidate's figures are train's when train measured them on these same inputs; the
    features are read only when some model still has to score them."""
    from pipelines.promote import figures_key, gate

    as_of, lay = parse_as_of(as_of), Layout.from_params(params)
    candidate = candidate or _trained_version(lay, as_of)
    features_path = features_in or lay.features(as_of)
    require_features(features_path, as_of)
    sequences_path = sequences_in or lay.sequences(as_of)
    registry = Registry(lay.models)
    record = registry.get(candidate)
    measured = (record.get("trained_as_of") == as_of
                and record.get("figures_key") == figures_key(features_path, labels, params, sequences_path))
    decision = gate(registry, candidate, lambda: _read_features(features_path, as_of), _read_labels(labels), as_of,
                    params, force=force, sequences=sequences_loader(sequences_path, as_of),
                    candidate_figures=record["metrics"] if measured else None)
    io.write_json(decision, report_out or lay.report(as_of, "promotion.json"))
    return {k: decision[k] for k in ("as_of", "candidate", "champion_before", "champion_after", "promoted",
                                      "forced", "reason")}


@logged_step("score")
def score_stage(params: dict, as_of: str, features_in: str | None = None, model: str | None = None,
                out: str | None = None, report_out: str | None = None, validation_dir: str | None = None,
                sequences_in: str | None = None) -> dict:
    """Score, rank, explain and flag every user of the day with the champion (or `model`)."""
    from pipelines.score import active_users, batch_rows, score_batches

    as_of, lay = parse_as_of(as_of), Layout.from_params(params)
    p = section(params, "score")
    registry = Registry(lay.models)
    version = model or registry.champion_version(required=True)
    detector = registry.load(version)
    counts = {"users": 0, "inactive": 0}

    def active_batches(batches):
        for batch in batches:
            active = active_users(batch, p["active_within_days"])
            counts["users"] += len(batch)
            counts["inactive"] += int((~active).sum())
            yield batch if active.all() else batch.loc[active]  # everyone active: no copy of the batch

    features_path = features_in or lay.features(as_of)
    # for the progress: every user of a local file is scored, unless only the active ones are
    total = parquet_rows(features_path) if p["active_within_days"] is None and io.is_local(features_path) else None
    with _feature_batches(features_path, as_of, batch_rows(detector, int(p["batch_users"])),
                          _scoring_columns(detector, p)) as batches:
        scores = score_batches(active_batches(batches), detector, p, as_of,
                               sequences=sequences_loader(sequences_in or lay.sequences(as_of), as_of), total=total)
    validation, out = validation_dir or lay.validation(as_of), out or lay.scores(as_of)
    # the file is written while the scores suite runs, and kept only if it passes
    io.write_parquet(scores, out, while_writing=lambda: check(scores, "scores", validation))
    info = {
        "as_of": as_of,
        "model_version": version,
        "users_in_features": counts["users"],
        "users_scored": int(len(scores)),
        "left_out": {"inactive_for_more_than_active_within_days": counts["inactive"]},
        "active_within_days": p["active_within_days"],
        "flagged": int(scores["flagged"].sum()),
        "out": str(out),
    }
    io.write_json(info, report_out or lay.report(as_of, "score.json"))
    # the day's drift figures and run report, beside score.json (report_stage below)
    info.update(report_stage(params, as_of, scores_in=out, features_in=features_in, model=version,
                             sequences_in=sequences_in))
    return info


def _scoring_columns(detector: Any, score_params: dict) -> list[str] | None:
    """The feature columns scoring reads: a table model's own (a day's table has many more,
    for analysts and drift, and decoding them was a tenth of scoring a million users), the ids,
    and the recency that score.active_within_days selects by. None (all) for a model without
    a list of its features."""
    if detector.input_kind == "sequence" or detector.feature_names_ is None:
        return None
    extra = ["days_since_last_event"] if score_params["active_within_days"] is not None else []
    return ["user_id", *detector.feature_names_, *extra]


@logged_step("report")
def report_stage(params: dict, as_of: str, scores_in: str | None = None, features_in: str | None = None,
                 model: str | None = None, labels: str | None = None, report_out: str | None = None,
                 sequences_in: str | None = None) -> dict:
    """Drift of the day's features and scores against the scoring model's training data
    (drift.json, drift.parquet; a warning in the log above drift.psi_warn), then the day's
    self-contained HTML run report (report.html). The score step runs it; `python -m pipelines
    report` reruns it, e.g. with labels (default: report.labels)."""
    from pipelines.drift import day_drift
    from pipelines.report import build_report

    as_of, lay = parse_as_of(as_of), Layout.from_params(params)
    scores_in = scores_in or lay.scores(as_of)
    if not io.exists(scores_in):
        raise UserError(f"{scores_in}: no scores for {as_of}; run the score step for that date first")
    registry = Registry(lay.models)
    version = model or _scored_version(scores_in)
    drift = day_drift(params, as_of, registry, version, features_in or lay.features(as_of), scores_in,
                      sequences_loader(sequences_in or lay.sequences(as_of), as_of))
    drift_path = lay.report(as_of, "drift.json")
    io.write_json(drift, drift_path)
    if drift.get("features") is not None:
        from pipelines.drift import drift_rows

        io.write_parquet(drift_rows(as_of, version, drift), lay.report(as_of, "drift.parquet"))
    labels = labels or section(params, "report")["labels"]
    html = build_report(params, as_of, lay, registry, version, scores_in, drift,
                        _read_labels(labels) if labels else None)
    out = report_out or lay.run_report(as_of)
    io.write_text(html, out)
    log.info("run report for %s: %s", as_of, out)
    return {"report": str(out), "drift": drift["status"], "drifted": drift.get("drifted", [])}


def _scored_version(scores_path: str) -> str:
    import pyarrow.parquet as pq

    with io.local_copy(scores_path) as local:
        first = pq.ParquetFile(local).read_row_group(0, columns=["model_version"]).column(0)
    if not len(first):
        raise UserError(f"{scores_path}: no scored users")
    return str(first[0])


@logged_step("publish")
def publish_stage(params: dict, as_of: str, scores_in: str | None = None, run_id: str | None = None,
                  experiment: bool = False, url: str | None = None, report_out: str | None = None) -> dict:
    """Make the day's flagged users the only rows of that day in the warehouse table, in one
    transaction. `experiment` publishes to warehouse.experiment_url (what DVC uses). The scores
    are read in batches, so memory does not grow with the number of users."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipelines import warehouse

    as_of, lay = parse_as_of(as_of), Layout.from_params(params)
    if section(params, "drift")["block_publish_on_severe"]:
        from pipelines.drift import check_publish

        check_publish(as_of, lay.report(as_of, "drift.json"))
    target = warehouse.Target.from_params(params, url=url, experiment=experiment)
    src = scores_in or lay.scores(as_of)
    if not io.exists(src):
        raise UserError(f"{src}: no scores for {as_of}; run the score step for that date first")
    run_id = run_id or os.environ.get("PIPELINES_RUN_ID") or uuid.uuid4().hex
    scored_at = pd.Timestamp(dt.datetime.now(dt.timezone.utc))
    fs, path = io._fs(src)  # io's filesystem (local, or s3:// with its endpoint and credentials)
    with fs.open(path, "rb") as fh:
        scores = pq.ParquetFile(fh)

        def batches():
            for batch in scores.iter_batches(batch_size=65536):
                days = {str(d) for d in pc.unique(batch.column("as_of")).to_pylist()}
                if days - {as_of}:
                    raise UserError(f"the scores to publish are as of {', '.join(sorted(days))}, not {as_of}")
                yield batch

        flagged = warehouse.flagged_batches(batches(), run_id, scored_at)
        everyone = warehouse.score_batches(batches(), run_id, scored_at) if target.user_scores else None
        written = warehouse.publish(target, as_of, flagged, everyone,
                                    lock_timeout_s=section(params, "warehouse")["lock_timeout_s"])
    info = {"as_of": as_of, "rows": written["rows"], "table": target.table, "schema": target.schema,
            "warehouse": redact(target.url), "run_id": run_id, "experiment": experiment}
    if "user_scores_rows" in written:
        info["user_scores_rows"] = written["user_scores_rows"]
    snapshot = snapshot_reports(lay, as_of, run_id, info)
    if snapshot is not None:
        info["reports"] = snapshot
    # the pointer, replaced last: it names the run whose reports are complete and published
    io.write_json(info, report_out or lay.report(as_of, "publish.json"))
    return info


def snapshot_reports(lay: Layout, as_of: str, run_id: str, published: dict) -> str | None:
    """The day's reports as this run left them, copied under a prefix of the run's own,
    `<reports>/runs/as_of=D/run=ID/`, with a meta.json (what was published, each file's sha256)
    written last: a reader of that prefix never sees a mix of two runs' reports, which the day's
    folder, replaced file by file by each step, can show while a day is rerun. An existing
    snapshot of the same run id is kept (a retried publish). None when the day has no reports."""
    import hashlib
    import shutil

    day = lay.report_dir(as_of)
    if not io.listdir(day):
        return None
    target = io.join(lay.reports, "runs", f"as_of={as_of}", f"run={_safe_run_id(run_id)}")
    with io.get_dir(day) as source, tempfile.TemporaryDirectory(prefix="pipelines-snapshot-") as tmp:
        copy = Path(tmp) / "snapshot"
        # publish.json is the day's pointer, rewritten after this; meta.json says what it will say
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns(".*", "publish.json", io.COMPLETE_MARKER))
        files = {f.relative_to(copy).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
                 for f in sorted(copy.rglob("*")) if f.is_file()}
        meta = {"as_of": as_of, "run_id": run_id, "published": published, "files": files}
        (copy / io.COMPLETE_MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        io.put_dir(copy, target)
    return target


def _safe_run_id(run_id: str) -> str:
    """Airflow's run ids hold ':' and '+' (scheduled__2026-11-21T00:00:00+00:00): one path segment."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._") or "run"


class _DatedPaths:
    """The layout's paths for a date; ingest and clean may run undated (`run` learns its date
    from the clean events), and then every path must be given explicitly."""

    def __init__(self, params: dict, as_of: str | None):
        self.as_of = parse_as_of(as_of) if as_of is not None else None
        self.layout = Layout.from_params(params)

    def __getattr__(self, name: str):
        method = getattr(self.layout, name)

        def dated(*args: Any) -> str:
            if self.as_of is None:
                raise UserError(f"no run date: pass --as-of YYYY-MM-DD (needed for the default {name} path)")
            return method(self.as_of, *args)

        return dated


def _trained_version(lay: Layout, as_of: str) -> str:
    path = lay.report(as_of, "train.json")
    if not io.exists(path):
        raise UserError(f"no model trained for {as_of} ({path} missing); run the train step for that date "
                        f"or name a model version")
    return io.read_json(path)["model_version"]


def _read_features(path: str, as_of: str) -> pd.DataFrame:
    require_features(path, as_of)
    features = io.read_parquet(path)
    recorded = features.attrs.get("as_of")
    if recorded != as_of:
        raise UserError(f"{path}: features are as of {recorded or 'an unknown day'}, not {as_of}; "
                        f"rebuild them with the features step")
    return features


@contextlib.contextmanager
def _feature_batches(path: str, as_of: str, size: int,
                     columns: list[str] | None = None) -> Iterator[Iterator[pd.DataFrame]]:
    """The day's feature table, `size` users at a time (never all of it in memory at once);
    only those of `columns` the file has, in the file's order, when given (default: all)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    require_features(path, as_of)
    with io.local_copy(path) as local:
        try:
            table = pq.ParquetFile(local)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"{path}: cannot read as Parquet ({str(exc).splitlines()[0]})") from exc
        attrs = json.loads((table.schema_arrow.metadata or {}).get(b"PANDAS_ATTRS", b"{}"))
        if attrs.get("as_of") != as_of:
            raise UserError(f"{path}: features are as of {attrs.get('as_of') or 'an unknown day'}, not {as_of}; "
                            f"rebuild them with the features step")
        keep = None if columns is None else set(columns)
        wanted = None if keep is None else [c for c in table.schema_arrow.names if c in keep]
        yield (batch.to_pandas().reset_index(drop=True)
               for batch in table.iter_batches(batch_size=size, columns=wanted))


def sequences_loader(path: str, as_of: str):
    """Reads the day's sequences the first time a sequence detector asks for them (never for a
    table detector: the sequences step need not have run)."""
    @functools.cache
    def load():
        from pipelines.sequences import EventSequences

        if not io.exists(path):
            raise UserError(f"{path}: no event sequences for {as_of}; the detector reads them: run the "
                            f"sequences step for that date first")
        frame = io.read_parquet(path)
        if frame.attrs.get("as_of") != as_of:
            raise UserError(f"{path}: sequences are as of {frame.attrs.get('as_of') or 'an unknown day'}, "
                            f"not {as_of}; rebuild them with the sequences step")
        return EventSequences.from_frame(frame)

    return load


def _read_labels(labels: str | None) -> pd.DataFrame | None:
    if not labels:
        return None
    from pipelines.evaluate import read_labels

    return read_labels(labels)


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Raw data may mix types in one column (CSV text next to numbers): store those as text."""
    mixed = [c for c in df.columns if df[c].dtype == object]
    if not mixed:
        return df
    return df.assign(**{c: df[c].astype("str").where(df[c].notna()) for c in mixed})


def redact(url: str) -> str:
    """The URL with any password hidden (SQLAlchemy's rendering; see pipelines.warehouse.redact)."""
    from pipelines.warehouse import redact as warehouse_redact

    return warehouse_redact(url)
