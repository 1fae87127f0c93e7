"""Per-user behaviour features as of a date, over trailing windows, computed in DuckDB.

Short windows (`windows_days`, column suffix `_{w}d`) end at the end of the as-of UTC day; beside
them the "history" window (suffix `_hist`) holds everything before that end, or the last
`history_days` days of it. Every user with an event in the history window gets one row; a user
quiet in a short window gets that window's empty values (zeros, or the documented defaults).

Point-in-time correct: only events strictly before the end of the as-of day are read, so
anything that happens later cannot change a feature of that day.

With features.review_text.enabled, three columns from pipelines.review_text say how close a
user's review texts come to other accounts' (max_review_similarity_other,
near_duplicate_review_share, accounts_sharing_review_text), among the reviews in the history
window (history_days; all before the end when it is null): 0 for a user with no text review,
NULL for everyone when the log has no review text (attrs["signals"]["review_text"] False).

Missing signals are left empty (NULL, NaN in the table), never filled with a stand-in that
changes what the feature means. Decided per signal:

- Platform level, a signal the log does not carry at all (its column entirely NULL, or no event
  of that type, before the end of the as-of day): every feature built on it is NULL for every
  user. Sessions (`session_id`): distinct_sessions_*, events_per_session_*. Devices:
  distinct_devices_*, n_new_devices_*, max_accounts_sharing_device. IPs: distinct_ips_*,
  max_accounts_sharing_ip. Countries: distinct_countries_*, n_new_countries_*. Prices (no
  purchase with a price): purchase_value_*, avg/max_purchase_price_*, refund_value_*,
  small_purchase_share_*, small_failed_payment_share_*. Signups: account_age_days,
  hours_signup_to_first_purchase, signed_up_in_window. Failed payments: share_payment_failed_*,
  failed_payment_ratio_*, small_failed_payment_share_*. Logins (login or login_failed):
  share_login_failed_*, login_fail_ratio_*. Reviews: share_review_*, avg_rating_*,
  five_star_share_*, unbought_review_share_28d (ratings all NULL: avg_rating_*, five_star_share_*
  too). Refunds: share_refund_*, refund_ratio_*, median_hours_to_refund_28d. Which signals were
  missing is in attrs["signals"]. Event counts (n_review_*, ...) stay counts of what was logged.
- User level, where the platform has the signal but this user has none of it: no signup event
  for the user gives account_age_days and hours_signup_to_first_purchase NULL (the time since
  the user's first event would measure how long the log goes back, not the account's age);
  events in a window but none with a session id gives events_per_session NULL for that window.
  Otherwise a user quiet in a window keeps that window's empty values (zeros, or the
  documented defaults), which are real values there (no refund: refund_ratio 0).

"Small" amounts (small_purchase_share_*, small_failed_payment_share_*) are relative to the
platform: with `small_amount: auto` the threshold is the `small_amount_quantile` quantile of
the purchase prices in the history window (a number gives a fixed threshold); the value used
is in attrs["small_amount"].
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import os
import re
import tempfile
from typing import Any, Callable

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import default_params
from pipelines.errors import UserError

SHARE_TYPES = ("view", "cart", "purchase", "payment_failed", "refund", "review", "login_failed")
EVENT_COUNTS = ("view", "cart", "remove_from_cart", "purchase", "payment_failed", "refund", "review", "login", "login_failed")

# the share_{type} columns that need a signal the log may not carry (module docstring)
_SHARE_SIGNALS = {"payment_failed": ("payments_failed",), "refund": ("refunds",), "review": ("reviews",),
                  "login_failed": ("logins",)}

_DECIMALS = 9
_BATCH_ROWS = 8192  # rows per batch streamed out of DuckDB into the result
_STREAM_MEMORY_SHARE = 0.75  # of features.memory_limit, for DuckDB while the result streams out (_by_user)
_FEW_ROWS_SHARE = 20  # the as-of day "set by a handful of rows": it holds under 1/20 of a typical day
HISTORY = "hist"  # column suffix of the history window

# params.yaml's features section (one schema in pipelines/config.py); as_of None means the
# day of the last event. The "_hist" window reaches history_days back (None: every event).
DEFAULTS: dict[str, Any] = {"as_of": None, **default_params()["features"]}


def resolve_as_of(events: Any, as_of: str | dt.date | None) -> dt.date:
    """The as-of date given, or the UTC day of the latest event.

    Cleaning quarantines times no event can have (after the ingest time, before the floor), so
    what is left are real events and the latest of them is the day every user's events fall
    into. When only a handful of rows are on that day (a typical day has 20 times more), they
    alone set the run date and the short windows are nearly empty: a warning says so.
    """
    if as_of is not None:
        try:
            return pd.Timestamp(as_of).date()
        except (ValueError, TypeError) as exc:
            raise UserError(f"features.as_of must be a date like 2026-11-21, not {as_of!r}") from exc
    with _connect(None) as con:
        _register(con, events)
        # The session time zone is UTC, so the cast gives the UTC day (and needs no pytz).
        days = con.execute("SELECT CAST(event_time AS DATE) AS day, count(*) AS n FROM events "
                           "WHERE event_time IS NOT NULL GROUP BY day ORDER BY day").fetchall()
    if not days:
        raise UserError("no events to build features from")
    latest, on_latest = days[-1]
    typical = float(np.median([n for _, n in days]))
    if len(days) > 1 and on_latest * _FEW_ROWS_SHARE < typical:
        before = days[-2][0]
        logging.getLogger(__name__).warning(
            "run date %s is set by %d event(s) on that day (a typical day has %d; the day before with events is %s);"
            " pass --as-of to choose the day", latest, on_latest, round(typical), before)
    return latest


def build_features(events: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per user with an event in the history window ending at the as-of day; float features.

    `events` is a clean events DataFrame, a pyarrow Table or a Parquet path. The result's
    attrs hold "as_of" (ISO date), "signals" ({signal: present in the log}, see the module
    docstring), "small_amount" ({"setting", "quantile", "value"}: the threshold used, None
    when there are no prices) and "population": {"users_with_events" (any event before the
    end of the as-of day), "users_scored" (rows), "left_out_outside_history" (the difference),
    "history_days", "windows" (the column suffixes, as window_suffixes gives them)}.
    """
    p = {**DEFAULTS, **(params or {})}
    windows = _parse_windows(p["windows_days"])
    history_days = _parse_history_days(p["history_days"], windows)
    as_of = resolve_as_of(events, p["as_of"])
    end = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
    with _connect(p["threads"], p.get("memory_limit")) as con:
        _register(con, events)
        signals = _signals(con, end)
        small = _small_amount(con, p, end, history_days, signals)
        try:
            for statement in _feature_statements(windows, history_days, end, small["value"], signals):
                statement(con) if callable(statement) else con.execute(statement)
            (users_with_events,), = con.execute("SELECT count(*) FROM user_counts").fetchall()
            reviews = _review_rows(con, end, history_days) if p["review_text"].get("enabled") else None
            features = _by_user(con, p.get("memory_limit"))
        except duckdb.OutOfMemoryException as exc:
            raise UserError(f"features.memory_limit {p.get('memory_limit')} is too little for these events "
                            f"(DuckDB: {str(exc).splitlines()[0]}); raise it or set it to null") from exc
    if reviews is not None:
        features = _with_review_text(features, reviews, end, p["review_text"], signals)
    features.attrs["as_of"] = as_of.isoformat()
    features.attrs["signals"] = signals
    features.attrs["small_amount"] = small
    features.attrs["population"] = {
        "users_with_events": users_with_events,
        "users_scored": int(len(features)),
        "left_out_outside_history": users_with_events - int(len(features)),
        "history_days": history_days,
        "windows": [f"{w}d" for w in windows] + [HISTORY],
    }
    return features


