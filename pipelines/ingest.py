"""Ingest: read an events file (local or s3://, CSV, gzipped CSV or Parquet) into the contract's columns.

Nothing is cleaned here. CSV columns are read as text (so user_id "007" stays "007" and an
epoch value is not turned into a float); Parquet keeps its own types, except that integer
columns holding nulls become nullable Int64 instead of lossy float64. Type coercion, UTC
normalisation, epoch-unit detection, event-type case, de-duplication and quarantine are the
cleaning step's job (pipelines.clean). Every row of the file comes back; nothing is dropped.
"""
from __future__ import annotations

import gzip
import lzma
import os
import zipfile
import zlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.adapters import ADAPTERS, TAOBAO_COLUMNS, detect_layout, looks_like_taobao_row
from pipelines.clean import INGESTED_AT
from pipelines.errors import UserError
from pipelines.io import detect_format, is_s3, local_copy
from pipelines.schema import EVENT_DTYPES, REQUIRED_EVENT_COLUMNS

FORMATS: tuple[str, ...] = ("auto", *ADAPTERS)

_MAGIC_COMPRESSION = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}


def ingest(source: str | os.PathLike, fmt: str = "auto") -> pd.DataFrame:
    """Events from `source` in `fmt` (auto, contract, rees46, taobao, retailrocket), in contract column names.

    Raises UserError with a one-line message for a missing or empty file, an unknown format
    name, missing required columns, or a layout that auto-detection does not recognise.
    """
    fmt = str(fmt or "auto").strip().lower()
    if fmt not in FORMATS:
        raise UserError(f"unknown events format {fmt!r}; use one of: {', '.join(FORMATS)}")
    source = str(source)
    if not is_s3(source) and not os.path.lexists(source):
        raise UserError(f"{source}: file not found; check the path (a relative one starts at {os.getcwd()})")
    if not is_s3(source) and not os.path.exists(source):
        raise UserError(f"{source}: a link to a file that does not exist; point it at the events file")
    # the reference for "in the future" in cleaning: no event can be later than the read
    ingested_at = pd.Timestamp.now(tz="UTC").isoformat()
    with local_copy(source) as path:
        if path.is_dir():
            raise UserError(f"{source}: is a directory; pass one events file (.csv, .csv.gz or .parquet)")
        if not path.is_file():  # a pipe or a device: reading it could block forever
            raise UserError(f"{source}: not a regular file; pass one events file (.csv, .csv.gz or .parquet)")
        if path.stat().st_size == 0:
            raise UserError(f"{source}: file is empty; it needs a header row and at least one event")
        try:
            head = _read_magic(path)
        except PermissionError as exc:
            raise UserError(f"{source}: permission denied; make the file readable by this user") from exc
        if head.startswith(b"PK"):
            _check_zip(source, path)
        if _is_parquet(source, head):
            raw, layout = _read_parquet(source, path, fmt)
        else:
            raw, layout = _read_csv(source, path, fmt, head)
    if raw.empty:
        raise UserError(f"{source}: no events in the file (only a header?); it needs at least one data row")
    _check_required(source, raw.columns, layout)
    events = ADAPTERS[layout].convert(raw)
    if len(events) != len(raw):  # adapters rename and map, never drop
        raise RuntimeError(f"adapter {layout} changed the row count {len(raw)} -> {len(events)}")
    events = events.reset_index(drop=True)
    events.attrs[INGESTED_AT] = ingested_at  # kept in the Parquet metadata for the cleaning step
    return events


