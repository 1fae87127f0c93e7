"""Each user's ordered events as of a date, for the sequence detectors, built in DuckDB.

Point-in-time like the features: only events strictly before the end of the as-of UTC day
are read. Every event gets its tokens from the user's whole history before that end (the gap
to the previous event, whether its device, IP or country is the first time the account used
it), then only the last `max_events` events per user are kept.

Tokens per event, all small integers, none tuned to one data set (log2 buckets, not price or
time thresholds):

    event_type    index in pipelines.schema.EVENT_TYPES
    gap_bucket    0 = the user's first event, else 1 + floor(log2(1 + seconds since the previous)),
                  at most GAP_BUCKETS - 1 (about 24 days and longer share the last bucket)
    price_bucket  0 = no price, else 1 + floor(log2(1 + price)), at most PRICE_BUCKETS - 1
    new_device, new_ip, new_country
                  1 when the event uses a device / IP / country the account had not used before
                  (never on a user's first event: nothing is new to an account without a past)
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import UserError
from pipelines.schema import EVENT_TYPES

GAP_BUCKETS = 23
PRICE_BUCKETS = 16
TOKEN_FIELDS: tuple[str, ...] = ("event_type", "gap_bucket", "price_bucket", "new_device", "new_ip", "new_country")
FLAG_FIELDS: tuple[str, ...] = TOKEN_FIELDS[3:]
CARDINALITY: dict[str, int] = {"event_type": len(EVENT_TYPES), "gap_bucket": GAP_BUCKETS,
                               "price_bucket": PRICE_BUCKETS, "new_device": 2, "new_ip": 2, "new_country": 2}
FORMAT_VERSION = 1


def vocabulary(max_events: int) -> dict[str, Any]:
    """What a sequence model is trained on; a model refuses sequences with another vocabulary."""
    return {"format_version": FORMAT_VERSION, "event_types": list(EVENT_TYPES), "fields": list(TOKEN_FIELDS),
            "cardinality": dict(CARDINALITY), "max_events": int(max_events)}


def build_sequences(events: Any, as_of: str | dt.date, max_events: int, threads: int | None = None,
                    memory_limit: str | None = None) -> pd.DataFrame:
    """One row per kept event: user_id, step (0 = the oldest kept), event_time and the tokens,
    ordered by user and step. attrs: "as_of", "vocabulary" and "population"."""
    import duckdb

    from pipelines.features import _connect, _register, _ts

    if not isinstance(max_events, int) or isinstance(max_events, bool) or max_events < 2:
        raise UserError(f"sequences.max_events must be a whole number >= 2, not {max_events!r}")
    day = pd.Timestamp(as_of).date()
    end = _ts(pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1))
    types = ", ".join(f"'{t}'" for t in EVENT_TYPES)

    def first_use(column: str) -> str:
        # the first event of (user, key) in time order, not the user's first event: a key the account meets later
        return (f"CAST(coalesce({column} IS NOT NULL AND n > 1 AND row_number() OVER "
                f"(PARTITION BY user_id, {column} ORDER BY event_time, event_id) = 1, FALSE) AS UTINYINT)")

    query = f"""
WITH ev AS (
    SELECT CAST(user_id AS VARCHAR) AS user_id, event_time, event_id, price,
           list_position([{types}], event_type) - 1 AS type_index, device_id, ip, country,
           row_number() OVER (PARTITION BY user_id ORDER BY event_time, event_id) AS n,
           count(*) OVER (PARTITION BY user_id) AS n_user,
           lag(event_time) OVER (PARTITION BY user_id ORDER BY event_time, event_id) AS prev_time
    FROM events WHERE event_time < {end}
), tokens AS (
    SELECT user_id, n, n_user, event_time,
           CAST(type_index AS UTINYINT) AS event_type,
           CAST(CASE WHEN price IS NULL THEN 0 ELSE least(1 + floor(log2(1 + price)), {PRICE_BUCKETS - 1}) END
                AS UTINYINT) AS price_bucket,
           {first_use("device_id")} AS new_device,
           {first_use("ip")} AS new_ip,
           {first_use("country")} AS new_country,
           prev_time
    FROM ev
)
SELECT user_id, CAST(n - 1 - greatest(n_user - {max_events}, 0) AS USMALLINT) AS step, event_time, event_type,
       CAST(CASE WHEN prev_time IS NULL THEN 0
                 ELSE least(1 + floor(log2(1 + (epoch_us(event_time) - epoch_us(prev_time)) / 1e6)), {GAP_BUCKETS - 1})
            END AS UTINYINT) AS gap_bucket,
       price_bucket, new_device, new_ip, new_country