def _review_rows(con: duckdb.DuckDBPyConnection, end: pd.Timestamp, history_days: int | None) -> pa.Table:
    """The reviews with a text in the history window (history_days before `end`; None: all
    before it), as every *_hist feature sees the log, read through the step's own view of the events:
    DuckDB's filtered scan costs a quarter of the CPU of review_text reading the file again
    with pyarrow (0.56 against 2.1 CPU s at 200k users, 15M events). No review_text column:
    a table without one, which review_text_features reads as a log with no review text."""
    if "review_text" not in {row[0] for row in con.execute("DESCRIBE events").fetchall()}:
        return pa.table({"user_id": pa.array([], pa.string())})
    start = "" if history_days is None else f" AND event_time >= {_ts(end - pd.Timedelta(days=history_days))}"
    return con.sql("SELECT user_id, event_time, event_type, review_text FROM events WHERE event_type = 'review' "
                   f"AND review_text IS NOT NULL AND event_time < {_ts(end)}{start}").to_arrow_table()


def _with_review_text(features: pd.DataFrame, reviews: pa.Table, end: pd.Timestamp, params: dict[str, Any],
                      signals: dict[str, bool]) -> pd.DataFrame:
    """features with the review-text columns of pipelines.review_text (features.review_text):
    0 for a user with no text review; NULL for everyone, and signals["review_text"] False,
    when the log carries no review text at all."""
    from pipelines.review_text import COLUMNS, review_text_features

    text = review_text_features(reviews, end, {k: v for k, v in params.items() if k != "enabled"})
    names = [c for c in COLUMNS if c not in ("user_id", "review_texts")]  # the count is n_review_*'s
    signals["review_text"] = len(text) > 0
    if text.empty:
        return features.assign(**{name: np.nan for name in names})
    text = text.set_index("user_id")[names].astype("float64")
    joined = text.reindex(features["user_id"].to_numpy()).fillna(0.0)
    return features.assign(**{name: joined[name].to_numpy() for name in names})


def window_suffixes(params: dict[str, Any] | None = None) -> list[str]:
    """The window suffixes of the feature columns for these features params, shortest first:
    e.g. ["1d", "7d", "28d", "hist"] (columns n_events_1d ... n_events_hist)."""
    p = {**DEFAULTS, **(params or {})}
    windows = _parse_windows(p["windows_days"])
    _parse_history_days(p["history_days"], windows)
    return [f"{w}d" for w in windows] + [HISTORY]


def _parse_windows(value: Any) -> list[int]:
    message = f"features.windows_days must list whole days >= 1, e.g. [1, 7, 28], not {value!r}"
    if not isinstance(value, (list, tuple)) or not value:
        raise UserError(message)
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in value):
        raise UserError(message)
    return sorted(set(value))


def _parse_history_days(value: Any, windows: list[int]) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"features.history_days must be whole days >= 1, or null for all history, not {value!r}")
    if value <= windows[-1]:
        raise UserError(
            f"features.history_days must be longer than the longest of windows_days ({windows[-1]}), not {value}"
        )
    return value


def feature_columns(features: pd.DataFrame) -> list[str]:
    return [c for c in features.columns if c != "user_id"]


