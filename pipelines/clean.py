"""Cleaning: coerce raw events to the contract's types, quarantine what breaks a rule.

Every input row ends in exactly one place, so the contract's accounting identity holds:
rows_in = rows_clean + rows_quarantined + exact_duplicates_removed.

Personal data: IPs and device ids leave cleaning (the clean events and the quarantine) as keyed
hashes, 32 hex digits of BLAKE2b keyed with a secret salt from the environment variable that
clean.id_salt_env names (PIPELINES_ID_SALT). Equal values get equal hashes, so every feature that
counts or compares them (distinct devices, accounts sharing an IP, a new device in a sequence) is
what it was on the raw values; nothing downstream can show a raw one. Without the variable a
fixed default salt keeps runs reproducible, with a warning that a deployment should set its own:
anyone with the code can hash guesses under the default salt.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import section
from pipelines.errors import UserError
from pipelines.schema import EVENT_DTYPES, EVENT_TYPES, REQUIRED_EVENT_COLUMNS

# Epoch magnitudes: 1e11 seconds is the year 5138, while 1e11 milliseconds is 1973, so any
# plausible event time in seconds is below it and any in milliseconds above it.
_EPOCH_MS_FLOOR = 1e11
_EPOCH_US_FLOOR = 1e14
_EPOCH_NS_FLOOR = 1e17

STRING_COLUMNS = [c for c, t in EVENT_DTYPES.items() if t == "str"]
ID_COLUMNS = ("user_id", "event_id")
# personal data: replaced by keyed hashes before anything leaves cleaning
HASHED_COLUMNS = ("device_id", "ip")
# the salt when clean.id_salt_env's variable is unset: public, so it hides nothing from someone
# who has the code; it keeps `dvc repro` reproducible where no salt is configured
DEFAULT_ID_SALT = "pipelines-default-id-salt"

log = logging.getLogger(__name__)

# A leap second (23:59:60) is a real UTC instant that pandas cannot represent; POSIX time
# folds it into the next second, and so do we.
_LEAP_SECOND = re.compile(r"(?<=\d\d:\d\d:)60(?=(?:[.,]\d+)?\s*(?:Z|[+-]\d\d(?::?\d\d)?)?$)")

# An epoch as text: what to_numeric would read as a number, without trying every string.
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"

# ingest() stamps the frame with the time it read the file (kept in the Parquet metadata), the
# reference for "in the future"; a frame cleaned without that stamp is judged against now.
INGESTED_AT = "ingested_at"


def clean(events: pd.DataFrame, params: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Return (clean events, quarantined rows with a reason each, accounting report)."""
    p = section({"clean": params or {}}, "clean")
    missing = [c for c in REQUIRED_EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise UserError(f"events are missing required column(s): {', '.join(missing)}")
    duplicated = sorted({str(c) for c in events.columns[events.columns.duplicated()]})
    if duplicated:
        raise UserError(f"events have duplicate column name(s) {', '.join(duplicated)}; keep one of each")
    rows_in = len(events)
    raw = events.reset_index(drop=True)

    bounds = time_bounds(p, events.attrs.get(INGESTED_AT))
    salt, salt_source = id_salt(p)
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        coerced, reasons = _coerce_to_codes(raw, p, bounds, pool)
        # Hashing is Python and holds the GIL; what the other threads do beside it (sorting,
        # encoding, gathering) is NumPy and Arrow, which release it, so it runs alongside.
        # Each distinct value is hashed once (by hash_ids, the one place that hashes), and the
        # clean rows gather their digests through the encoding, never the column's own text.
        # Duplicates and derived event ids are decided on the values as they arrived.
        hashing = pool.submit(_hashed_encodings, {col: coerced[col] for col in HASHED_COLUMNS}, salt)

        # Row positions only until the end: the typed frame is copied once, in its final order.
        # sorted by (event_time, user_id) once, stable: equal rows lie next to each other, and the
        # clean rows' order is this one with the dropped rows left out
        user_ids = _Encoded(_arrow_text(coerced["user_id"]))
        valid_rows, times, users = _time_user_sorted(coerced, user_ids, np.flatnonzero(reasons.unflagged()))
        dup_mask = _duplicated_rows(coerced, valid_rows, times, users)
        exact_duplicates = int(dup_mask.sum())
        kept, kept_users = valid_rows[~dup_mask], users[~dup_mask]

        event_ids, dup_id_mask = _assign_event_ids(coerced, kept)
        reasons.flag_rows(kept[dup_id_mask], "duplicate event_id with different content")
        kept, kept_users = kept[~dup_id_mask], kept_users[~dup_id_mask]
        event_ids = event_ids.filter(pa.array(~dup_id_mask)) if dup_id_mask.any() else event_ids

        quarantined_rows = np.flatnonzero(~reasons.unflagged())
        quarantine = _quarantine_frame(raw.iloc[quarantined_rows], reasons.series(quarantined_rows, raw.index))

        ordered = list(EVENT_DTYPES) + [c for c in coerced.columns if c not in EVENT_DTYPES]
        gathers = {col: pool.submit(_take, coerced[col], kept) for col in ordered
                   if col not in ("event_id", "user_id", *HASHED_COLUMNS)}
        columns = {"event_id": _str_series(event_ids), "user_id": _str_series(user_ids.take(kept))}
        columns.update({col: gather.result() for col, gather in gathers.items()})
        hashed_columns = hashing.result()
    del coerced, user_ids, gathers  # the typed copy of every row is not needed past here
    # the digests (32 bytes a row) are spread only once the typed copy is gone
    for col in HASHED_COLUMNS:
        columns[col] = _str_series(hashed_columns.pop(col).take(kept))
    clean_events = pd.DataFrame({col: columns.pop(col) for col in ordered}, copy=False)  # fresh gathers already
    hashed = {col: int(clean_events[col].notna().sum()) for col in HASHED_COLUMNS}
    for col in HASHED_COLUMNS:
        if col in quarantine.columns:
            quarantine[col] = hash_ids(_to_clean_string(quarantine[col]), salt)
    if salt_source == "default" and any(hashed.values()):
        _warn_default_salt(p["id_salt_env"])
    report = accounting_report(rows_in, clean_events, quarantine, exact_duplicates,
                               users=int(np.count_nonzero(np.bincount(kept_users))) if len(kept_users) else 0)
    report["event_time_bounds"] = {k: None if v is None else str(v) for k, v in bounds.items()}
    # how, and from where the salt came; never the salt
    report["ids_hashed"] = {"columns": list(HASHED_COLUMNS), "values_hashed": hashed,
                            "method": "blake2b keyed, 16 bytes as hex", "salt": salt_source}
    return clean_events, quarantine, report


def _workers() -> int:
    """Threads for cleaning's independent column work: as many as Arrow's own pool uses
    (OMP_NUM_THREADS or the cores), at most 4 (the columns are few)."""
    return max(1, min(4, pa.cpu_count()))


def _hashed_encodings(columns: dict[str, pd.Series], salt: str) -> dict[str, "_Encoded"]:
    """Each column's dictionary encoding with the distinct values replaced by their hashes."""
    hashed = {}
    for col, values in columns.items():
        hashed[col] = _Encoded(_arrow_text(values))
        hashed[col].dictionary = _arrow_text(hash_ids(_str_series(hashed[col].dictionary), salt))
    return hashed


# pandas' default text dtype ("str"): Arrow large_string underneath, NaN for missing
_STR = pd.StringDtype("pyarrow", na_value=np.nan)


def _str_series(values: pa.Array | pa.ChunkedArray) -> pd.Series:
    """Arrow text as a "str" Series, without a copy."""
    return pd.Series(pd.arrays.ArrowStringArray(values, dtype=_STR), copy=False)


def _take(column: pd.Series, rows: np.ndarray) -> pd.Series:
    """column's values at `rows`, with a fresh RangeIndex. Text is gathered by Arrow's take
    directly: pandas' take of an Arrow column checks and converts the positions first, a third
    of its time at millions of rows."""
    if column.dtype == _STR:
        return _str_series(pc.take(column.array._pa_array, rows))
    return column.take(rows).reset_index(drop=True)


def id_salt(p: dict[str, Any]) -> tuple[str, str]:
    """(salt, where it came from): the variable clean.id_salt_env names ("$NAME"), else the
    documented default ("default")."""
    name = p["id_salt_env"]
    value = os.environ.get(name, "")
    if value:
        return value, f"${name}"
    return DEFAULT_ID_SALT, "default"


_warned: set[str] = set()


def _warn_default_salt(name: str) -> None:
    if name in _warned:
        return
    _warned.add(name)
    log.warning("IPs and device ids are hashed with the default salt: set %s to a secret of your own "
                "in a deployment (clean.id_salt_env names the variable)", name)


def hash_ids(values: pd.Series, salt: str) -> pd.Series:
    """Each value as 32 hex digits of BLAKE2b keyed with `salt`; missing stays missing.

    Hashes each distinct value once (Arrow's dictionary encoding), then spreads the fixed-width
    digests over the rows with one NumPy gather, not a Python call per row."""
    digests, codes = _hash_codes(_arrow_text(values), salt)
    return _digest_series(digests, codes).set_axis(values.index).rename(values.name)


def _hash_codes(text: pa.Array, salt: str) -> tuple[np.ndarray, np.ndarray]:
    """(the hex digest of each distinct value, S32; each row's position among them, -1 where
    missing). One keyed state is copied per value, so the key block is compressed once, and the
    digests go to hex in one NumPy pass rather than a hexdigest() per value."""
    key = hashlib.blake2b(salt.encode("utf-8"), digest_size=32, person=b"pipelines-ids").digest()
    keyed = hashlib.blake2b(key=key, digest_size=16)
    encoded = pc.dictionary_encode(text)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    copy = keyed.copy

    def digest(value: bytes) -> bytes:
        h = copy()
        h.update(value)
        return h.digest()

    # UTF-8 bytes straight from Arrow's buffer: the same bytes str.encode("utf-8") gives
    raw = np.frombuffer(b"".join([digest(v) for v in encoded.dictionary.cast(pa.large_binary()).to_pylist()]),
                        dtype=np.uint8).reshape(-1, 16)
    hex_text = np.empty((len(raw), 32), dtype=np.uint8)
    hex_text[:, 0::2] = _HEX_DIGITS[raw >> 4]
    hex_text[:, 1::2] = _HEX_DIGITS[raw & 15]
    return hex_text.view("S32").ravel(), codes


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _digest_series(digests: np.ndarray, codes: np.ndarray) -> pd.Series:
    """The digest of each row as a "str" Series, NaN where missing."""
    if len(digests) == 0:
        return pd.Series(np.nan, index=pd.RangeIndex(len(codes)), dtype="str")
    missing = codes < 0
    gathered = digests[np.where(missing, 0, codes)]
    offsets = np.arange(0, 32 * (len(gathered) + 1), 32, dtype=np.int64)
    null_count = int(missing.sum())
    validity = pa.array(~missing).buffers()[1] if null_count else None
    # the Arrow buffers are views of the NumPy arrays, which they keep alive: no copy
    hashed = pa.Array.from_buffers(pa.large_string(), len(gathered),
                                   [validity, pa.py_buffer(offsets), pa.py_buffer(gathered)],
                                   null_count=null_count)
    return _str_series(hashed)


def time_bounds(p: dict[str, Any], ingested_at: Any = None) -> dict[str, pd.Timestamp | None]:
    """The accepted event_time range: [min_event_time, ingest time + max_future_days]."""
    try:
        reference = pd.Timestamp(ingested_at) if ingested_at is not None else pd.Timestamp.now(tz="UTC")
    except ValueError as exc:
        raise UserError(f"events carry an unreadable {INGESTED_AT} stamp {ingested_at!r}; ingest the file again") from exc
    if reference.tzinfo is None:
        reference = reference.tz_localize("UTC")
    latest = None if p["max_future_days"] is None else reference + pd.Timedelta(days=float(p["max_future_days"]))
    earliest = None if p["min_event_time"] is None else pd.Timestamp(p["min_event_time"], tz="UTC")
    return {"earliest": earliest, "latest": latest, "ingested_at": reference}


def accounting_report(rows_in: int, clean_events: pd.DataFrame, quarantine: pd.DataFrame, exact_duplicates: int,
                      users: int | None = None) -> dict:
    """The contract's accounting; `users` is the clean events' distinct user ids when the caller
    has counted them already (clean() has, on integer keys: nunique of millions of ids is not free)."""
    report = {
        "rows_in": rows_in,
        "rows_clean": len(clean_events),
        "rows_quarantined": len(quarantine),
        "exact_duplicates_removed": exact_duplicates,
        "quarantine_reasons": {str(k): int(v) for k, v in quarantine["quarantine_reason"].value_counts().items()},
        "users": int(clean_events["user_id"].nunique()) if users is None else int(users),
        "event_time_min": str(clean_events["event_time"].min()) if len(clean_events) else None,
        "event_time_max": str(clean_events["event_time"].max()) if len(clean_events) else None,
    }
    report["identity_holds"] = rows_in == report["rows_clean"] + report["rows_quarantined"] + exact_duplicates
    if not report["identity_holds"]:
        raise RuntimeError(f"cleaning lost rows, accounting identity broken: {report}")
    return report


def _coerce(raw: pd.DataFrame, p: dict[str, Any], bounds: dict) -> tuple[pd.DataFrame, pd.Series]:
    """Typed copy of raw plus the first rule each row breaks (NaN where none)."""
    out, reasons = _coerce_to_codes(raw, p, bounds)
    return out, reasons.series(np.arange(len(raw)), raw.index)


class _Reasons:
    """The first rule each row breaks, as a small integer per row (0: none yet). Flagging is a
    NumPy pass over the codes; an object Series of reasons cost an isna over every row per rule
    (1.3 of _coerce's 3.4 CPU s at 5M events)."""

    def __init__(self, rows: int) -> None:
        self.codes = np.zeros(rows, dtype=np.int16)
        self.names: list[str] = []

    def _code(self, reason: str) -> int:
        if reason not in self.names:
            self.names.append(reason)
        return self.names.index(reason) + 1

    def flag(self, mask: pd.Series | np.ndarray, reason: str) -> None:
        """`reason` for the rows in `mask` that break no earlier rule."""
        mask = np.asarray(mask, dtype=bool) & (self.codes == 0)
        if mask.any():
            self.codes[mask] = self._code(reason)

    def flag_rows(self, rows: np.ndarray, reason: str) -> None:
        """`reason` for rows (positions) that break no rule yet."""
        if len(rows):
            self.codes[rows] = self._code(reason)

    def unflagged(self) -> np.ndarray:
        return self.codes == 0

    def series(self, rows: np.ndarray, index: pd.Index) -> pd.Series:
        """The reasons of `rows` (positions) as text, NaN where none, labelled by `index`."""
        text = np.array([np.nan, *self.names], dtype=object)
        return pd.Series(text[self.codes[rows]], index=index[rows], dtype="object")


def _coerce_to_codes(raw: pd.DataFrame, p: dict[str, Any], bounds: dict,
                     pool: ThreadPoolExecutor | None = None) -> tuple[pd.DataFrame, _Reasons]:
    """_coerce with the reasons as codes; the text columns are trimmed in `pool`'s threads
    when given (Arrow kernels, which release the GIL)."""
    out = pd.DataFrame(index=raw.index)
    reasons = _Reasons(len(raw))
    flag = reasons.flag

    out["event_time"] = parse_event_time(raw["event_time"], p["epoch_unit"])
    flag(~_present(raw["event_time"]), "missing event_time")
    flag(out["event_time"].isna(), "unparseable event_time")
    # A time no event can have would otherwise become the run date (the day of the latest
    # event) or stretch every history window back to it.
    if bounds["latest"] is not None:
        flag(out["event_time"] > bounds["latest"],
             f"event_time more than {p['max_future_days']:g} day(s) after ingest time (clean.max_future_days)")
    if bounds["earliest"] is not None:
        flag(out["event_time"] < bounds["earliest"],
             f"event_time before {bounds['earliest'].date()} (clean.min_event_time)")

    text_columns = [col for col in STRING_COLUMNS if col in raw.columns]
    trimmed = (pool.map if pool is not None else map)(_to_clean_string, [raw[col] for col in text_columns])
    for col, column in zip(text_columns, trimmed):
        out[col] = column
    flag(out["user_id"].isna(), "missing user_id")
    limit = int(p["max_id_length"])
    for col in ID_COLUMNS:
        if col in out.columns:
            flag(out[col].str.len() > limit, f"{col} longer than {limit} characters (clean.max_id_length)")

    out["event_type"] = out["event_type"].str.lower()
    flag(~out["event_type"].isin(EVENT_TYPES), "unknown event_type")

    if "country" in out.columns:
        out["country"] = out["country"].str.upper()

    if "price" in raw.columns:
        price = _to_float(raw["price"])
        flag(price.isna() & _present(raw["price"]), "price is not a number")
        flag(np.isinf(price), "price is infinite")
        flag(price < 0, "negative price")
        flag(price > float(p["max_price"]), f"price above {p['max_price']:g} (clean.max_price)")
        out["price"] = price.where(reasons.unflagged())
    if "quantity" in raw.columns:
        qty = _to_float(raw["quantity"])
        flag(qty.isna() & _present(raw["quantity"]), "quantity is not a number")
        flag(qty > int(p["max_quantity"]), f"quantity above {p['max_quantity']} (clean.max_quantity)")
        flag(qty.notna() & ((qty < 1) | (qty % 1 != 0)), "quantity must be a whole number >= 1")
        # rows flagged above keep their original text in the quarantine; here they only need a
        # value that fits the integer column
        out["quantity"] = qty.where(qty.notna() & reasons.unflagged(), 1).astype("Int64")
    if "rating" in raw.columns:
        rating = _to_float(raw["rating"])
        flag(rating.isna() & _present(raw["rating"]), "rating is not a number")
        flag(rating.notna() & ~rating.isin([1, 2, 3, 4, 5]), "rating must be 1..5")
        out["rating"] = rating.where(reasons.unflagged()).astype("Int64")

    # Every contract column exists downstream, typed, even when the source lacks it.
    for col, dtype in EVENT_DTYPES.items():
        if col not in out.columns and col != "event_id":
            out[col] = pd.Series(1, index=out.index, dtype=dtype) if col == "quantity" else pd.Series(index=out.index, dtype=dtype)
    extras = [c for c in raw.columns if c not in EVENT_DTYPES]
    for col in extras:
        out[col] = _hashable(raw[col])
    return out, reasons


def parse_event_time(values: pd.Series, epoch_unit: str = "auto") -> pd.Series:
    """Contract timestamps -> tz-aware UTC: datetimes, ISO-8601 text, epoch seconds or milliseconds."""
    if epoch_unit not in ("auto", "s", "ms"):
        raise UserError(f"clean.epoch_unit must be auto, s or ms, not {epoch_unit!r}")
    target = EVENT_DTYPES["event_time"]
    if pd.api.types.is_datetime64_any_dtype(values):
        if getattr(values.dt, "tz", None) is None:
            return values.dt.tz_localize("UTC").astype(target)
        return values.dt.tz_convert("UTC").astype(target)

    numeric = _epoch_numbers(values)
    result = pd.Series(pd.NaT, index=values.index, dtype=target)
    is_num = numeric.notna().to_numpy()
    if is_num.any():
        result.loc[is_num] = _epoch_to_utc(numeric[is_num].astype("float64"), epoch_unit).astype(target)
    text = ~is_num & values.notna().to_numpy()
    if text.any():
        result.loc[text] = _text_to_utc(values[text].astype("str")).astype(target)
    return result


def _epoch_numbers(values: pd.Series) -> pd.Series:
    """The values that are numbers (epochs), NaN elsewhere. Text is matched against a number's
    shape first, in Arrow: to_numeric on millions of ISO strings fails each one in Python."""
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    if not pd.api.types.is_string_dtype(values) or values.dtype == object:  # mixed Python objects
        return pd.to_numeric(values, errors="coerce").astype("float64")
    text = pa.array(values, type=pa.string(), from_pandas=True)
    looks = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False).to_numpy(zero_copy_only=False)
    numeric = pd.Series(np.nan, index=values.index, dtype="float64")
    if looks.any():
        numeric.loc[looks] = pd.to_numeric(values[looks], errors="coerce").astype("float64")
    return numeric


