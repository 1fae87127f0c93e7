"""A corpus of malformed inputs, each run through the real entry points:
`python -m pipelines run` (from a folder with no params.yaml: the defaults) for inputs with bad
rows, `python -m pipelines ingest` (with the repository's params.yaml) for unusable files.

Every case must end one of two ways (issue 9):

- "quarantine": the command succeeds, the bad rows are in quarantine.parquet with the expected
  reason (exactly the planted rows, nothing else), the accounting identity holds for every row
  of the file, and every user left in the clean events is scored with a finite score;
- "refuse": the command exits non-zero with one line, `error: ...`, naming the problem and the fix.

Never a Python traceback. The inputs are generated here from a small simulation, nothing is
committed. The refusals are a process each (a second or two). The quarantine cases are slow:
a few (OWN_PROCESS) are whole runs in a process of their own; for the others ingest and clean
run per case, as `run` runs them, in two shared interpreters (tests/bad_input_batch.py), and
their clean events are then scored together in one `run` (see OWN_PROCESS for what that proves).
"""
from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.simulate import simulate

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"  # the daily steps need one; run uses the defaults
LAST_DAY = "2026-11-21"  # the simulation's last day: the run date every quarantine case must keep


@dataclass
class Case:
    name: str
    build: Callable[[Path, pd.DataFrame], "Built"]
    outcome: str  # "quarantine" or "refuse"
    expect: str = ""  # quarantine: the reason (substring); refuse: a regex the one-line message matches
    command: str = ""  # default: run for quarantine cases, ingest for refusals
    check: Callable[["Result"], None] | None = None


@dataclass
class Built:
    path: Path
    rows: int | None = None  # data rows in the file (None: the command must refuse it)
    planted: list[int] = field(default_factory=list)  # the rows changed (quarantined when the case expects it)
    duplicates: int = 0  # exact duplicates the cleaner must remove


@dataclass
class Result:
    case: Case
    built: Built
    proc: subprocess.CompletedProcess  # the case's own run; for a case scored together: its ingest and clean
    out: Path
    together: subprocess.CompletedProcess | None = None  # the run that scored it with the other cases
    tag: str = ""  # the prefix of its ids in that run

    def scores(self) -> pd.DataFrame:
        """The case's users' scores, ids as in its file."""
        if self.together is None:
            return pd.read_parquet(self.out / "scores.parquet")
        scores = pd.read_parquet(together_scores(self.out))
        mine = scores.loc[scores["user_id"].str.startswith(self.tag)].reset_index(drop=True)
        return mine.assign(user_id=mine["user_id"].str.removeprefix(self.tag))

    def run_date(self) -> str:
        """The day the case's run scores: what run found, or (scored together) what run would
        find for the case's clean events alone (pipelines.features.resolve_as_of)."""
        if self.together is None:
            return json.loads(self.proc.stdout)["features"]["as_of"]
        from pipelines.features import resolve_as_of

        return str(resolve_as_of(str(self.out / "work" / "clean.parquet"), None))


# ----------------------------------------------------------------------------- building inputs


