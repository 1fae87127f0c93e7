"""Progress and log context for the long steps.

Every log line of a step carries the step, the as-of date and the run id. The CLI
(`python -m pipelines`) sets them with `context(...)` and prints them through its own
formatter; the Airflow task wrappers (dags/pipelines_tasks.py) set them with `embed=True`,
which writes them into the message of every `pipelines.*` record, because there Airflow's own
handlers format the line:

    2026-12-02T01:02:03Z INFO score as_of=2026-11-30 run=abc123 scored 100000 of 1000000 users (10%)

`Progress` is a tqdm bar when its stream (stderr) is a terminal, and plain log lines at most
every PIPELINES_PROGRESS_SECONDS (default 30) plus one at the end when it is not (a file, a
pipe, an Airflow task log). It shows nothing when the `pipelines.progress` logger is not
enabled for INFO (`-q`, or a library caller that configured no logging). A step without a
Progress of its own (features' one DuckDB query, a detector's fit) says "still running after
N s" every PIPELINES_PROGRESS_SECONDS while it runs (`logged_step`).

A plain CLI command off a terminal with neither -v nor -q (cron, CI, `nohup ... > log`) keeps
quiet about what is quick and speaks up about what is slow: its `pipelines` lines are warnings
and errors only, but the `pipelines.progress` lines are INFO, and they start only once a step
has run for PIPELINES_PROGRESS_SECONDS, so a short command prints nothing (scripts and tests get
just the outcome) while a long step shows its progress and its end as in Airflow. -v shows
every line; a terminal shows bars and every info line.

Only the standard library is imported here (tqdm only when a bar is drawn): the DAG files
import this module at task time.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import os
import sys
import threading
import time
from typing import IO, Any, Callable, Iterator

log = logging.getLogger("pipelines")
progress_log = logging.getLogger("pipelines.progress")

_CONTEXT: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("pipelines_log_context", default={})
_active_bars = 0  # bars being drawn: the CLI handler then writes through tqdm.write
_slow_only = False  # the plain CLI default off a terminal: progress lines only once a step is slow
# cli_level's level for that default: the `pipelines` loggers say warnings, `pipelines.progress` info
PROGRESS_WHEN_SLOW = logging.INFO + 5


# ----------------------------------------------------------------------------- context


def current() -> dict[str, Any]:
    """The log context in force: step, as_of, run_id (any may be missing)."""
    return dict(_CONTEXT.get())


def prefix() -> str:
    """'score as_of=2026-11-30 run=abc123 ' for the context in force, '' outside any."""
    ctx = _CONTEXT.get()
    if not ctx.get("step"):
        return ""
    return f"{ctx['step']} as_of={ctx.get('as_of') or '-'} run={ctx.get('run_id') or '-'} "


@contextlib.contextmanager
def context(step: str | None = None, as_of: Any = None, run_id: str | None = None,
            embed: bool | None = None) -> Iterator[None]:
    """Set the step, as-of date and run id of the log lines inside; what is None is inherited.
    `embed`: also write them into the message of `pipelines.*` records (for handlers that are
    not ours, as in Airflow)."""
    ctx = dict(_CONTEXT.get())
    for key, value in (("step", step), ("as_of", as_of), ("run_id", run_id), ("embed", embed)):
        if value is not None:
            ctx[key] = str(value) if key != "embed" else bool(value)
    if ctx.get("embed"):
        _install_record_factory()
    token = _CONTEXT.set(ctx)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def update(**values: Any) -> None:
    """Change the context in force in place (e.g. once the CLI knows the run date)."""
    ctx = dict(_CONTEXT.get())
    ctx.update({k: str(v) for k, v in values.items() if v is not None})
    _CONTEXT.set(ctx)


class ContextFilter(logging.Filter):
    """Sets record.context (the prefix) on every record through a handler, for a format with
    %(context)s."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "context"):
            record.context = prefix()
        return True


_factory_installed = False