def _epoch_to_utc(num: pd.Series, epoch_unit: str) -> pd.Series:
    arr = num.to_numpy()
    if epoch_unit == "s":
        factor = np.full(arr.shape, 1_000_000.0)
    elif epoch_unit == "ms":
        factor = np.full(arr.shape, 1_000.0)
    else:
        mag = np.abs(arr)
        factor = np.select(
            [mag >= _EPOCH_NS_FLOOR, mag >= _EPOCH_US_FLOOR, mag >= _EPOCH_MS_FLOOR], [1e-3, 1.0, 1e3], default=1e6
        )
    micros = arr * factor
    ok = np.isfinite(micros) & (np.abs(micros) < 9.2e18)
    out = pd.Series(pd.NaT, index=num.index, dtype="datetime64[us, UTC]")
    out.loc[ok] = pd.to_datetime(micros[ok].astype("int64"), unit="us", utc=True)
    return out


def _text_to_utc(text: pd.Series) -> pd.Series:
    trimmed = pc.replace_substring_regex(pc.utf8_trim_whitespace(pa.array(text, type=pa.string(), from_pandas=True)),
                                         r"\s*UTC$", "")
    stripped = pd.Series(trimmed.to_numpy(zero_copy_only=False), index=text.index, dtype="str")
    # at the contract's resolution before any fallback is merged in: pandas infers the unit
    # from the first values ("...:00Z" gives seconds) and would refuse a later fraction
    parsed = pd.to_datetime(stripped, utc=True, errors="coerce", format="ISO8601").astype(EVENT_DTYPES["event_time"])
    leftover = parsed.isna() & stripped.ne("")
    if leftover.any():  # mixed layouts in one file: fall back to per-value inference
        parsed.loc[leftover] = pd.to_datetime(stripped[leftover], utc=True, errors="coerce", format="mixed")
        unparsed = parsed.isna()
        leap = pd.Series(False, index=text.index)
        leap.loc[unparsed] = stripped[unparsed].str.contains(_LEAP_SECOND).to_numpy(dtype=bool)
        if leap.any():
            at_59 = pd.to_datetime(stripped[leap].str.replace(_LEAP_SECOND, "59", regex=True), utc=True,
                                   errors="coerce", format="mixed")
            parsed.loc[leap] = at_59 + pd.Timedelta(seconds=1)
    return parsed