def text_frame(events: pd.DataFrame) -> pd.DataFrame:
    """The simulation as an outsider hands it over in CSV: every value text, ISO times."""
    out = events.assign(event_time=events["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    return out.astype("object").where(out.notna(), None)


def rows_of(base: pd.DataFrame, kind: str | None = None, n: int = 3, start: int = 40) -> list[int]:
    """n rows spread through the file (of one event type when given) whose users have other events."""
    pool = base.index[base["event_type"] == kind] if kind else base.index
    pool = [i for i in pool if i >= start]
    step = max(1, len(pool) // (n + 1))
    return [pool[step * (k + 1)] for k in range(n)]


def csv_case(column: str, values: list, kind: str | None = None, **csv_options) -> Callable:
    """The base file with `values` planted in `column` on len(values) rows."""
    def build(folder: Path, base: pd.DataFrame) -> Built:
        frame = base.copy()
        at = rows_of(frame, kind, len(values))
        for row, value in zip(at, values):
            frame.loc[row, column] = value
        path = folder / "events.csv"
        frame.to_csv(path, index=False, **csv_options)
        return Built(path, len(frame), at)
    return build


def frame_case(edit: Callable[[pd.DataFrame], tuple[pd.DataFrame, list[int]]], suffix: str = ".csv",
               duplicates: int = 0) -> Callable:
    """The base file changed by `edit` (which returns the frame and the rows to be quarantined)."""
    def build(folder: Path, base: pd.DataFrame) -> Built:
        frame, planted = edit(base.copy())
        path = folder / f"events{suffix}"
        if suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        return Built(path, len(frame), planted, duplicates)
    return build


def bytes_case(make: Callable[[pd.DataFrame], bytes], name: str = "events.csv", rows: int | None = None) -> Callable:
    def build(folder: Path, base: pd.DataFrame) -> Built:
        path = folder / name
        path.write_bytes(make(base))
        return Built(path, rows(base) if callable(rows) else rows)
    return build


def base_csv(base: pd.DataFrame, **options) -> bytes:
    return base.to_csv(index=False, **options).encode()


def epochs(base: pd.DataFrame, unit: str) -> np.ndarray:
    since = pd.to_datetime(base["event_time"], utc=True) - pd.Timestamp("1970-01-01", tz="UTC")
    return (since // pd.Timedelta(1, unit=unit)).astype("int64").to_numpy()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def typed_table(base: pd.DataFrame, **columns) -> pa.Table:
    """The base rows as Parquet with typed columns (times as timestamps); `columns` replace some."""
    frame = base.copy()
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["price"] = pd.to_numeric(frame["price"])
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for name, array in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, array)
    return table


def epoch_case(unit: str) -> Callable:
    scale = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]

    def edit(frame: pd.DataFrame):
        t = pd.to_datetime(frame["event_time"], utc=True)
        seconds = (t - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
        frame["event_time"] = (seconds * scale).astype("int64").astype(str)
        return frame, []
    return frame_case(edit)


def mixed_epochs(frame: pd.DataFrame):
    t = pd.to_datetime(frame["event_time"], utc=True)
    seconds = ((t - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)).astype("int64")
    unit = np.arange(len(frame)) % 3
    frame["event_time"] = np.where(unit == 0, seconds.astype(str),
                                   np.where(unit == 1, (seconds * 1000).astype(str), (seconds * 1_000_000).astype(str)))
    return frame, []


def mixed_formats(frame: pd.DataFrame):
    t = pd.to_datetime(frame["event_time"], utc=True)
    layouts = [t.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), t.dt.strftime("%Y-%m-%d %H:%M:%S UTC"),
               t.dt.tz_convert("Asia/Kolkata").dt.strftime("%Y-%m-%dT%H:%M:%S%z"),
               ((t - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(milliseconds=1)).astype(str),
               t.dt.strftime("%Y-%m-%dT%H:%M:%S")]
    pick = np.arange(len(frame)) % len(layouts)
    frame["event_time"] = [layouts[k].iloc[i] for i, k in enumerate(pick)]
    return frame, []


def duplicate_ids(frame: pd.DataFrame):
    at = rows_of(frame, "view", 3)
    for row in at:  # a later row reuses an earlier row's id with other content
        frame.loc[row, "event_id"] = frame.loc[row - 30, "event_id"]
    return frame, at


def exact_duplicates(frame: pd.DataFrame):
    return pd.concat([frame, frame.iloc[100:105]], ignore_index=True), []


def unknown_columns(frame: pd.DataFrame):
    frame["utm_source"] = "newsletter"
    frame["Coupon Code"] = np.where(np.arange(len(frame)) % 7 == 0, "SPRING10", None)
    return frame, []


def drop(column: str):
    return frame_case(lambda f: (f.drop(columns=[column]), []))


def straggler(frame: pd.DataFrame):
    frame.loc[rows_of(frame, "view", 1)[0], "event_time"] = "2026-11-22T00:05:00Z"
    return frame, []


def rename_users(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The first users of the file renamed (the simulation's ids have gaps)."""
    first = sorted(frame["user_id"].unique())[: len(names)]
    frame["user_id"] = frame["user_id"].replace(dict(zip(first, names)))
    return frame


def non_ascii_ids(frame: pd.DataFrame):
    return rename_users(frame, ["用户三", "ünïcødé", "🙂 emoji", "Ελένη"]), []


def hostile_ids(frame: pd.DataFrame):
    frame = rename_users(frame, ["=cmd|' /C calc'!A0", "+SUM(A1:A9)", "@HYPERLINK(\"x\")",
                                 "'; DROP TABLE flagged_users; --", "1 OR 1=1", "\"quoted\", comma"])
    frame.loc[frame["review_text"].notna(), "review_text"] = "=HYPERLINK(\"http://evil\",\"click\")"
    return frame, []


def quoted_newlines(frame: pd.DataFrame):
    at = frame.index[frame["event_type"] == "review"][:5]
    frame.loc[at, "review_text"] = "line one\nline two, with a comma\r\nand \"quotes\""
    return frame, []


def big_field(column: str):
    def edit(frame: pd.DataFrame):
        row = rows_of(frame, "review" if column == "review_text" else None, 1)[0]
        frame.loc[row, column] = "x" * 5_000_000
        return frame, [row] if column == "user_id" else []
    return edit


def latin1(base: pd.DataFrame) -> bytes:
    frame = base.copy()
    frame.loc[frame["event_type"] == "review", "review_text"] = "très bien, Zürich"
    return frame.to_csv(index=False).encode("latin-1")


def zipped(base: pd.DataFrame, members: dict[str, bytes] | None = None) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in (members or {"events.csv": base_csv(base)}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def xlsx(base: pd.DataFrame) -> bytes:
    return zipped(base, {"[Content_Types].xml": b"<Types/>", "_rels/.rels": b"<Relationships/>",
                         "xl/workbook.xml": b"<workbook/>", "xl/worksheets/sheet1.xml": b"<worksheet/>"})


def in_dir(make: Callable[[Path, pd.DataFrame], Path]) -> Callable:
    def build(folder: Path, base: pd.DataFrame) -> Built:
        return Built(make(folder, base))
    return build


def make_dir(folder: Path, base) -> Path:
    (folder / "events.csv").mkdir()
    (folder / "events.csv" / "part-0.csv").write_bytes(base_csv(base))
    return folder / "events.csv"


def make_fifo(folder: Path, base) -> Path:
    os.mkfifo(folder / "events.csv")
    return folder / "events.csv"


def make_broken_link(folder: Path, base) -> Path:
    (folder / "events.csv").symlink_to(folder / "gone.csv")
    return folder / "events.csv"


def make_unreadable(folder: Path, base: pd.DataFrame) -> Built:
    path = folder / "events.csv"
    path.write_bytes(base_csv(base))
    path.chmod(0)
    return Built(path, len(base) if os.geteuid() == 0 else None)


def times_as(expected: str) -> Callable[[Result], None]:
    def check(result: Result) -> None:
        clean = pd.read_parquet(result.out / "work" / "clean.parquet")
        assert pd.Timestamp(expected) in set(clean["event_time"])
    return check


def ids_kept_verbatim(*ids: str) -> Callable[[Result], None]:
    def check(result: Result) -> None:
        assert set(ids) <= set(result.scores()["user_id"])
    return check


def prices_missing(n: int) -> Callable[[Result], None]:
    def check(result: Result) -> None:
        clean = pd.read_parquet(result.out / "work" / "clean.parquet")
        assert (clean["price"].isna() & clean["event_type"].eq("purchase")).sum() == n
    return check


def warehouse_intact(result: Result) -> None:
    ids_kept_verbatim("=cmd|' /C calc'!A0", "+SUM(A1:A9)", "@HYPERLINK(\"x\")", "'; DROP TABLE flagged_users; --",
                      "1 OR 1=1", "\"quoted\", comma")(result)
    with duckdb.connect(str(result.out / "wh.duckdb"), read_only=True) as con:
        (n,), = con.execute("SELECT count(*) FROM flagged_users").fetchall()
    assert n > 0


def extras_kept(result: Result) -> None:
    clean = pd.read_parquet(result.out / "work" / "clean.parquet")
    assert {"utm_source", "Coupon Code"} <= set(clean.columns)


def warns_about_the_run_date(result: Result) -> None:
    assert re.search(r"run date 2026-11-22 is set by 1 event\(s\) on that day", result.proc.stderr)


def scored_as_of(day: str) -> Callable[[Result], None]:
    def check(result: Result) -> None:
        assert result.run_date() == day and result.scores()["as_of"].astype(str).eq(day).all()
    return check


Q, R = "quarantine", "refuse"
FUTURE = "after ingest time (clean.max_future_days)"
FLOOR = "before 1990-01-01 (clean.min_event_time)"

CASES = [
    # --- columns
    Case("missing_event_time", drop("event_time"), R, r"missing required column\(s\) event_time.*events need"),
    Case("missing_user_id", drop("user_id"), R, r"missing required column\(s\) user_id"),
    Case("missing_event_type", drop("event_type"), R, r"missing required column\(s\) event_type"),
    Case("unknown_columns", frame_case(unknown_columns), Q, check=extras_kept),
    Case("duplicate_column_names", bytes_case(lambda b: base_csv(b.assign(price2=b["price"])).replace(
        b"price2", b"price", 1)), R, r"duplicate column name\(s\) price in the header; rename or drop"),
    Case("duplicate_column_names_parquet", bytes_case(lambda b: parquet_bytes(typed_table(b).rename_columns(
        [c if c != "session_id" else "device_id" for c in typed_table(b).column_names])), "events.parquet"),
        R, r"duplicate column name\(s\) device_id; rename or drop"),
    # --- types
    Case("price_not_a_number", csv_case("price", ["cheap", "12..5", "true"], "purchase"), Q, "price is not a number"),
    Case("quantity_not_a_number", csv_case("quantity", ["two", "1/2", "x"], "purchase"), Q, "quantity is not a number"),
    Case("rating_not_a_number", csv_case("rating", ["five", "★★★"], "review"), Q, "rating is not a number"),
    Case("rating_out_of_range", csv_case("rating", ["0", "7", "4.5"], "review"), Q, "rating must be 1..5"),
    Case("integer_user_ids_in_parquet", bytes_case(lambda b: parquet_bytes(typed_table(
        b, user_id=pa.array(b["user_id"].str[1:].astype("int64")))), "events.parquet", len), Q),
    Case("event_type_as_integers_parquet", bytes_case(lambda b: parquet_bytes(typed_table(
        b, event_type=pa.array(np.where(np.arange(len(b)) == 50, 7, 0).astype("int64")))), "events.parquet", len),
        R, r"no usable events: all \d+ rows were quarantined \(\d+ unknown event_type\); see .*quarantine",
        command="run"),
    Case("mixed_types_in_price_parquet", bytes_case(lambda b: parquet_bytes(typed_table(
        b, price=pa.array([None if p is None else ("12,50" if i == 60 else str(p)) for i, p in enumerate(b["price"])]))),
        "events.parquet", len), Q, "price is not a number"),
    # --- timestamps
    Case("unparseable_times", csv_case("event_time", ["yesterday", "not a date", "2026-11-2O"]), Q,
         "unparseable event_time"),
    Case("impossible_times", csv_case("event_time", ["2026-02-30T10:00:00Z", "2026-11-20T25:00:00Z",
                                                     "2026-11-20T10:61:00Z"]), Q, "unparseable event_time"),
    Case("leap_second", csv_case("event_time", ["2016-12-31T23:59:60Z"]), Q, check=times_as("2017-01-01T00:00:00Z")),
    Case("leap_second_with_offset_and_fraction", csv_case("event_time", ["2016-12-31 23:59:60.5+01:00"]), Q,
         check=times_as("2016-12-31T23:00:00.5Z")),
    Case("mixed_formats", frame_case(mixed_formats), Q),
    Case("epoch_seconds", epoch_case("s"), Q),
    Case("epoch_milliseconds", epoch_case("ms"), Q),
    Case("epoch_microseconds", epoch_case("us"), Q),
    Case("epoch_nanoseconds", epoch_case("ns"), Q),
    Case("epoch_s_ms_us_mixed", frame_case(mixed_epochs), Q),
    Case("far_future", csv_case("event_time", ["2099-01-01T00:00:00Z", "2031-06-01T12:00:00Z", "9999-12-31T23:59:59Z"]),
         Q, FUTURE, check=scored_as_of(LAST_DAY)),
    Case("epoch_14_digits", csv_case("event_time", ["99999999999999", "31536000000000"]), Q, FUTURE,
         check=scored_as_of(LAST_DAY)),
    Case("before_1990", csv_case("event_time", ["1970-01-01T00:00:00Z", "1899-12-31T00:00:00Z", "1989-12-31T23:59:59Z"]),
         Q, FLOOR),
    Case("epoch_zero_and_negative", csv_case("event_time", ["0", "-86400", "12"]), Q, FLOOR),
    Case("beyond_any_calendar", csv_case("event_time", ["99999-01-01T00:00:00Z", "1e400"]), Q, "event_time"),
    Case("missing_times", csv_case("event_time", [None, "   "]), Q, "missing event_time"),
    Case("a_handful_of_rows_set_the_run_date", frame_case(straggler), Q, check=warns_about_the_run_date),
    # --- prices and quantities
    # CSV's NaN is its missing value, and a price may be missing: kept, with no price
    Case("price_nan", csv_case("price", ["NaN", "nan"], "purchase"), Q, check=prices_missing(2)),
    Case("price_inf", csv_case("price", ["inf", "Infinity", "-inf"], "purchase"), Q, "price is infinite"),
    Case("price_inf_parquet", bytes_case(lambda b: parquet_bytes(typed_table(
        b, price=pa.array(np.where(np.arange(len(b)) % 97 == 1, np.inf, pd.to_numeric(b["price"]).to_numpy())))),
        "events.parquet", len), Q, "price is infinite"),
    Case("price_negative", csv_case("price", ["-5", "-0.01"], "purchase"), Q, "negative price"),
    Case("price_1e20", csv_case("price", ["1e20", "1e15"], "purchase"), Q, "price above 1e+09 (clean.max_price)"),
    Case("price_with_unit", csv_case("price", ["12 EUR", "€12", "$9.99", "1,299.00"], "purchase"), Q,
         "price is not a number"),
    Case("quantity_zero_and_negative", csv_case("quantity", ["0", "-2"], "purchase"), Q,
         "quantity must be a whole number >= 1"),
    Case("quantity_fraction", csv_case("quantity", ["2.5"], "purchase"), Q, "quantity must be a whole number >= 1"),
    Case("quantity_1e30", csv_case("quantity", ["1e30", "1e400"], "purchase"), Q,
         "quantity above 1000000 (clean.max_quantity)"),
    # --- values
    Case("unknown_event_types", csv_case("event_type", ["teleport", "click", "purchase!"]), Q, "unknown event_type"),
    Case("event_types_in_other_case", csv_case("event_type", ["VIEW", " Purchase ", "Login"]), Q),
    Case("null_user_ids", csv_case("user_id", [None, None]), Q, "missing user_id"),
    Case("empty_user_ids", csv_case("user_id", ["   ", "\t"]), Q, "missing user_id"),
    Case("very_long_user_ids", csv_case("user_id", ["u" * 257, "x" * 10_000]), Q,
         "user_id longer than 256 characters (clean.max_id_length)"),
    Case("non_ascii_user_ids", frame_case(non_ascii_ids), Q, check=ids_kept_verbatim("用户三", "ünïcødé", "🙂 emoji", "Ελένη")),
    Case("duplicate_event_ids_different_content", frame_case(duplicate_ids), Q,
         "duplicate event_id with different content"),
    Case("exact_duplicate_rows", frame_case(exact_duplicates, duplicates=5), Q),
    # --- file shapes
    Case("zero_bytes", bytes_case(lambda b: b""), R, r"file is empty; it needs a header row"),
    Case("blank_lines_only", bytes_case(lambda b: b"\n\n\r\n"), R, r"file is empty; it needs a header row"),
    Case("header_only", bytes_case(lambda b: b"event_time,user_id,event_type\n"), R, r"no events in the file"),
    Case("parquet_zero_rows", bytes_case(lambda b: parquet_bytes(typed_table(b).slice(0, 0)), "events.parquet"), R,
         r"no events in the file"),
    Case("truncated_parquet", bytes_case(lambda b: parquet_bytes(typed_table(b))[:3000], "events.parquet"), R,
         r"cannot read Parquet \(.+\); the file is damaged or truncated: write or copy it again"),
    Case("parquet_times_as_epoch_ms", bytes_case(lambda b: parquet_bytes(typed_table(
        b, event_time=pa.array(epochs(b, "ms")))),
        "events.parquet", len), Q),
    Case("parquet_times_as_epoch_s", bytes_case(lambda b: parquet_bytes(typed_table(
        b, event_time=pa.array(epochs(b, "s")))),
        "events.parquet", len), Q),
    Case("non_utf8_bytes", bytes_case(latin1), R, r"not UTF-8 text \(line \d+, byte 0xe8\); save the file as UTF-8 CSV"),
    Case("byte_order_mark", bytes_case(lambda b: b"\xef\xbb\xbf" + base_csv(b), rows=len), Q),
    Case("crlf_line_ends", bytes_case(lambda b: base_csv(b, lineterminator="\r\n"), rows=len), Q),
    Case("quoted_newlines", frame_case(quoted_newlines), Q),
    Case("five_mb_review", frame_case(big_field("review_text")), Q),
    Case("five_mb_user_id", frame_case(big_field("user_id")), Q, "user_id longer than 256 characters"),
    Case("ragged_row", bytes_case(lambda b: base_csv(b) + b"2026-11-20T10:00:00Z,u1,view,a,b,c,d,e,f,g,h,i,j,k,l,m\n"),
         R, r"malformed CSV \(.+\); fix or quote that row"),
    Case("unclosed_quote", bytes_case(lambda b: base_csv(b) + b'2026-11-20T10:00:00Z,"u1,view\n'), R,
         r"malformed CSV \(.+\); fix or quote that row"),
    Case("semicolon_separated", bytes_case(lambda b: base_csv(b, sep=";")), R,
         r"columns separated by ';', not commas; save it as comma-separated CSV"),
    # --- hostile text
    Case("formula_injection_and_sql_in_ids", frame_case(hostile_ids), Q, check=warehouse_intact),
    # --- not what the name says
    Case("html_page", bytes_case(lambda b: b"<!DOCTYPE html>\n<html><head><title>Login</title></head></html>\n"), R,
         r"HTML or XML, not CSV.*download the CSV itself"),
    Case("json_lines", bytes_case(lambda b: b.head(20).to_json(orient="records", lines=True).encode()), R,
         r"JSON, not CSV; convert it to CSV"),
    Case("json_array", bytes_case(lambda b: b.head(20).to_json(orient="records").encode()), R, r"JSON, not CSV"),
    Case("xlsx_named_csv", bytes_case(xlsx), R, r"an Excel workbook, not CSV; export the sheet as CSV"),
    Case("zip_with_one_csv", bytes_case(zipped, rows=len), Q),
    Case("zip_with_two_files", bytes_case(lambda b: zipped(b, {"a.csv": base_csv(b), "b.csv": base_csv(b)})), R,
         r"a zip archive with 2 files; unzip it and pass one events file"),
    Case("truncated_zip", bytes_case(lambda b: zipped(b)[:2000]), R, r"damaged or truncated zip archive"),
    Case("gzip_without_suffix", bytes_case(lambda b: gzip.compress(base_csv(b)), rows=len), Q),
    Case("truncated_gzip", bytes_case(lambda b: gzip.compress(base_csv(b))[:5000]), R,
         r"damaged or truncated compressed file \(.+\); copy it again"),
    Case("png_named_csv", bytes_case(lambda b: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20), R,
         r"not UTF-8 text \(line 1, byte 0x89\); save the file as UTF-8 CSV"),
    Case("parquet_named_csv", bytes_case(lambda b: parquet_bytes(typed_table(b)), rows=len), Q),
    Case("csv_named_parquet", bytes_case(base_csv, "events.parquet"), R,
         r"not a valid Parquet file \(no Parquet header\); check the file or rename it to .csv"),
    Case("directory", in_dir(make_dir), R, r"is a directory; pass one events file"),
    Case("path_does_not_exist", in_dir(lambda folder, base: folder / "nope.csv"), R, r"nope.csv: file not found; check the path"),
    Case("broken_symlink", in_dir(make_broken_link), R, r"a link to a file that does not exist; point it at"),
    Case("fifo", in_dir(make_fifo), R, r"not a regular file; pass one events file"),
    # root reads a mode-000 file anyway: then it is an ordinary, readable input
    Case("unreadable_file", make_unreadable, Q if os.geteuid() == 0 else R,
         "" if os.geteuid() == 0 else r"permission denied; make the file readable"),
]


# ----------------------------------------------------------------------------- running them


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def prepare(case: Case, root: Path, base: pd.DataFrame) -> tuple[Built, list[str], Path]:
    """The case's input in a folder of its own (no params.yaml there: `run` uses the defaults),
    the command line for it, and where its outputs go."""
    folder = root / case.name
    folder.mkdir()
    built = case.build(folder, base)
    command = case.command or ("run" if case.outcome == Q else "ingest")
    out = folder / "out"
    if command == "run":
        args = ["run", "--events", str(built.path), "--out", str(out), "--warehouse", f"duckdb:///{out / 'wh.duckdb'}"]
    else:
        args = ["--params", str(PARAMS), "ingest", "--as-of", LAST_DAY, "--source", str(built.path),
                "--out", str(out / "ingested.parquet")]
    return built, args, out


def execute(case: Case, root: Path, base: pd.DataFrame) -> Result:
    built, args, out = prepare(case, root, base)
    return Result(case, built, cli(args, out.parent), out)


def batch_job(args: list[str], folder: Path, name: str) -> dict:
    """A command line for tests/bad_input_batch.py, with its output files in `folder`."""
    return {"argv": args, "cwd": str(folder), **{k: str(folder / f"{name}.{k}") for k in ("stdout", "stderr", "rc")}}


def batch_result(job: dict) -> subprocess.CompletedProcess:
    """What the batch recorded for a job, shaped as the subprocess of the command would be (no
    rc file: the job never finished; its stderr says why)."""
    rc = Path(job["rc"])
    return subprocess.CompletedProcess([sys.executable, "-m", "pipelines", *job["argv"]],
                                       int(rc.read_text()) if rc.exists() else None,
                                       Path(job["stdout"]).read_text() if Path(job["stdout"]).exists() else "",
                                       Path(job["stderr"]).read_text() if Path(job["stderr"]).exists() else
                                       "the batch never started this job")


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    events, _ = simulate({"n_users": 120, "days": 6, "seed": 7, "anomaly_rate": 0.05, "end_date": LAST_DAY})
    return text_frame(events)


# These quarantine cases are whole runs, `python -m pipelines run` in a process of its own as a
# user types it: one sets a different run date, one publishes hostile ids to the warehouse, one
# keeps non-ASCII ids, one carries a 5 MB review through every step, one is Parquet with mixed
# types. For the others each file goes through ingest and clean as `run` does them (the same
# steps, explicit paths, default parameters), their clean events are then scored together in
# ONE `run`, ids made distinct per case (issue 9: CI's time limit; a run's cost is validation,
# report and imports, not the fit). Per case that proves the same accounting and quarantine,
# and that its every clean user gets one finite score; what the shared run does not prove per
# case is a model fitted on that case alone, features validated and a report built for it.
OWN_PROCESS = ("a_handful_of_rows_set_the_run_date", "formula_injection_and_sql_in_ids", "non_ascii_user_ids",
               "five_mb_review", "mixed_types_in_price_parquet")
BATCHES = 2  # interpreters for the ingest and clean steps (tests/bad_input_batch.py): one per core
ID_COLUMNS = ("user_id", "event_id", "session_id", "product_id", "device_id", "ip")  # tagged per case: no
# device, IP, session or product links users of different cases


def together_scores(out: Path) -> Path:
    return out.parents[1] / "together" / "out" / "scores.parquet"


def ingest_and_clean(built: Built, out: Path) -> list[dict]:
    """The two steps `run` starts with, as command lines, writing where `run` writes."""
    params = out.parent / "params.yaml"  # the defaults, with the case's own storage (JSON is YAML)
    params.write_text(json.dumps({"storage": {k: str(out / k) for k in ("data", "reports", "models")}}))
    work = out / "work"
    ingest = ["--params", str(params), "ingest", "--as-of", LAST_DAY, "--source", str(built.path),
              "--out", str(work / "ingested.parquet")]
    clean = ["--params", str(params), "clean", "--as-of", LAST_DAY, "--in", str(work / "ingested.parquet"),
             "--out", str(work / "clean.parquet"), "--quarantine", str(out / "quarantine.parquet"),
             "--report", str(out / "clean_report.json")]
    return [batch_job(ingest, out.parent, "ingest"), batch_job(clean, out.parent, "clean")]


def steps_result(jobs: list[dict]) -> subprocess.CompletedProcess:
    """Several steps as one process would report them: the first failing status, the stderr of
    all, and on success stdout as `run` prints it ({step: its summary})."""
    procs = [batch_result(job) for job in jobs]
    failed = [p for p in procs if p.returncode != 0]
    stdout = "\n".join(p.stdout for p in procs) if failed else \
        json.dumps({job["argv"][2]: json.loads(p.stdout) for job, p in zip(jobs, procs)})
    return subprocess.CompletedProcess([p.args for p in procs], failed[0].returncode if failed else 0, stdout,
                                       "".join(p.stderr for p in procs))


def score_together(names: list[str], outs: dict[str, Path], root: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """The clean events of the cases, ids tagged per case, in one file for one `run`."""
    tags, frames = {}, []
    for k, name in enumerate(names):
        path = outs[name] / "work" / "clean.parquet"
        if not path.exists():
            continue  # its clean step failed: its own test says so
        tags[name] = f"c{k:02d}:"
        frame = pd.read_parquet(path)
        frames.append(frame.assign(**{c: tags[name] + frame[c] for c in ID_COLUMNS if c in frame.columns}))
    folder = root / "together"
    folder.mkdir()
    events = folder / "events.parquet"
    pd.concat(frames, ignore_index=True).to_parquet(events, index=False)
    out = folder / "out"
    return cli(["run", "--events", str(events), "--out", str(out), "--warehouse", f"duckdb:///{out / 'wh.duckdb'}"],
               folder), tags


@pytest.fixture(scope="module")
def quarantine_results(tmp_path_factory, base) -> dict[str, Result]:
    """Every case's runs, all before any assertion, a few processes at once."""
    from bad_input_batch import run_batches

    root = tmp_path_factory.mktemp("quarantine_cases")
    prepared = {case.name: prepare(case, root, base) for case in QUARANTINED}
    together = [name for name in prepared if name not in OWN_PROCESS]
    steps = {name: ingest_and_clean(prepared[name][0], prepared[name][2]) for name in together}
    groups = [[job for name in together[k::BATCHES] for job in steps[name]] for k in range(BATCHES)]
    with ThreadPoolExecutor(max_workers=BATCHES + 1) as pool:
        batches = [pool.submit(run_batches, group, root / f"batch{k}.json") for k, group in enumerate(groups)]
        own = {name: pool.submit(cli, prepared[name][1], prepared[name][2].parent) for name in OWN_PROCESS}
        for batch in batches:
            batch.result()
        shared = pool.submit(score_together, together, {n: prepared[n][2] for n in together}, root)
        procs = {name: future.result() for name, future in own.items()}
        shared_proc, tags = shared.result()
    results = {name: Result(next(c for c in QUARANTINED if c.name == name), prepared[name][0], procs[name],
                            prepared[name][2]) for name in OWN_PROCESS}
    for name in together:
        results[name] = Result(next(c for c in QUARANTINED if c.name == name), prepared[name][0],
                               steps_result(steps[name]), prepared[name][2], shared_proc, tags.get(name, "?"))
    return results


QUARANTINED = [c for c in CASES if c.outcome == Q]
REFUSED = [c for c in CASES if c.outcome == R]


def test_the_corpus_is_large_and_covers_both_endings():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 60
    assert len(QUARANTINED) >= 25 and len(REFUSED) >= 25
    # the end-to-end processes are cases of the corpus (a renamed case must not drop one silently)
    assert set(OWN_PROCESS) <= {c.name for c in QUARANTINED} and "a_handful_of_rows_set_the_run_date" in OWN_PROCESS


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
def test_unusable_input_is_refused_with_one_line(case: Case, tmp_path, base):
    proc = execute(case, tmp_path, base).proc
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: ") and re.search(case.expect, lines[0]), lines[0]


def test_a_batched_command_ends_as_its_own_process_would(tmp_path, base):
    """tests/bad_input_batch.py, which runs most quarantine cases: the exit status, stdout and
    stderr of a command are what `python -m pipelines` gives in a process of its own; an
    exception escaping is a traceback with status 1, and the next job still runs."""
    from bad_input_batch import run_batches

    cases = {c.name: c for c in REFUSED}
    (tmp_path / "alone").mkdir()
    alone = {name: execute(cases[name], tmp_path / "alone", base).proc
             for name in ("header_only", "event_type_as_integers_parquet")}  # ingest and run refusing
    jobs = []
    for name in alone:
        _, args, out = prepare(cases[name], tmp_path, base)
        jobs.append(batch_job(args, out.parent, "cmd"))
    (tmp_path / "usage").mkdir()
    jobs.append(batch_job(["run", "--events", "x.csv"], tmp_path / "usage", "cmd"))  # argparse: no --out
    crash = batch_job(["registry"], tmp_path, "crash")
    crash["cwd"] = str(tmp_path / "no such folder")  # chdir raises inside the job
    jobs.append(crash)
    jobs.append(batch_job(jobs[0]["argv"], Path(jobs[0]["cwd"]), "again"))
    run_batches(jobs, tmp_path / "jobs.json")
    got = [batch_result(job) for job in jobs]
    for (name, proc), batched in zip(alone.items(), got):
        assert (batched.returncode, batched.stdout) == (proc.returncode, proc.stdout), name
        assert batched.stderr.replace(str(tmp_path), "T") == proc.stderr.replace(str(tmp_path / "alone"), "T"), name
    usage = got[len(alone)]
    assert usage.returncode == 2 and "the following arguments are required: --out" in usage.stderr
    crashed = got[len(alone) + 1]
    assert crashed.returncode == 1 and "Traceback (most recent call last)" in crashed.stderr
    assert "FileNotFoundError" in crashed.stderr
    assert (got[-1].returncode, got[-1].stderr) == (got[0].returncode, got[0].stderr)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the first one waits for every run of the shared fixture
@pytest.mark.parametrize("case", QUARANTINED, ids=[c.name for c in QUARANTINED])
def test_bad_rows_are_quarantined_and_the_rest_is_scored(case: Case, quarantine_results):
    result = quarantine_results[case.name]
    proc = result.proc
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((result.out / "clean_report.json").read_text())
    assert report["rows_in"] == result.built.rows, "every row of the file reaches cleaning"
    assert report["rows_in"] == report["rows_clean"] + report["rows_quarantined"] + report["exact_duplicates_removed"]
    assert report["exact_duplicates_removed"] == result.built.duplicates
    quarantine = pd.read_parquet(result.out / "quarantine.parquet")
    if case.expect:  # the planted rows and nothing else, each with the reason
        assert len(quarantine) > 0 and quarantine["quarantine_reason"].str.contains(case.expect, regex=False).all(), \
            quarantine["quarantine_reason"].value_counts()
        if result.built.planted:
            assert sorted(quarantine["source_row"]) == sorted(result.built.planted)
    else:
        assert quarantine.empty, quarantine["quarantine_reason"].value_counts()

    # the rest is scored: every user of the clean events, once, with a finite score
    if result.together is not None:
        assert "Traceback" not in result.together.stderr and result.together.returncode == 0, \
            result.together.stderr[-2000:]
    clean = pd.read_parquet(result.out / "work" / "clean.parquet", columns=["user_id"])
    scores = result.scores()
    assert set(scores["user_id"]) == set(clean["user_id"]) and scores["user_id"].is_unique
    assert np.isfinite(scores["score"]).all()
    assert result.run_date() == (LAST_DAY if case.name != "a_handful_of_rows_set_the_run_date" else "2026-11-22")
    if case.check:
        case.check(result)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_cases_scored_together_are_one_clean_run(quarantine_results):
    """The run that scores most cases' clean events: its input is clean already, so cleaning it
    again changes nothing, and every user of every case in it is scored as of the last day."""
    shared = [r for r in quarantine_results.values() if r.together is not None]
    assert len(shared) == len(QUARANTINED) - len(OWN_PROCESS)
    proc = shared[0].together
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    out = together_scores(shared[0].out).parent
    report = json.loads((out / "clean_report.json").read_text())
    rows = sum(pq.ParquetFile(r.out / "work" / "clean.parquet").metadata.num_rows for r in shared)
    assert (report["rows_in"], report["rows_clean"], report["rows_quarantined"]) == (rows, rows, 0)
    assert json.loads(proc.stdout)["features"]["as_of"] == LAST_DAY
    users = sum(pd.read_parquet(r.out / "work" / "clean.parquet", columns=["user_id"])["user_id"].nunique()
                for r in shared)
    assert len(pd.read_parquet(out / "scores.parquet")) == users


# ----------------------------------------------------------------------------- bad scores


@pytest.fixture(scope="module")
def day_features(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    from pipelines.clean import clean
    from pipelines.features import build_features

    events, _ = simulate({"n_users": 150, "days": 5, "seed": 11, "anomaly_rate": 0.05, "end_date": LAST_DAY})
    features = build_features(clean(events)[0], {"as_of": LAST_DAY})
    path = tmp_path_factory.mktemp("features") / "features.parquet"
    features.to_parquet(path, index=False)
    return path, features


def broken_model(features: pd.DataFrame, value: float):
    """A fitted robust_zscore whose state has gone bad, as a diverged fit leaves one."""
    from pipelines.detectors import make_detector

    detector = make_detector("robust_zscore", {})
    detector.fit(features.drop(columns="user_id"))
    detector.model_["median"] = np.full_like(detector.model_["median"], value)
    return detector


def test_a_model_giving_nan_scores_stops_the_score_step_before_anything_is_written(tmp_path, day_features):
    from pipelines.registry import Registry

    features_path, features = day_features
    version = Registry(str(tmp_path / "models")).register(broken_model(features, np.nan), {"trained_as_of": LAST_DAY})
    (tmp_path / "params.yaml").write_text(
        f"as_of: '{LAST_DAY}'\nstorage: {{data: {tmp_path / 'data'}, reports: {tmp_path / 'reports'}, "
        f"models: {tmp_path / 'models'}}}\n")
    proc = cli(["--params", str(tmp_path / "params.yaml"), "score", "--features", str(features_path),
                "--model", version, "--out", str(tmp_path / "scores.parquet")], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.match(rf"error: model {version} gave {len(features)} NaN or infinite score\(s\) in a batch of "
                    rf"{len(features)} users \(first: user \S+\); nothing was written: retrain the model", lines[0])
    assert not (tmp_path / "scores.parquet").exists()
    assert not list((tmp_path / "reports").rglob("score.json"))


def test_one_non_finite_score_in_a_later_batch_is_caught(day_features):
    from pipelines.errors import ScoresNotFinite
    from pipelines.score import score_users

    _, features = day_features
    detector = broken_model(features, 0.0)
    healthy = detector._score
    target, last_batch = features["user_id"].iloc[-2], len(features) - 100
    assert 0 < last_batch != 100

    def diverges_on_one_user(X):
        scores = healthy(X)
        if len(X) == last_batch:  # the second batch (of 100 users); parts may be scored in any order
            scores[-2] = np.inf
        return scores

    detector._score = diverges_on_one_user
    with pytest.raises(ScoresNotFinite, match=rf"gave 1 NaN or infinite score\(s\) in a batch of {last_batch} users "
                                              rf"\(first: user {target}\)"):
        score_users(features, detector, {"batch_users": 100}, LAST_DAY)
    detector._score = healthy
    assert np.isfinite(score_users(features, detector, {"batch_users": 100}, LAST_DAY)["score"]).all()


# ----------------------------------------------------------------------------- scale

SCALE_ROWS = 5_000_000
BAD_KINDS = {  # each planted on 5% of the rows: 30% in all
    "unparseable event_time": ("event_time", "not a time"),
    "event_time more than 1 day(s) after ingest time (clean.max_future_days)": ("event_time", "2099-01-01T00:00:00Z"),
    "unknown event_type": ("event_type", "teleport"),
    "negative price": ("price", "-3.5"),
    "missing user_id": ("user_id", None),
    "price is infinite": ("price", "inf"),
}


def big_ingested_file(path: Path, n: int) -> dict[str, int]:
    """n rows as ingest leaves a CSV (every column text), built in Arrow; returns the planted counts."""
    import pyarrow.compute as pc

    rng = np.random.default_rng(0)

    def ids(prefix: str, high: int) -> pa.Array:
        return pc.binary_join_element_wise(prefix, pc.cast(pa.array(rng.integers(0, high, n)), pa.string()), "")

    seconds = rng.integers(0, 28 * 86400, n)  # after 2026-10-25T00:00:00Z
    # the text Arrow's strftime("%Y-%m-%dT%H:%M:%SZ") gives for microsecond times, e.g.
    # 2026-11-17T19:37:10.000000Z, built from 28 day and 86400 clock strings: 13 s less
    days = pa.array(pd.date_range("2026-10-25", periods=28, freq="D").strftime("%Y-%m-%d").tolist())
    clock = pa.array(pd.to_datetime(np.arange(86400), unit="s").strftime("%H:%M:%S.000000Z").tolist())
    columns = {
        "event_time": pc.binary_join_element_wise(pc.take(days, pa.array(seconds // 86400)),
                                                  pc.take(clock, pa.array(seconds % 86400)), "T"),
        "user_id": ids("u", 200_000),
        "event_type": pc.take(pa.array(["view", "cart", "purchase", "login", "refund"]), rng.integers(0, 5, n)),
        "session_id": ids("s", 1_000_000),
        "product_id": ids("p", 50_000),
        "price": pc.cast(pa.array(np.round(rng.gamma(2.0, 20.0, n), 2)), pa.string()),
        "quantity": pc.cast(pa.array(rng.integers(1, 4, n)), pa.string()),
        "device_id": ids("d", 300_000),
        "ip": ids("10.0.", 60_000),
        "country": pc.take(pa.array(["DE", "US", "FR", "PL"]), rng.integers(0, 4, n)),
    }
    kind = rng.integers(0, 20, n)  # 0..5: one bad kind each, 6..19: good
    planted = {}
    for k, (reason, (column, value)) in enumerate(BAD_KINDS.items()):
        mask = pa.array(kind == k)
        columns[column] = pc.if_else(mask, pa.scalar(value, pa.string()), columns[column])
        planted[reason] = int((kind == k).sum())
    pq.write_table(pa.table(columns), path)
    return planted


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_clean_on_five_million_rows_with_thirty_percent_bad(tmp_path):
    planted = big_ingested_file(tmp_path / "ingested.parquet", SCALE_ROWS)
    assert sum(planted.values()) / SCALE_ROWS == pytest.approx(0.30, abs=0.01)
    # a fresh parent process, so ru_maxrss of its children is the clean step's alone
    measure = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run([sys.executable, '-m', 'pipelines', *sys.argv[1:]], capture_output=True, text=True)\n"
        "print(json.dumps({'rc': p.returncode, 'stderr': p.stderr[-3000:], 'wall_s': time.perf_counter() - t,\n"
        "                  'peak_rss_gb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", measure, "--params", str(PARAMS), "clean", "--as-of", LAST_DAY,
                           "--in", str(tmp_path / "ingested.parquet"), "--out", str(tmp_path / "clean.parquet"),
                           "--quarantine", str(tmp_path / "quarantine.parquet"), "--report", str(tmp_path / "report.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    run = json.loads(proc.stdout)
    print(f"clean on {SCALE_ROWS} rows: {run['wall_s']:.1f} s, peak RSS {run['peak_rss_gb']:.2f} GB")
    assert run["rc"] == 0 and "Traceback" not in run["stderr"], run["stderr"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rows_in"] == SCALE_ROWS
    assert report["rows_in"] == report["rows_clean"] + report["rows_quarantined"] + report["exact_duplicates_removed"]
    assert report["quarantine_reasons"] == planted
    assert pq.ParquetFile(tmp_path / "quarantine.parquet").metadata.num_rows == sum(planted.values())
    assert run["peak_rss_gb"] < 6.0, "clean's peak memory on 5M rows (3.7 GB when this test was written)"