def _install_record_factory() -> None:
    """Once per process: records of `pipelines.*` loggers made inside an `embed` context get
    the prefix at the front of their message (and record.context set to '')."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ctx = _CONTEXT.get()
        if ctx.get("embed") and (record.name == "pipelines" or record.name.startswith("pipelines.")):
            text = prefix()
            if text:
                record.msg = (text.replace("%", "%%") if record.args else text) + str(record.msg)
                record.context = ""
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def logged_step(name: str) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Decorate a step function of stages.py: its log lines carry `name` and its `as_of`
    argument, and it logs its start and its end with the time taken and the counts it returns."""

    def decorate(fn: Callable[..., dict]) -> Callable[..., dict]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> dict:
            try:
                as_of = signature.bind_partial(*args, **kwargs).arguments.get("as_of")
            except TypeError:
                as_of = None
            with context(step=name, as_of=as_of or None):
                log.info("started")
                start = time.perf_counter()
                with _Heartbeat() as beat:
                    result = fn(*args, **kwargs)
                took = time.perf_counter() - start
                log.info("done in %.1f s%s", took, _counts(result))
                if beat.spoke and not log.isEnabledFor(logging.INFO):
                    # the plain default: a slow step's end, after its progress lines
                    progress_log.info("done in %.1f s%s", took, _counts(result))
            return result

        return run

    return decorate


class _Heartbeat:
    """"still running after N s" on `pipelines.progress` every PIPELINES_PROGRESS_SECONDS while
    a step runs, from a daemon thread in the step's log context; silent while a Progress of the
    step reports (a progress line within the interval), inside another step's heartbeat, or when the interval is 0 (every Progress
    line shown: tests) or progress is off (-q). `spoke`: whether any progress line was logged
    during the step (its own or a Progress's)."""

    _depth = 0
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.interval = _interval()
        self.spoke = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lines_before = _lines_logged

    def __enter__(self) -> "_Heartbeat":
        with self._lock:
            _Heartbeat._depth += 1
            outermost = _Heartbeat._depth == 1
        if outermost and self.interval > 0 and progress_log.isEnabledFor(logging.INFO):
            ctx = contextvars.copy_context()
            self._thread = threading.Thread(target=ctx.run, args=(self._beat,), daemon=True,
                                            name="pipelines-heartbeat")
            self._thread.start()
        return self

    def _beat(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.interval):
            if time.monotonic() - _last_line_at >= self.interval * 0.9:  # no Progress line meanwhile
                _log_progress("still running after %.1f s", time.monotonic() - started)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            _Heartbeat._depth -= 1
        self.spoke = _lines_logged != self._lines_before


_lines_logged = 0  # progress lines logged so far (a step's end is logged in the plain default if any was)
_last_line_at = 0.0  # time.monotonic() of the last one


def _log_progress(message: str, *args: Any, logger: logging.Logger | None = None) -> None:
    global _lines_logged, _last_line_at
    _lines_logged += 1
    _last_line_at = time.monotonic()
    (logger or progress_log).info(message, *args)


def _counts(result: Any) -> str:
    if not isinstance(result, dict):
        return ""
    shown = [f"{k}={v}" for k, v in result.items()
             if (isinstance(v, int) and not isinstance(v, bool)) or k in ("model_version", "detector", "drift")]
    return (": " + ", ".join(shown[:8])) if shown else ""


# ----------------------------------------------------------------------------- CLI logging