def _to_float(col: pd.Series) -> pd.Series:
    """Numbers as float64, NaN where a value is not one. A parsed value too large for float64
    (1e400) is inf, so it is caught by the range checks rather than crashing a cast."""
    return pd.to_numeric(col, errors="coerce").astype("float64")


def _to_clean_string(col: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(col):
        # Integer ids that passed through a float column (CSV with gaps) must not become "123.0".
        whole = col.notna() & (col % 1 == 0)
        as_text = col.astype("str")
        as_text.loc[whole] = col[whole].astype("int64").astype("str")
        col = as_text
    elif not pd.api.types.is_string_dtype(col) or col.dtype == object:
        col = col.astype("str").where(col.notna())
    col = col.astype("str").str.strip()
    return col.where(col.ne("") & col.notna())


def _hashable(col: pd.Series) -> pd.Series:
    """Extra columns are kept; nested values (Parquet lists and structs) are kept as JSON text
    so rows can still be compared for exact duplicates and hashed into event ids."""
    if col.dtype != object:
        return col
    nested = col.map(lambda v: isinstance(v, (list, tuple, dict, np.ndarray)))
    if not nested.any():
        return col

    def to_json(value):
        if isinstance(value, np.ndarray):
            value = value.tolist()
        return json.dumps(value, default=str, sort_keys=True) if isinstance(value, (list, tuple, dict)) else value

    return col.map(to_json)


def _present(col: pd.Series) -> pd.Series:
    if pd.api.types.is_string_dtype(col) or col.dtype == object:
        return col.notna() & col.astype("str").str.strip().ne("")
    return col.notna()


class _Encoded:
    """Text as Arrow's dictionary encoding: each distinct value once, and per row its position
    among them (-1 where missing)."""

    def __init__(self, text: pa.Array) -> None:
        encoded = pc.dictionary_encode(text)
        self.dictionary = encoded.dictionary
        self.codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)

    def keys(self) -> np.ndarray:
        """Per row, the rank of its value among the distinct values (1 = first), by code point
        (UTF-8 bytes) as pandas and Arrow compare text: ordering or comparing keys orders or
        compares the values. A missing value gets the key after every value."""
        rank = pc.rank(self.dictionary, sort_keys="ascending", tiebreaker="dense").to_numpy()
        return np.append(rank, len(rank) + 1).astype(np.int64)[self.codes]

    def take(self, rows: np.ndarray) -> pa.Array:
        """The values of `rows`, decoded: a gather from the distinct values, which are fewer
        and closer together in memory than the rows' own text."""
        codes = self.codes[rows]
        return self.dictionary.take(pa.array(codes, mask=codes < 0))