def _by_user(con: duckdb.DuckDBPyConnection, memory_limit: str | None) -> pd.DataFrame:
    """The features view as a DataFrame in user_id order, rounded.

    The rows stream out of DuckDB in batches and each value goes straight to its user's row
    (feature_row, from _user_counts) in one float block, the frame's own: nothing is sorted,
    written or read back. At 1M users the scratch Parquet file this replaced (write, then read
    back in order) made the step 26-28 s where streaming takes 22-23 s. The block fills while
    DuckDB still holds its tables and the joins' hash tables, so DuckDB gets 3/4 of
    features.memory_limit for the stream: with the whole 2GB the step peaked at 3.71 GiB, with
    1.5GB at 3.25 GiB (the scratch file's 2.74), for 0.7 s more."""
    if memory_limit is not None:
        con.execute(f"SET memory_limit = '{int(_bytes(memory_limit) * _STREAM_MEMORY_SHARE)}B'")
    user_ids = con.sql("SELECT CAST(user_id AS VARCHAR) FROM user_counts WHERE feature_row >= 0 "
                       "ORDER BY feature_row").to_arrow_table().column(0)
    # Integer sums come out as HUGEINT and money as DECIMAL: DOUBLE in DuckDB, not pandas.
    # The stream is the connection's last query: another one would end it.
    stream = con.sql("SELECT feature_row, CAST(COLUMNS(* EXCLUDE (user_id, feature_row)) AS DOUBLE) "
                     "FROM features").to_arrow_reader(_BATCH_ROWS)
    names = stream.schema.names[1:]
    values = np.empty((len(names), len(user_ids)))
    filled = 0
    for batch in stream:
        at = batch.column(0).to_numpy()
        for j, column in enumerate(batch.columns[1:]):
            values[j, at] = column.to_numpy(zero_copy_only=False)  # NULL -> NaN
        filled += len(at)
    if filled != len(user_ids):  # each row exactly once: any other count is a bug in the query
        raise RuntimeError(f"the features query gave {filled} rows for {len(user_ids)} users")
    # Every sum in the query is exact (DECIMAL money, integer microseconds), so a rerun writes
    # the same bytes and DVC retrains nothing; rounding is a second guard against any float
    # aggregate added later, whose parallel order would otherwise leak into the last bits.
    np.round(values, _DECIMALS, out=values)
    frame = pd.DataFrame(values.T, columns=names, copy=False)  # (rows, columns) view: no copy
    frame.insert(0, "user_id", pd.array(user_ids.to_numpy(zero_copy_only=False), dtype="str"))
    return frame


_UNITS = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _bytes(size: str) -> float:
    """'2GB' -> 2e9, '1.5 GiB' -> 1.5 * 2**30: DuckDB's units, as config.py's pattern allows."""
    number, unit = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?)B", size.strip()).groups()
    return float(number) * _UNITS[unit]


# DuckDB memory per event of the history window in user_gaps' one pass (the window over each
# user's events and the median's values): 1M simulated users' 77M events did not fit in 2GB in one
# pass and did in two; 64 cuts them in three
_GAP_BYTES_PER_EVENT = 64


def _gap_parts(events: float, memory_limit: str) -> int:
    """How many parts of the users _user_gaps cuts `events` into under DuckDB's `memory_limit`
    (as current_setting prints it, e.g. '1.8 GiB')."""
    return max(1, math.ceil(events * _GAP_BYTES_PER_EVENT / _bytes(memory_limit)))


def _user_gaps(con: duckdb.DuckDBPyConnection, select: Callable[[str], str]) -> None:
    """Table user_gaps, `select(events)` over the events view ev: in one pass when the history
    window's events fit in DuckDB's memory limit at _GAP_BYTES_PER_EVENT, else over as many
    parts of the users (by a hash of user_id) as it takes, because this pass would not spill
    within the limit. A user's events all fall in one part, so the rows are the same."""
    (events,), = con.execute(f"SELECT coalesce(sum(n_events_{HISTORY}), 0) FROM user_counts").fetchall()
    (limit,), = con.execute("SELECT current_setting('memory_limit')").fetchall()
    parts = _gap_parts(float(events), limit)
    for part in range(parts):
        rows = select("ev" if parts == 1 else f"(SELECT * FROM ev WHERE hash(user_id) % {parts} = {part})")
        con.execute(f"CREATE TEMP TABLE user_gaps AS {rows}" if part == 0 else f"INSERT INTO user_gaps {rows}")


def _connect(threads: int | None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute(f"SET threads = {int(threads or os.cpu_count() or 1)}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = false")  # the result is sorted at the end anyway
    if memory_limit:
        # DuckDB's default is 80% of the machine; past the limit it spills to disk instead
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"SET temp_directory = '{tempfile.gettempdir()}/pipelines-duckdb-{os.getpid()}'")
    return con


def _register(con: duckdb.DuckDBPyConnection, events: Any) -> None:
    if isinstance(events, (str, os.PathLike)):
        path = str(events).replace("'", "''")
        con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{path}')")
    else:
        con.register("events", events)


# signal -> SQL aggregate over the events before the end: true when the log carries it
_SIGNALS = {
    "sessions": "count(session_id) > 0",
    "devices": "count(device_id) > 0",
    "ips": "count(ip) > 0",
    "countries": "count(country) > 0",
    "prices": "count(price) FILTER (WHERE event_type = 'purchase') > 0",
    "ratings": "count(rating) > 0",
    "signups": "count(*) FILTER (WHERE event_type = 'signup') > 0",
    "payments_failed": "count(*) FILTER (WHERE event_type = 'payment_failed') > 0",
    "logins": "count(*) FILTER (WHERE event_type IN ('login', 'login_failed')) > 0",
    "reviews": "count(*) FILTER (WHERE event_type = 'review') > 0",
    "refunds": "count(*) FILTER (WHERE event_type = 'refund') > 0",
}