def _check_zip(source: str, path: Path) -> None:
    """A zip archive is read only when it holds one file; say what it is otherwise."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise UserError(f"{source}: a damaged or truncated zip archive ({_first_line(exc)}); "
                        f"copy the file again or pass the CSV inside it") from exc
    if "[Content_Types].xml" in names:
        kind = "an Excel workbook" if any(n.startswith("xl/") for n in names) else "an Office document"
        raise UserError(f"{source}: {kind}, not CSV; export the sheet as CSV (UTF-8) and pass that file")
    if len(names) != 1:
        raise UserError(f"{source}: a zip archive with {len(names)} files; unzip it and pass one events file")


def _read_magic(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4)


def _is_parquet(source: str, head: bytes) -> bool:
    if head == b"PAR1":
        return True
    try:
        kind = detect_format(source)
    except UserError:
        kind = None  # no telling extension: the content decides, and it is not Parquet
    if kind == "parquet":
        raise UserError(f"{source}: not a valid Parquet file (no Parquet header); check the file or rename it to .csv")
    return False


def _read_parquet(source: str, path: Path, fmt: str) -> tuple[pd.DataFrame, str]:
    try:
        names = [str(c).strip() for c in pq.read_schema(path).names]
        repeated = sorted({c for c in names if names.count(c) > 1})
        if repeated:  # Arrow cannot even select a column then; which one is meant is the owner's call
            raise UserError(f"{source}: duplicate column name(s) {', '.join(repeated)}; rename or drop all but one")
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{source}: cannot read Parquet ({_first_line(exc)}); the file is damaged or truncated: "
                        "write or copy it again") from exc
    df = table.to_pandas()
    for field in table.schema:
        # pandas would turn an integer column with nulls into float64, which mangles long ids.
        if pa.types.is_integer(field.type) and table.column(field.name).null_count:
            df[field.name] = table.select([field.name]).to_pandas(types_mapper=_nullable_int)[field.name]
    df.columns = [str(c).strip() for c in df.columns]
    layout = fmt if fmt != "auto" else _detect_or_explain(source, df.columns)
    return df, layout


def _nullable_int(arrow_type: pa.DataType):
    return pd.Int64Dtype() if pa.types.is_integer(arrow_type) else None


def _read_csv(source: str, path: Path, fmt: str, head: bytes) -> tuple[pd.DataFrame, str]:
    options = {
        "sep": "\t" if _bare_name(source).endswith(".tsv") else ",",
        "compression": next((c for m, c in _MAGIC_COMPRESSION.items() if head.startswith(m)), None),
    }
    first = _read_csv_safely(source, path, header=None, nrows=1, dtype=str, keep_default_na=False, **options)
    if first.empty:
        raise UserError(f"{source}: file is empty; it needs a header row and at least one event")
    first_row = [str(v).strip() for v in first.iloc[0].tolist()]
    _refuse_other_text(source, first_row)

    if fmt == "auto":
        layout = detect_layout(first_row)
        headerless = layout is None and looks_like_taobao_row(first_row)
        if headerless:
            layout = "taobao"
        elif layout is None:
            _detect_or_explain(source, first_row)  # raises, before reading a file we cannot use
    else:
        layout = fmt
        # Taobao ships without a header; accept a copy that has one too.
        headerless = fmt == "taobao" and not set(first_row) & set(TAOBAO_COLUMNS)

    df = _read_csv_safely(source, path, header=None if headerless else 0, dtype=str, keep_default_na=True, **options)
    if headerless:
        if df.shape[1] != len(TAOBAO_COLUMNS):
            raise UserError(
                f"{source}: a header-less Taobao file needs {len(TAOBAO_COLUMNS)} columns "
                f"({','.join(TAOBAO_COLUMNS)}), found {df.shape[1]}"
            )
        df.columns = list(TAOBAO_COLUMNS)
    else:
        # pandas renames a repeated header to "price.1"; which of two prices is meant is the
        # file owner's call, not ours
        repeated = sorted({c for c in first_row if first_row.count(c) > 1})
        if repeated:
            raise UserError(f"{source}: duplicate column name(s) {', '.join(repeated)} in the header; "
                            "rename or drop all but one")
        df.columns = [str(c).strip() for c in df.columns]
    return df, layout


def _refuse_other_text(source: str, first_row: list[str]) -> None:
    """Text that is not CSV at all gets a message saying what it is, not "unrecognised layout"."""
    start = first_row[0].lstrip("\ufeff").lstrip() if first_row else ""
    if start[:1] == "<":
        raise UserError(f"{source}: HTML or XML, not CSV (a web or error page saved in place of the data?); "
                        "download the CSV itself")
    if start[:1] in ("{", "["):
        raise UserError(f"{source}: JSON, not CSV; convert it to CSV with a header row, or to Parquet")


def _read_csv_safely(source: str, path: Path, **kwargs) -> pd.DataFrame:
    try:
        if "nrows" not in kwargs:
            try:  # the multi-threaded parser; the C parser below is the reference and the fallback
                return pd.read_csv(path, engine="pyarrow", **kwargs)
            except (pa.ArrowException, ValueError):
                pass
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise UserError(f"{source}: file is empty; it needs a header row and at least one event") from exc
    except pd.errors.ParserError as exc:
        raise UserError(f"{source}: malformed CSV ({_first_line(exc)}); fix or quote that row") from exc
    except UnicodeDecodeError as exc:
        where = _first_non_utf8(path) if kwargs.get("compression") is None else None
        at = f" (line {where[0]}, byte {where[1]:#04x})" if where else ""
        raise UserError(f"{source}: not UTF-8 text{at}; save the file as UTF-8 CSV") from exc
    except PermissionError as exc:
        raise UserError(f"{source}: permission denied; make the file readable by this user") from exc
    except (EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile, lzma.LZMAError) as exc:
        raise UserError(f"{source}: a damaged or truncated compressed file ({_first_line(exc)}); "
                        "copy it again or pass it uncompressed") from exc
    except (OSError, ValueError, ImportError) as exc:  # e.g. a compression whose library is missing
        raise UserError(f"{source}: cannot read as CSV ({_first_line(exc)}); pass a CSV, CSV.gz or Parquet file") from exc


def _first_non_utf8(path: Path) -> tuple[int, int] | None:
    """(line number, byte value) of the first byte that is not UTF-8: the parser's own offset
    is into one of its read blocks, which tells a user nothing."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return lines + block[: exc.start].count(b"\n"), block[exc.start]
            lines += block.count(b"\n")
    return None