def _time_user_sorted(frame: pd.DataFrame, user_ids: _Encoded, rows: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`rows` sorted by (event_time, user_id), stable: the order of
    frame.iloc[rows].sort_values(["event_time", "user_id"], kind="stable"), with those rows'
    times (int64) and user keys (_Encoded.keys: equal and ordered as the ids are) in that
    order. Neither is missing in a valid row (a missing id would sort last).

    The strings are sorted once per distinct user, not once per row: a stable NumPy lexsort on
    two integer keys is a third of Arrow's sort of (time, string) at 5M events."""
    times = frame["event_time"].array.asi8[rows]
    users = user_ids.keys()[rows]
    order = np.lexsort((users, times))
    return rows[order], times[order], users[order]


def _duplicated_rows(frame: pd.DataFrame, rows: np.ndarray, times: np.ndarray, users: np.ndarray) -> np.ndarray:
    """frame.iloc[rows].duplicated(keep="first") as a boolean array, for `rows` sorted by
    (event_time, user_id) with their `times` and user keys (_time_user_sorted), without comparing
    every row on every column: equal rows have the same event_time and user_id, so only runs of
    neighbours sharing both (few, in a real log) are compared in full."""
    if len(rows) < 2:
        return np.zeros(len(rows), dtype=bool)
    same = (times[1:] == times[:-1]) & (users[1:] == users[:-1])
    candidates = np.zeros(len(rows), dtype=bool)
    candidates[1:] |= same
    candidates[:-1] |= same
    candidates = np.flatnonzero(candidates)
    dup = np.zeros(len(rows), dtype=bool)
    if len(candidates):
        dup[candidates] = frame.iloc[rows[candidates]].duplicated(keep="first").to_numpy()
    return dup


def _arrow_text(values: pd.Series) -> pa.Array:
    text = pa.array(values, type=pa.large_string(), from_pandas=True)
    if isinstance(text, pa.ChunkedArray):  # a column backed by Arrow may come in chunks
        text = text.combine_chunks()
    return text


def _assign_event_ids(frame: pd.DataFrame, rows: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """The event_ids of frame's `rows` (Arrow large_string): missing ones derived from the row's
    content; and which rows reuse an earlier row's id (their content differs: exact duplicates
    are gone by now)."""
    content_cols = [c for c in frame.columns if c != "event_id"]
    if "event_id" in frame.columns:
        ids = _arrow_text(frame["event_id"]).take(rows)
    else:
        ids = pa.nulls(len(rows), pa.large_string())
    missing = ids.is_null().to_numpy(zero_copy_only=False)
    if missing.any():
        hashed = pd.util.hash_pandas_object(frame.iloc[rows[missing]][content_cols], index=False).to_numpy()
        as_text = pa.array(hashed.astype("uint64")).cast(pa.string())
        derived = pc.binary_join_element_wise("e", as_text, "").cast(pa.large_string())
        ids = pc.replace_with_mask(ids, pa.array(missing), derived)
    # every id is set by now, and most logs reuse none: distinct 64-bit hashes (DuckDB's, a
    # tenth of the time of Arrow's dictionary encoding of 5M ids) prove the ids distinct;
    # equal hashes only send the ids to the exact check
    if _hashes_distinct(ids):
        return ids, np.zeros(len(ids), dtype=bool)
    encoded = pc.dictionary_encode(ids)
    if len(encoded.dictionary) == len(ids):
        return ids, np.zeros(len(ids), dtype=bool)
    # the first to arrive keeps an id: `rows` are in time order, not arrival order
    arrival = np.argsort(rows, kind="stable")
    codes = encoded.indices.to_numpy(zero_copy_only=False)[arrival]
    dup_ids = np.zeros(len(rows), dtype=bool)
    dup_ids[arrival] = pd.Series(codes).duplicated(keep="first").to_numpy()
    return ids, dup_ids


def _hashes_distinct(text: pa.Array) -> bool:
    """True when no two values of `text` (no nulls) have the same 64-bit hash, so no two are
    equal; False says nothing either way."""
    if len(text) < 2:
        return True
    import duckdb

    with duckdb.connect() as con:
        con.register("ids", pa.table({"id": text}))
        hashes = np.sort(con.execute("SELECT hash(id) AS h FROM ids").fetchnumpy()["h"])
    return not bool((hashes[1:] == hashes[:-1]).any())


def _quarantine_frame(rows: pd.DataFrame, reasons: pd.Series) -> pd.DataFrame:
    """Rows as they arrived (as text, so any mix of types can be stored) with their reason."""
    out = rows.astype("str").where(rows.notna())
    out.insert(0, "quarantine_reason", reasons.astype("str"))
    out.insert(0, "source_row", rows.index.to_numpy(dtype="int64"))
    return out.reset_index(drop=True)