def _signals(con: duckdb.DuckDBPyConnection, end: pd.Timestamp) -> dict[str, bool]:
    """Which signals the log carries at all before `end` (see the module docstring)."""
    row = con.execute(f"SELECT {', '.join(_SIGNALS.values())} FROM events WHERE event_time < {_ts(end)}").fetchone()
    return {name: bool(v) for name, v in zip(_SIGNALS, row)}


def _small_amount(con: duckdb.DuckDBPyConnection, p: dict[str, Any], end: pd.Timestamp,
                  history_days: int | None, signals: dict[str, bool]) -> dict[str, Any]:
    """The "small amount" threshold: a fixed number, or with "auto" the small_amount_quantile
    quantile of the purchase prices in the history window (None when there are none)."""
    setting, q = p["small_amount"], float(p.get("small_amount_quantile", 0.1))
    if setting != "auto":
        try:
            value = float(setting)
        except (TypeError, ValueError) as exc:
            raise UserError(f"features.small_amount must be a number >= 0 or auto, not {setting!r}") from exc
        return {"setting": value, "quantile": None, "value": value if signals["prices"] else None}
    if not 0 < q < 1:
        raise UserError(f"features.small_amount_quantile must be between 0 and 1, not {q!r}")
    start = "" if history_days is None else f" AND event_time >= {_ts(end - pd.Timedelta(days=history_days))}"
    (value,), = con.execute(
        f"SELECT quantile_cont(CAST(price AS DOUBLE), {q}) FROM events WHERE event_type = 'purchase' "
        f"AND price IS NOT NULL AND isfinite(CAST(price AS DOUBLE)) AND event_time < {_ts(end)}{start}").fetchall()
    return {"setting": "auto", "quantile": q, "value": None if value is None else round(float(value), _DECIMALS)}


def _ts(value: pd.Timestamp) -> str:
    return f"TIMESTAMPTZ '{value.isoformat()}'"


# user_type_bucket's columns as _user_counts reads them: money as whole 1e-4 units (its exact
# DECIMAL sums) in DOUBLE, exact below 2**53 units (9e11 of money; a bucket worth more, which
# cleaning's max_price and max_quantity allow, would overflow BIGINT), times as microseconds
_BUCKET_COLUMNS = """user_id, event_type, bucket, n, n_night, CAST(value * 10000 AS DOUBLE) AS value_e4,
CAST(price_sum * 10000 AS DOUBLE) AS price_sum_e4, n_priced, price_max, n_small, rating_sum, n_rated, n_five,
epoch_us(first_time) AS first_us, epoch_us(last_time) AS last_us, hours_mask"""