def _detect_or_explain(source: str, columns) -> str:
    layout = detect_layout(columns)
    if layout is not None:
        return layout
    found = _short_list(columns)
    header = str(columns[0]) if len(columns) == 1 else ""
    separator = next((sep for sep in (";", "\t", "|") if sep in header), None)
    if separator and any(c in header for c in REQUIRED_EVENT_COLUMNS):
        shown = "tab" if separator == "\t" else repr(separator)
        raise UserError(f"{source}: columns separated by {shown}, not commas; save it as comma-separated CSV"
                        " (or name a tab-separated file .tsv)")
    if set(columns) & (set(EVENT_DTYPES) - {"event_id"}):  # meant as contract data, something is missing
        missing = [c for c in REQUIRED_EVENT_COLUMNS if c not in columns]
        raise UserError(
            f"{source}: missing required column(s) {', '.join(missing)}; "
            f"events need {', '.join(REQUIRED_EVENT_COLUMNS)} (found: {found})"
        )
    raise UserError(
        f"{source}: unrecognised events layout (columns: {found}); use contract columns "
        f"{','.join(REQUIRED_EVENT_COLUMNS)} or pass the format: {', '.join(f for f in FORMATS if f != 'auto')}"
    )


def _check_required(source: str, columns, layout: str) -> None:
    adapter = ADAPTERS[layout]
    missing = [c for c in adapter.required if c not in columns]
    if missing:
        raise UserError(
            f"{source}: missing required column(s) {', '.join(missing)} for format {layout} "
            f"(expected {adapter.description}; found: {_short_list(columns)})"
        )


def _bare_name(source: str) -> str:
    name = source.lower()
    for ext in (".gz", ".bz2", ".zst", ".zip"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name


def _short_list(columns, limit: int = 12) -> str:
    cols = [str(c) for c in columns]
    text = ", ".join(cols[:limit])
    return text + (f", ... ({len(cols)} in all)" if len(cols) > limit else "") if cols else "none"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["FORMATS", "ingest", "is_s3"]
