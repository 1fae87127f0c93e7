"""Bring your own events (contract section 5): the whole pipeline on one file, no code edits.

Everything lands under `out_dir` (its own partitions, reports and model registry), so a run
never touches the repository's DVC outputs. Every user with an event in the file is scored,
whatever `features.history_days` or `score.active_within_days` say for daily runs.
"""
from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import pickle
import resource
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from pipelines import io, stages
from pipelines.config import override, section
from pipelines.layout import Layout

log = logging.getLogger("pipelines")


def run_pipeline(events: str, out_dir: str, params: dict[str, Any], labels: str | None = None,
                 run_id: str | None = None, as_of: str | None = None) -> dict[str, Any]:
    """Ingest, clean, validate, build features (and event sequences for a sequence detector), fit
    and register the configured detector, make it this folder's champion, score every user,
    publish the flagged users to the configured warehouse, and evaluate when labels are given. `as_of` defaults to the day of the last event."""
    from pipelines.detectors import get_detector_class
    from pipelines.features import resolve_as_of

    out = Path(out_dir)
    lay = Layout.under(str(out))
    params = override(params, "storage", {"data": lay.data, "reports": lay.reports, "models": lay.models})
    params = override(params, "features.history_days", None)
    params = override(params, "score.active_within_days", None)
    if labels:  # the run report gets the labelled section (PR and ROC curves, recall per type)
        params = override(params, "report.labels", labels)
    work, validation = out / "work", str(out / "validation")
    summary: dict[str, Any] = {}
    steps = _Steps(isolated=_isolate(params, events))
    # the run date is only known once the events are clean, so the first steps get explicit paths
    summary["ingest"] = steps.ingest_stage(params, None, source=events, out=str(work / "ingested.parquet"),
                                            validation_dir=validation)
    summary["clean"] = steps.clean_stage(params, None, events_in=str(work / "ingested.parquet"),
                                          out=str(work / "clean.parquet"), quarantine_out=str(out / "quarantine.parquet"),
                                          report_out=str(out / "clean_report.json"), validation_dir=validation)
    day = str(resolve_as_of(str(work / "clean.parquet"), as_of))
    # the day's partition names too, where the run report reads the events read, the quarantine
    # reasons and the users' daily activity (the same file under a second name, not a copy)
    _link(work / "clean.parquet", Path(lay.clean(day)))
    _link(out / "clean_report.json", Path(lay.report(day, "clean_report.json")))
    summary["features"] = steps.features_stage(params, day, events_in=str(work / "clean.parquet"),
                                                out=str(out / "features.parquet"), validation_dir=validation)
    sequences = None
    if get_detector_class(params["train"]["detector"]).reads_sequences_for(params["train"]):
        sequences = str(out / "sequences.parquet")
        summary["sequences"] = steps.sequences_stage(params, day, events_in=str(work / "clean.parquet"),
                                                      out=sequences, validation_dir=validation)
    summary["train"] = steps.train_stage(params, day, features_in=str(out / "features.parquet"),
                                          report_out=str(out / "train_report.json"), labels=labels,
                                          sequences_in=sequences)
    version = summary["train"]["model_version"]
    # the contract: `run` scores with the model it fits; the decision is recorded as forced
    summary["promote"] = steps.promote_stage(params, day, candidate=version, features_in=str(out / "features.parquet"),
                                              labels=labels, force=True, sequences_in=sequences)
    summary["score"] = steps.score_stage(params, day, features_in=str(out / "features.parquet"), model=version,
                                          out=str(out / "scores.parquet"), validation_dir=validation,
                                          sequences_in=sequences)
    summary["publish"] = steps.publish_stage(params, day, scores_in=str(out / "scores.parquet"), run_id=run_id)
    if labels:
        metrics = steps.evaluate_stage(params, day, labels, features_in=str(out / "features.parquet"), model=version,
                                        metrics_out=str(out / "metrics.json"), plots_dir=str(out / "plots"),
                                        sequences_in=sequences)
        summary["evaluate"] = {k: metrics[k] for k in ("roc_auc", "pr_auc", "precision_at_k", "recall_at_k")}
    if steps.isolated:
        summary["steps"] = steps.resources
    return summary


def _isolate(params: dict[str, Any], events: str) -> bool:
    p = section(params, "run")
    if p["isolate_steps"] != "auto":
        return bool(p["isolate_steps"])
    try:
        fs, path = io._fs(events)
        size = fs.size(path)
    except (OSError, ValueError):  # ingest says what is wrong with the path, in one line
        return False
    return size is not None and size >= float(p["isolate_above_mb"]) * 2**20


class _Steps:
    """The stages, each called in the same process or, isolated, in a forked child that returns
    its result (or its exception, traceback attached) and whose memory goes when it exits."""

    def __init__(self, isolated: bool):
        self.isolated, self.resources = isolated, {}
        if isolated:
            _import_shared_modules()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        step = getattr(stages, name)
        if not self.isolated:
            return step

        @functools.wraps(step)
        def in_child(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result, peak_kib = _in_child(step, args, kwargs)
            self.resources[name.removesuffix("_stage")] = {
                "seconds": round(time.perf_counter() - start, 1), "peak_rss_gib": round(peak_kib / 2**20, 2)}
            return result

        return in_child


def _import_shared_modules() -> None:
    """Import, once, what several steps import for themselves: each forked step inherits the
    modules, where each would otherwise pay for the import again (Great Expectations alone takes
    3-5 s, and ingest, clean, features, sequences and score all validate)."""
    import great_expectations  # noqa: F401


def _in_child(step: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[Any, int]:
    # fork: the child has the parent's imports and logging, and nothing heavy to copy (the
    # parent only sequences the steps); its exit returns everything it allocated
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(send, step, args, kwargs), daemon=False)
    child.start()
    send.close()
    try:
        outcome = receive.recv()
    except EOFError:  # killed (the OOM killer, a signal) before it could say anything
        child.join()
        raise RuntimeError(f"{step.__name__} died in its own process (exit {child.exitcode}); "
                           f"run it with run.isolate_steps: false to see it in this one") from None
    child.join()
    kind, value, peak_kib = outcome
    if kind == "error":
        raise value
    return value, peak_kib


def _child_main(send, step: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        outcome: tuple = ("ok", step(*args, **kwargs))
    except BaseException as exc:  # sent to the parent, which raises it as if the step ran there
        exc.add_note("in the step's own process:\n" + "".join(traceback.format_exception(exc)).rstrip())
        try:
            pickle.dumps(exc)
        except Exception:  # an exception that cannot travel: its text does
            exc = RuntimeError(f"{type(exc).__name__}: {exc}\n" + "".join(getattr(exc, "__notes__", [])))
        outcome = ("error", exc)
    send.send((*outcome, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    send.close()
    os._exit(0)  # no atexit handlers or finalizers of the parent's objects in the child


def _link(src: Path, dst: Path) -> None:
    """`dst` names the file `src` (a hard link, or a copy where links are refused), replacing
    what was there in one rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