def _user_counts(con: duckdb.DuckDBPyConnection, suffixes: list[str]) -> None:
    """Table user_counts: one row per user of user_type_bucket, its per-window sums (window i
    is buckets 0..i) and first and last times, added up in NumPy.

    Eighty-odd FILTERed aggregates over a million users' (user, type, bucket) rows were a quarter
    of the features step in DuckDB; here each is one bincount over the rows of one event type,
    then a running sum over the buckets. Every sum is of whole numbers (counts, money in 1e-4
    units), so float64 adds them exactly, in any order, while they stay below 2**53."""
    rows = con.sql(f"SELECT {_BUCKET_COLUMNS} FROM user_type_bucket").to_arrow_table()
    encoded = pc.dictionary_encode(rows.column("user_id").combine_chunks())
    users, user = encoded.dictionary, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    # users in user_id order: feature_row (below) is then the user's row in the result, and the
    # view's joins stream rows out nearly in that order, so _by_user's stores into the frame
    # are near-sequential, not random (read back from a file, 6.3-9.8 CPU s became 4.5)
    by_id = pc.sort_indices(users).to_numpy()
    users, user = users.take(by_id), np.argsort(by_id)[user]
    n_users, n_windows = len(users), len(suffixes)
    buckets = n_windows + 1  # the last one: outside every window (history_days set), else unused
    # bucket-major cells: a window's running sum over the buckets adds whole rows of users
    cell = rows.column("bucket").to_numpy().astype(np.int64) * n_users + user
    event_type = rows.column("event_type")
    of_type = {t: pc.equal(event_type, t).to_numpy(zero_copy_only=False) for t in (*EVENT_COUNTS, "signup")}

    def column(name: str) -> np.ndarray:
        return rows.column(name).to_numpy(zero_copy_only=False)

    def per_window(values: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """(windows, users) running sums of `values` over the buckets, rows `where` only."""
        at, weights = (cell, values) if where is None else (cell[where], values[where])
        sums = np.bincount(at, weights=weights.astype(np.float64), minlength=n_users * buckets).reshape(buckets, n_users)
        for i in range(1, n_windows):  # row by row: NumPy's cumsum over this short axis is ~5x slower
            sums[i] += sums[i - 1]
        return sums[:n_windows]

    windowed: dict[str, list[pa.Array]] = {}  # name -> one column per window, the 2-D sums let go at once

    def put(name: str, values: np.ndarray) -> None:
        windowed[name] = [pa.array(row) for row in values]

    n, purchase, review = column("n"), of_type["purchase"], of_type["review"]
    events_per_window = per_window(n).astype(np.int64)
    put("n_events", events_per_window)
    # the user's row in the result (users with an event in the history window, in user_id
    # order; -1 for the others), where _by_user puts the user's values straight from DuckDB
    in_history = events_per_window[-1] > 0
    feature_row = np.where(in_history, np.cumsum(in_history) - 1, -1)
    del events_per_window
    for t in EVENT_COUNTS:
        put(f"n_{t}", per_window(n, of_type[t]).astype(np.int64))
    put("n_night_utc", per_window(column("n_night")).astype(np.int64))
    hours = np.zeros(n_users * buckets, dtype=np.uint32)
    np.bitwise_or.at(hours, cell, column("hours_mask").astype(np.uint32))
    put("distinct_active_hours", np.bitwise_count(
        np.bitwise_or.accumulate(hours.reshape(buckets, n_users), axis=0)[:n_windows]).astype(np.int64))
    del hours
    value = np.nan_to_num(column("value_e4").astype(np.float64))
    put("purchase_value", per_window(value, purchase) / 1e4)
    priced = per_window(column("n_priced"), purchase)
    with np.errstate(divide="ignore", invalid="ignore"):  # no priced purchase: 0, as coalesce(x / 0, 0) in SQL
        average = per_window(np.nan_to_num(column("price_sum_e4").astype(np.float64)), purchase) / 1e4 / priced
    put("avg_purchase_price", np.where(priced > 0, average, 0.0))
    most = np.full(n_users * buckets, np.nan)
    np.fmax.at(most, cell[purchase], column("price_max")[purchase])
    put("max_purchase_price", np.nan_to_num(
        np.fmax.accumulate(most.reshape(buckets, n_users), axis=0)[:n_windows], nan=0.0))
    del most
    small = np.nan_to_num(column("n_small").astype(np.float64))
    put("n_small_purchase", per_window(small, purchase).astype(np.int64))
    put("n_small_failed", per_window(small, of_type["payment_failed"]).astype(np.int64))
    put("refund_value", per_window(value, of_type["refund"]) / 1e4)
    rated = per_window(column("n_rated"), review)
    with np.errstate(divide="ignore", invalid="ignore"):
        average = per_window(np.nan_to_num(column("rating_sum").astype(np.float64)), review) / rated
    put("avg_rating", np.where(rated > 0, average, 0.0))
    put("n_five_star", per_window(column("n_five"), review).astype(np.int64))
    out: dict[str, Any] = {"user_id": users, "feature_row": feature_row}
    for i, s in enumerate(suffixes):  # the SQL's column order: a window's columns together, shortest first
        for name, columns in windowed.items():
            out[f"{name}{s}"] = columns[i]

    first, last = column("first_us"), column("last_us")

    def earliest(where: np.ndarray | None = None) -> pa.Array:
        times = np.full(n_users, np.iinfo(np.int64).max)
        np.minimum.at(times, user if where is None else user[where], first if where is None else first[where])
        return pa.array(times, pa.timestamp("us", tz="UTC"), mask=times == np.iinfo(np.int64).max)

    latest = np.full(n_users, np.iinfo(np.int64).min)
    np.maximum.at(latest, user, last)
    out["first_seen"] = earliest()
    out["last_seen"] = pa.array(latest, pa.timestamp("us", tz="UTC"))
    out["signup_time"] = earliest(of_type["signup"])
    out["first_purchase"] = earliest(purchase)
    # a table of DuckDB's own: the features view's joins scanning the Arrow table in place made
    # writing the result 5x slower (24 s against 5 s at 1M users)
    con.register("user_counts_arrow", pa.table(out))
    del out, windowed
    con.execute("CREATE TEMP TABLE user_counts AS SELECT * FROM user_counts_arrow")
    con.unregister("user_counts_arrow")


def _feature_statements(
    windows: list[int], history_days: int | None, end: pd.Timestamp, small_amount: float | None,
    signals: dict[str, bool] | None = None,
) -> list[str]:
    """The steps, in order, that leave one row per user active in the history window in view
    `features` (and every user with an event before `end` in `user_counts`): DuckDB statements,
    and one step in Python that takes the connection (_user_counts).

    Each pass reads only the columns it needs straight from the input (DuckDB scans Parquet
    in parallel; copying the events into a table first was slower). Per-window counts are
    two-level: events are summed per (user, event type, window bucket) once, then windows add
    up buckets. Distinct counts per window come from one GROUPING SETS scan of (user, key)
    pairs with their first and last use, because COUNT(DISTINCT) with a FILTER per window is
    several times slower. The history window is the last, widest one; with history_days None
    it has no start (None below) and holds every event read.
    """
    longest = windows[-1]
    # suffix -> window start; the windows are nested, shortest first
    starts: dict[str, str | None] = {f"_{w}d": _ts(end - pd.Timedelta(days=w)) for w in windows}
    starts[f"_{HISTORY}"] = _ts(end - pd.Timedelta(days=history_days)) if history_days is not None else None
    start_longest, start_hist = starts[f"_{longest}d"], starts[f"_{HISTORY}"]
    purchase, refund, review = "event_type = 'purchase'", "event_type = 'refund'", "event_type = 'review'"
    has = {name: True for name in _SIGNALS} | dict(signals or {})
    if small_amount is None:  # no prices to compare: the small-amount shares are NULL (need "prices")
        has["prices"], small_amount = False, 0.0

    def need(expr: str, *names: str) -> str:
        """`expr AS alias` when the log carries every named signal, else NULL AS alias."""
        if all(has[n] for n in names):
            return expr
        return f"CAST(NULL AS DOUBLE) AS {expr.rsplit(' AS ', 1)[-1]}"

    def since(start: str | None, column: str = "event_time") -> str:
        return "TRUE" if start is None else f"{column} >= {start}"

    def where(cond: str) -> str:
        return "" if cond == "TRUE" else f"WHERE {cond}"

    def filtered(cond: str) -> str:
        return "" if cond == "TRUE" else f" FILTER (WHERE {cond})"

    gaps: list[str] = []
    products: list[str] = []
    for i, (s, start) in enumerate(starts.items()):
        # bucket i holds events newer than window i's start but older than window i-1's:
        # window i is buckets 0..i, so per-window sums come from a few rows per user
        inside = f"bucket <= {i}"

        # The lag runs over the history window. A short window counts the gaps whose later
        # event is in it and whose earlier event is in the longest short window (as when the
        # lag ran over that window alone: gap_bucket); the history window counts every gap it holds.
        gap = "prev_time IS NOT NULL" if s == f"_{HISTORY}" else f"gap_bucket <= {i}"
        gaps += [
            # exact integer sums (gaps in microseconds, HUGEINT squares, log-gaps in 1e-9 steps):
            # a parallel float sum would differ in the last bits from run to run
            f"count(gap_us) FILTER (WHERE {gap}) AS n_gaps{s}",
            f"sum(gap_us) FILTER (WHERE {gap}) AS sum_gap_us{s}",
            f"sum(CAST(gap_us AS HUGEINT) * gap_us) FILTER (WHERE {gap}) AS sumsq_gap_us{s}",
            f"CAST(sum(log_gap_nano) FILTER (WHERE {gap}) AS BIGINT) AS sum_log_gap{s}",
        ]
        # exact, from the newest bucket of each (user, product): a per-window COUNT(DISTINCT),
        # or a HyperLogLog per window, costs many times more with a million users
        products.append(f"count(*){filtered('TRUE' if start is None else inside)} AS distinct_products{s}")

    # mean and population standard deviation of the gaps, in seconds, from the exact sums
    gap_moments = []
    for s in starts:
        gap_moments += [
            f"sum_gap_us{s} / nullif(n_gaps{s}, 0) / 1e6 AS mean_gap{s}",
            f"sqrt(greatest(CAST(n_gaps{s} * sumsq_gap_us{s} - sum_gap_us{s} * sum_gap_us{s} AS DOUBLE), 0))"
            f" / nullif(n_gaps{s}, 0) / 1e6 AS std_gap{s}",
        ]

    def distinct_pass(key: str, name: str, novelty: bool) -> str:
        cols = []
        for s, start in starts.items():
            cols.append(f"count(*){filtered(since(start, 'last_use'))} AS distinct_{name}{s}")
            if novelty:
                # "new" only for accounts seen before the window: for a new account everything is
                # new (so with all history in the window, nothing is)
                new = "FALSE" if start is None else f"first_use >= {start} AND u.first_seen < {start}"
                cols.append(f"count(*) FILTER (WHERE {new}) AS n_new_{name}{s}")
        return f"""
CREATE TEMP VIEW pairs_{name} AS
SELECT user_id, {key} AS key, first_use, last_use FROM pairs
WHERE grouped_by_{name} = 0 AND {key} IS NOT NULL;
CREATE TEMP TABLE distinct_{name} AS
SELECT k.user_id, {", ".join(cols)}
FROM pairs_{name} k JOIN user_counts u USING (user_id)
{where(since(start_hist, "k.last_use"))}
GROUP BY k.user_id"""

    distinct_keys = {
        "sessions": ("session_id", False),
        "devices": ("device_id", True),
        "ips": ("ip", False),
        "countries": ("country", True),
    }

    ratios: list[str] = []
    for s in starts:
        if s != f"_{HISTORY}":
            seconds = str(int(s[1:-1]) * 86400.0)
        elif history_days is not None:
            seconds = str(history_days * 86400.0)
        else:  # all history: from the earliest event read to the end
            seconds = "(SELECT span_s FROM history_span)"
        signal_of = {"sessions": "sessions", "devices": "devices", "ips": "ips", "countries": "countries"}
        ratios += [
            f"n_events{s}",
            *[f"n_{t}{s}" for t in EVENT_COUNTS],
            *[need(f"coalesce(distinct_{name}{s}, 0) AS distinct_{name}{s}", signal_of[name]) for name in distinct_keys],
            f"coalesce(distinct_products{s}, 0) AS distinct_products{s}",
            f"distinct_active_hours{s}",
            f"n_night_utc{s} / greatest(n_events{s}, 1) AS night_share_utc{s}",
            # events in the window but none with a session id: no session to divide by (NULL)
            need(f"CASE WHEN n_events{s} > 0 AND coalesce(distinct_sessions{s}, 0) = 0 THEN NULL "
                 f"ELSE n_events{s} / greatest(coalesce(distinct_sessions{s}, 0), 1) END AS events_per_session{s}",
                 "sessions"),
            # the mix of what a user does, independent of how much they do
            *[need(f"n_{t}{s} / greatest(n_events{s}, 1) AS share_{t}{s}", *_SHARE_SIGNALS.get(t, ()))
              for t in SHARE_TYPES],
            f"coalesce(distinct_products{s}, 0) / greatest(n_events{s}, 1) AS product_diversity{s}",
            f"n_purchase{s} / greatest(n_view{s}, n_purchase{s}, 1) AS conversion_rate{s}",
            f"CASE WHEN n_cart{s} > 0 THEN 1 - least(n_purchase{s}, n_cart{s}) / n_cart{s} ELSE 0 END AS cart_abandon_ratio{s}",
            need(f"n_refund{s} / greatest(n_purchase{s}, n_refund{s}, 1) AS refund_ratio{s}", "refunds"),
            need(f"n_payment_failed{s} / greatest(n_payment_failed{s} + n_purchase{s}, 1) AS failed_payment_ratio{s}",
                 "payments_failed"),
            need(f"n_login_failed{s} / greatest(n_login_failed{s} + n_login{s}, 1) AS login_fail_ratio{s}", "logins"),
            need(f"purchase_value{s}", "prices"),
            need(f"refund_value{s}", "prices"),
            need(f"avg_purchase_price{s}", "prices"),
            need(f"max_purchase_price{s}", "prices"),
            need(f"n_small_purchase{s} / greatest(n_purchase{s}, 1) AS small_purchase_share{s}", "prices"),
            need(f"n_small_failed{s} / greatest(n_payment_failed{s}, 1) AS small_failed_payment_share{s}",
                 "prices", "payments_failed"),
            need(f"avg_rating{s}", "reviews", "ratings"),
            need(f"n_five_star{s} / greatest(n_review{s}, 1) AS five_star_share{s}", "reviews", "ratings"),
            # exp(mean(log gap)): a typical gap that, unlike the mean, one long pause cannot swamp;
            # no repeat activity in the window: the gap is at least the window itself
            f"coalesce(exp(sum_log_gap{s} / 1e9 / nullif(n_gaps{s}, 0)) - 1, {seconds}) AS typical_gap_s{s}",
            # burstiness (Goh & Barabasi): -1 perfectly regular, 0 random, towards 1 bursty
            f"coalesce((std_gap{s} - mean_gap{s}) / nullif(std_gap{s} + mean_gap{s}, 0), 0) AS burstiness{s}",
            need(f"coalesce(n_new_devices{s}, 0) AS n_new_devices{s}", "devices"),
            need(f"coalesce(n_new_countries{s}, 0) AS n_new_countries{s}", "countries"),
            f"coalesce(max_same_product_purchases{s}, 0) AS max_same_product_purchases{s}",
        ]

    same_product_counts = ", ".join(
        f"count(*){filtered(since(start))} AS n_in{s}" for s, start in starts.items()
    )
    same_product = ", ".join(f"max(n_in{s}) AS max_same_product_purchases{s}" for s in starts)
    bucket_starts = [start for start in starts.values() if start is not None]

    def user_gaps(events: str) -> str:
        """the gap features per user, from `events` (ev, or a part of its users)"""
        return f"""
SELECT * EXCLUDE ({", ".join(f"sum_gap_us{s}, sumsq_gap_us{s}" for s in starts)}), {", ".join(gap_moments)}
FROM (
    SELECT user_id, {", ".join(gaps)},
           median(gap_us) FILTER (WHERE gap_bucket < {len(windows)}) / 1e6 AS median_gap_s_{longest}d
    FROM (SELECT *, CAST(round(ln(gap_us / 1e6 + 1) * 1e9) AS BIGINT) AS log_gap_nano
          FROM (SELECT *, epoch_us(event_time) - epoch_us(prev_time) AS gap_us,
                       -- the bucket of a gap within the longest short window (both ends in it), else past them
                       CASE WHEN prev_time >= {start_longest} THEN bucket ELSE {len(windows)} END AS gap_bucket
                FROM (SELECT user_id, event_time, product_id, bucket,
                             lag(event_time) OVER (PARTITION BY user_id ORDER BY event_time) AS prev_time
                      FROM {events} {where(since(start_hist))})))
    GROUP BY user_id)"""

    return [
        f"""
CREATE TEMP VIEW ev AS
SELECT user_id, event_time, event_type,
       -- with all history, the last bucket (ELSE) is the history window's own; else it is outside all
       CAST(CASE {" ".join(f"WHEN event_time >= {start} THEN {i}" for i, start in enumerate(bucket_starts))} ELSE {len(bucket_starts)} END AS UTINYINT) AS bucket,
       CAST(hour(event_time) AS UTINYINT) AS hour,
       session_id, product_id, price, coalesce(quantity, 1) AS qty, device_id, ip, country, rating
FROM events WHERE event_time < {_ts(end)}""",
        f"""
CREATE TEMP TABLE user_type_bucket AS
SELECT user_id, event_type, bucket,
       count(*) AS n,
       count(*) FILTER (WHERE hour < 6) AS n_night,
       -- money as DECIMAL: exact sums, the same to the last digit on every run
       sum(CAST(price AS DECIMAL(18, 4)) * qty) AS value,
       sum(CAST(price AS DECIMAL(18, 4))) AS price_sum,
       count(price) AS n_priced,
       max(price) AS price_max,
       count(*) FILTER (WHERE price < {small_amount}) AS n_small,
       sum(rating) AS rating_sum,
       count(rating) AS n_rated,
       count(*) FILTER (WHERE rating = 5) AS n_five,
       min(event_time) AS first_time,
       max(event_time) AS last_time,
       bit_or(CAST(1 AS UINTEGER) << hour) AS hours_mask
FROM ev GROUP BY ALL""",
        functools.partial(_user_counts, suffixes=list(starts)),
        # what the features view does not read is dropped as soon as it is used: a million
        # users' intermediate tables would otherwise sit beside the result as it streams out
        "DROP TABLE user_type_bucket",
        f"""
CREATE TEMP TABLE history_span AS
SELECT date_diff('microsecond', min(first_seen), {_ts(end)}) / 1e6 AS span_s FROM user_counts""",
        functools.partial(_user_gaps, select=user_gaps),
        # one scan builds every (user, key) pair table; GROUPING() tells the sets apart
        f"""
CREATE TEMP TABLE pairs AS
SELECT user_id, {", ".join(key for key, _ in distinct_keys.values())},
       {", ".join(f"grouping({key}) AS grouped_by_{name}" for name, (key, _) in distinct_keys.items())},
       min(event_time) AS first_use, max(event_time) AS last_use
FROM ev
GROUP BY GROUPING SETS ({", ".join(f"(user_id, {key})" for key, _ in distinct_keys.values())})""",
        *[distinct_pass(key, name, novelty) for name, (key, novelty) in distinct_keys.items()],
        f"""
CREATE TEMP TABLE distinct_products AS
SELECT user_id, {", ".join(products)}
FROM (SELECT user_id, product_id, min(bucket) AS bucket
      FROM ev WHERE product_id IS NOT NULL AND {since(start_hist)} GROUP BY ALL)
GROUP BY user_id""",
        f"""
CREATE TEMP TABLE same_product AS
SELECT user_id, {same_product}
FROM (SELECT user_id, product_id, {same_product_counts}
      FROM ev WHERE {purchase} AND product_id IS NOT NULL AND {since(start_hist)} GROUP BY ALL)
GROUP BY user_id""",
        f"""
CREATE TEMP TABLE sharing AS
WITH device_pairs AS (SELECT user_id, key AS device_id FROM pairs_devices WHERE last_use >= {start_longest}),
     ip_pairs AS (SELECT user_id, key AS ip FROM pairs_ips WHERE last_use >= {start_longest}),
     device_accounts AS (SELECT device_id, count(*) AS accounts FROM device_pairs GROUP BY device_id),
     ip_accounts AS (SELECT ip, count(*) AS accounts FROM ip_pairs GROUP BY ip),
     by_device AS (SELECT user_id, max(accounts) - 1 AS max_accounts_sharing_device
                   FROM device_pairs JOIN device_accounts USING (device_id) GROUP BY user_id),
     by_ip AS (SELECT user_id, max(accounts) - 1 AS max_accounts_sharing_ip
               FROM ip_pairs JOIN ip_accounts USING (ip) GROUP BY user_id)
SELECT user_id, d.max_accounts_sharing_device, i.max_accounts_sharing_ip
FROM by_device d FULL JOIN by_ip i USING (user_id)""",
        *[f"DROP VIEW pairs_{name}" for name in distinct_keys],
        "DROP TABLE pairs",
        f"""
CREATE TEMP TABLE reviews AS
WITH first_purchases AS (
    SELECT user_id, product_id, min(event_time) AS first_bought FROM ev
    WHERE {purchase} AND product_id IS NOT NULL GROUP BY ALL)
SELECT r.user_id,
       count(*) FILTER (WHERE f.first_bought IS NULL OR f.first_bought > r.event_time) AS n_unbought_reviews
FROM ev r LEFT JOIN first_purchases f ON f.user_id = r.user_id AND f.product_id = r.product_id
WHERE r.{review} AND r.event_time >= {start_longest}
GROUP BY r.user_id""",
        f"""
CREATE TEMP TABLE refund_speed AS
WITH purchases AS (SELECT user_id, product_id, event_time FROM ev WHERE {purchase} AND product_id IS NOT NULL),
     refunds AS (SELECT user_id, product_id, event_time FROM ev
                 WHERE {refund} AND product_id IS NOT NULL AND event_time >= {start_longest})
SELECT r.user_id, median(date_diff('second', p.event_time, r.event_time) / 3600.0) AS median_hours_to_refund
FROM refunds r ASOF JOIN purchases p
  ON r.user_id = p.user_id AND r.product_id = p.product_id AND r.event_time >= p.event_time
GROUP BY r.user_id""",
        f"""
CREATE TEMP VIEW features AS
SELECT user_id, feature_row,
       {", ".join(ratios)},
       coalesce(median_gap_s_{longest}d, {longest * 86400.0}) AS median_gap_s_{longest}d,
       -- no signup event for the user: its age is unknown (NULL), not the time since the log starts
       date_diff('second', signup_time, {_ts(end)}) / 86400.0 AS account_age_days,
       -- recency: <= N exactly when the user has an event in the last N days (score.active_within_days)
       date_diff('microsecond', last_seen, {_ts(end)}) / 86400e6 AS days_since_last_event,
       {need(f"CASE WHEN signup_time >= {start_longest} THEN 1 ELSE 0 END AS signed_up_in_window", "signups")},
       coalesce(date_diff('second', signup_time, first_purchase),
                date_diff('second', signup_time, {_ts(end)})) / 3600.0
           AS hours_signup_to_first_purchase,
       {need("coalesce(max_accounts_sharing_device, 0) AS max_accounts_sharing_device", "devices")},
       {need("coalesce(max_accounts_sharing_ip, 0) AS max_accounts_sharing_ip", "ips")},
       {need(f"coalesce(n_unbought_reviews, 0) / greatest(n_review_{longest}d, 1) AS unbought_review_share_{longest}d",
             "reviews")},
       -- no refund (of a product bought here) in the window: at least the window itself
       {need(f"coalesce(median_hours_to_refund, {longest * 24.0}) AS median_hours_to_refund_{longest}d", "refunds")}
FROM user_counts
LEFT JOIN user_gaps USING (user_id)
{"".join(f"LEFT JOIN distinct_{name} USING (user_id) " for name in distinct_keys)}
LEFT JOIN distinct_products USING (user_id)
LEFT JOIN same_product USING (user_id)
LEFT JOIN sharing USING (user_id)
LEFT JOIN reviews USING (user_id)
LEFT JOIN refund_speed USING (user_id)
WHERE n_events_{HISTORY} > 0""",
    ]