class _Handler(logging.StreamHandler):
    """stderr, through tqdm.write while a bar is drawn (so a log line does not tear the bar)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not _active_bars:
            return super().emit(record)
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must not fail the step
            self.handleError(record)


def cli_level(verbose: int = 0, quiet: bool = False, stream: IO | None = None) -> int:
    """-q: warnings only (no info, no progress; an error still prints its one line). -v: info
    (progress as log lines when stderr is not a terminal), -vv: debug. Neither: info with bars
    in a terminal; otherwise PROGRESS_WHEN_SLOW: warnings, and the plain progress lines of a
    step once it has run for PIPELINES_PROGRESS_SECONDS (a quick command prints nothing)."""
    if quiet:
        return logging.WARNING
    if verbose >= 2:
        return logging.DEBUG
    if verbose == 1 or _isatty(stream or sys.stderr):
        return logging.INFO
    return PROGRESS_WHEN_SLOW


def setup_cli_logging(level: int, stream: IO | None = None) -> logging.Handler:
    """One stderr handler on the root logger, lines like
    `2026-12-02T01:02:03Z INFO score as_of=2026-11-30 run=abc123 <message>` (UTC); `level`
    applies to the `pipelines` loggers (PROGRESS_WHEN_SLOW: warnings, and progress lines at
    INFO once a step is slow)."""
    global _slow_only
    handler = _Handler(stream or sys.stderr)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(context)s%(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # `level` for the pipeline's own loggers; other libraries (Great Expectations is chatty at
    # INFO) say only warnings, or their info with -vv
    _slow_only = level == PROGRESS_WHEN_SLOW
    logging.getLogger("pipelines").setLevel(logging.WARNING if _slow_only else level)
    logging.getLogger("pipelines.progress").setLevel(logging.INFO if _slow_only else logging.NOTSET)
    root.setLevel(logging.WARNING if level >= logging.INFO else logging.INFO)
    return handler


# ----------------------------------------------------------------------------- progress


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def bar_wanted(stream: Any = None, logger: logging.Logger | None = None) -> bool:
    """Whether a tqdm bar belongs on `stream` (default stderr): a terminal, and progress not
    silenced (-q). For code that draws its own bar (e.g. tqdm(..., disable=not bar_wanted()))."""
    return (logger or progress_log).isEnabledFor(logging.INFO) and _isatty(stream or sys.stderr)


def _interval() -> float:
    try:
        return float(os.environ.get("PIPELINES_PROGRESS_SECONDS", "30"))
    except ValueError:
        return 30.0


class Progress:
    """Progress of `total` items (None: unknown), e.g. Progress("scored", 1_000_000, "users").

    update(n, note) after each piece of work; close() (or the with block) at the end. A tqdm
    bar on a terminal; otherwise INFO lines "scored 100000 of 1000000 users (10%)" at most
    every `interval_s` seconds and a last one at close; nothing when INFO is disabled."""

    def __init__(self, what: str, total: int | None = None, unit: str = "", *, stream: IO | None = None,
                 interval_s: float | None = None, logger: logging.Logger | None = None):
        global _active_bars
        self.what, self.total, self.unit = what, total, unit
        self.logger = logger or progress_log
        self.interval_s = _interval() if interval_s is None else interval_s
        self.done, self.note, self.closed, self._logged = 0, "", False, -1
        self.started = self._last = time.monotonic()
        self.enabled = self.logger.isEnabledFor(logging.INFO)
        stream = stream or sys.stderr
        self.bar = None
        if bar_wanted(stream, self.logger):
            from tqdm import tqdm  # a dependency of DVC and of this environment already

            step = current().get("step")
            self.bar = tqdm(total=total, desc=f"{step} {what}" if step else what, unit=f" {unit}" if unit else "it",
                            file=stream, dynamic_ncols=True, leave=True,
                            unit_scale=total is None or total >= 10_000)
            _active_bars += 1

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        self.note = note
        if self.bar is not None:
            if note:
                self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self._last >= self.interval_s:
            self._line()

    def close(self) -> None:
        global _active_bars
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
            _active_bars -= 1
        elif self.enabled and (self.done != self._logged or not self.done):
            # the plain CLI default: a last line only for what was slow enough to have had one
            if not _slow_only or self._logged >= 0 or time.monotonic() - self.started >= self.interval_s:
                self._line()

    def _line(self) -> None:
        self._last, self._logged = time.monotonic(), self.done
        unit = f" {self.unit}" if self.unit else ""
        head = f"{self.what} {self.done} of {self.total}{unit}" if self.total else f"{self.what} {self.done}{unit}"
        detail = [f"{100 * self.done / self.total:.0f}%"] if self.total else []
        detail.append(f"{self._last - self.started:.1f} s")
        _log_progress("%s (%s)%s", head, ", ".join(detail), f" {self.note}" if self.note else "", logger=self.logger)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def parquet_rows(path: Any) -> int | None:
    """Rows of a local Parquet file from its footer (None when it cannot be read cheaply)."""
    try:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(str(path)).metadata.num_rows)
    except Exception:  # noqa: BLE001 - only for a log line
        return None