FROM tokens WHERE n > n_user - {max_events}
ORDER BY user_id, step"""
    with _connect(threads, memory_limit) as con:
        _register(con, events)
        missing = {"user_id", "event_time", "event_type", "event_id", "price", "device_id", "ip", "country"} - \
            {row[0] for row in con.execute("DESCRIBE events").fetchall()}
        if missing:
            raise UserError(f"the events lack column(s) {', '.join(sorted(missing))}; build sequences from the "
                            "clean step's output")
        (users,), = con.execute(f"SELECT count(DISTINCT user_id) FROM events WHERE event_time < {end}").fetchall()
        try:
            table = con.sql(query).to_arrow_table()
        except duckdb.OutOfMemoryException as exc:
            raise UserError(f"sequences.memory_limit {memory_limit} is too little for these events "
                            f"(DuckDB: {str(exc).splitlines()[0]}); raise it or set it to null") from exc
    frame = table.to_pandas(self_destruct=True)
    del table
    frame["user_id"] = frame["user_id"].astype("str")
    frame.attrs["as_of"] = day.isoformat()
    frame.attrs["vocabulary"] = vocabulary(max_events)
    frame.attrs["population"] = {"users": int(users), "events_kept": int(len(frame)), "max_events": max_events}
    return frame


@dataclass
class EventSequences:
    """Users' token sequences without padding: each user's events are rows start..start+length
    of `tokens` (events x TOKEN_FIELDS, small ints), `times` their epoch microseconds. `take`
    selects users without copying the tokens, so batches are padded one at a time."""

    user_ids: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    tokens: np.ndarray
    times: np.ndarray
    vocabulary: dict[str, Any]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "EventSequences":
        """From build_sequences' frame (sorted by user and step)."""
        missing = [c for c in ("user_id", "step", "event_time", *TOKEN_FIELDS) if c not in frame.columns]
        if missing:
            raise UserError(f"the sequences lack column(s) {', '.join(missing)}; rebuild them with the sequences step")
        vocab = frame.attrs.get("vocabulary")
        if not vocab:
            raise UserError("the sequences carry no vocabulary; rebuild them with the sequences step")
        # a user's events start at step 0 (rows are sorted by user, then step): no per-event
        # Python strings, which at tens of millions of events would outweigh everything else
        starts = np.flatnonzero(frame["step"].to_numpy() == 0).astype(np.int64)
        lengths = np.diff(np.r_[starts, len(frame)]).astype(np.int64)
        users = frame["user_id"].iloc[starts].to_numpy(dtype=str)
        if len(users) != len(set(users)):
            raise UserError("the sequences are not sorted by user and step; rebuild them with the sequences step")
        tokens = frame[list(TOKEN_FIELDS)].to_numpy(dtype=np.int16)
        times = pd.to_datetime(frame["event_time"], utc=True).dt.as_unit("us").astype("int64").to_numpy()
        return cls(users, starts, lengths, tokens, times, dict(vocab))

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def max_events(self) -> int:
        return int(self.vocabulary["max_events"])

    def take(self, rows: np.ndarray) -> "EventSequences":
        rows = np.asarray(rows)
        return EventSequences(self.user_ids[rows], self.starts[rows], self.lengths[rows], self.tokens, self.times,
                              self.vocabulary)

    def for_users(self, user_ids: Any) -> "EventSequences":
        """These users' sequences in this order; every one of them must have events."""
        wanted = pd.Index(np.asarray(user_ids, dtype=str))
        rows = pd.Index(self.user_ids).get_indexer(wanted)
        if (rows < 0).any():
            absent = wanted[rows < 0]
            raise UserError(f"{len(absent)} user(s) have features but no event sequence (e.g. {absent[0]}); "
                            "rebuild the sequences and the features from the same clean events and day")
        return self.take(rows)

    def padded(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(tokens batch x longest x fields, lengths) of these users, padded with zeros."""
        starts = self.starts if rows is None else self.starts[rows]
        lengths = self.lengths if rows is None else self.lengths[rows]
        width = int(lengths.max(initial=1))
        steps = np.arange(width)
        inside = steps[None, :] < lengths[:, None]
        index = np.where(inside, starts[:, None] + steps[None, :], 0)
        out = self.tokens[index] if len(self.tokens) else np.zeros((len(starts), width, len(TOKEN_FIELDS)), np.int16)
        out[~inside] = 0
        return out, lengths

    def event_rows(self) -> np.ndarray:
        """The rows of `tokens` that hold these users' events, user by user."""
        ends = np.cumsum(self.lengths)
        return np.repeat(self.starts - (ends - self.lengths), self.lengths) + np.arange(int(ends[-1]) if len(ends) else 0)

    def update_digest(self, digest) -> None:
        """Feed these users' ids, lengths and tokens to a hashlib digest (no padding)."""
        digest.update("\0".join(self.user_ids.tolist()).encode())
        digest.update(self.lengths.tobytes())
        digest.update(np.ascontiguousarray(self.tokens[self.event_rows()]).tobytes())

    def event_times(self, row: int) -> np.ndarray:
        s = self.starts[row]
        return self.times[s:s + self.lengths[row]]


def check_vocabulary(trained: dict[str, Any], data: dict[str, Any], where: str) -> None:
    """A model reads only the sequences it was trained on: same event types, fields and sizes."""
    for key in ("format_version", "event_types", "fields", "cardinality", "max_events"):
        if trained.get(key) != data.get(key):
            raise UserError(f"{where}: the sequences' {key} ({data.get(key)}) is not the model's ({trained.get(key)}); "
                            "rebuild the sequences with the params the model was trained with, or retrain")


@dataclass
class TableAndSequences:
    """The same users' feature columns and event sequences, row for row (what a detector with
    input_kind "table+sequence" reads)."""

    table: pd.DataFrame
    sequences: EventSequences

    def __len__(self) -> int:
        return len(self.table)


def model_input(detector: Any, features: pd.DataFrame, sequences: Any = None, columns: list[str] | None = None) -> Any:
    """What `detector` reads for the users of `features`, in their order: their feature columns
    (`columns`, default all), their event sequences, or both. `sequences` is an EventSequences,
    or a function returning one (called only when the detector reads them, so a table detector
    never loads them)."""
    from pipelines.features import feature_columns

    table = features[columns if columns is not None else feature_columns(features)]
    if detector.input_kind == "table":
        return table
    if callable(sequences):
        sequences = sequences()
    if sequences is None:
        raise UserError(f"detector {detector.name} reads event sequences: run the sequences step for this day first")
    users = sequences.for_users(features["user_id"])
    return users if detector.input_kind == "sequence" else TableAndSequences(table, users)
