"""Reading and writing at the edges, on fsspec: local paths, s3:// and any other fsspec URI.

Every function takes a local path (str or PathLike) or a URI and goes through one code path,
`fsspec.core.url_to_fs`; the only local/remote split is where atomicity needs it:

* local writes go to a temporary file beside the target and are renamed into place, so a killed
  or failing writer leaves the previous good file untouched;
* object-store writes are one PUT (or one multipart upload completed at the end), which the store
  makes visible atomically per object; a directory is published file by file with `meta.json`
  last, so readers treat a directory without `meta.json` as incomplete.

S3 configuration comes from boto's usual environment (AWS_ENDPOINT_URL for MinIO or a test
server, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_PROFILE...).
s3fs/aiobotocore honour AWS_ENDPOINT_URL on their own, but fsspec caches filesystem instances by
their constructor arguments, so the endpoint is also passed explicitly (`_storage_options`) to
make a changed endpoint give a fresh client instead of a cached one pointing at the old server.

User mistakes (missing file or bucket, bad URI, denied access, no credentials) raise
pipelines.errors.UserError with a one-line message that starts with the URI; an object store that
cannot be reached or says "try again" (refused, reset, timeout, throttling, 5xx) raises
TransientStorageError with the same kind of message, which schedulers retry. A local write the
system refuses (disk full, file size limit or quota, read-only or unwritable folder) raises
pipelines.errors.OutputWriteError, one line naming the file and the fix; the file is unchanged.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from pipelines.errors import TransientWarehouseError, UserError, output_write_error

log = logging.getLogger(__name__)

# The file whose presence marks a published directory as complete (uploaded last by put_dir).
COMPLETE_MARKER = "meta.json"

_STORE_NAMES = {"s3": "S3", "s3a": "S3", "gs": "GCS", "gcs": "GCS", "az": "Azure", "abfs": "Azure", "abfss": "Azure"}
_BUCKET_PROTOCOLS = set(_STORE_NAMES)  # URIs of these protocols start with a bucket/container name


# --- URIs and filesystems -------------------------------------------------------------------------


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith(("s3://", "s3a://"))


def is_local(uri: str | os.PathLike) -> bool:
    """Whether `uri` is on the local disk: a plain path or a file:// URI."""
    return _local_target(uri) is not None


def _str(uri: str | os.PathLike) -> str:
    return os.fspath(uri) if not isinstance(uri, str) else uri


def _protocol(uri: str) -> str | None:
    """The (innermost) protocol of `uri`, or None for a plain local path."""
    from fsspec.core import split_protocol

    return split_protocol(uri.split("::")[-1])[0]


def _is_uri(uri: str) -> bool:
    return "::" in uri or _protocol(uri) is not None


def _storage_options(uri: str) -> dict[str, Any]:
    """Constructor options per protocol in `uri` (the one place S3 configuration is read)."""
    from fsspec.core import split_protocol

    options: dict[str, Any] = {}
    for bit in uri.split("::"):
        protocol = split_protocol(bit)[0] or bit
        if protocol in ("s3", "s3a"):
            opts: dict[str, Any] = {"use_listings_cache": False}  # see other writers' objects at once
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            ignored = os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true"
            if endpoint and not ignored:
                opts["client_kwargs"] = {"endpoint_url": endpoint}
            options[protocol] = opts
    return options


def _fs(uri: str | os.PathLike):
    """(filesystem, path inside it) for a local path or URI; UserError for a URI fsspec cannot open."""
    from fsspec.core import url_to_fs

    text = _str(uri)
    if not text:
        raise UserError("empty path: give a local path or a URI like s3://bucket/key")
    try:
        return url_to_fs(text, **_storage_options(text))
    except ImportError as exc:
        raise UserError(f"{text}: cannot open this URI: {_one_line(exc)}") from exc
    except ValueError as exc:  # "Protocol not known: ..."
        raise UserError(f"{text}: not a path or supported URI ({_one_line(exc)})") from exc


def _is_local_fs(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _local_target(uri: str | os.PathLike) -> Path | None:
    """The local Path for a plain path or file:// URI, else None (an object store or other remote)."""
    text = _str(uri)
    if not _is_uri(text):
        return Path(text)
    fs, path = _fs(text)
    return Path(path) if _is_local_fs(fs) else None


def _store(uri: str) -> str:
    protocol = _protocol(uri)
    return _STORE_NAMES.get(protocol or "", protocol or "local disk")


def _require_key(uri: str) -> None:
    """A single-object URI on a bucket store needs a bucket and a key."""
    protocol = _protocol(uri)
    if protocol not in _BUCKET_PROTOCOLS:
        return
    bucket, _, key = uri.split("::")[-1].split("://", 1)[1].partition("/")
    if not bucket or not key.strip("/"):
        example = f"{protocol}://bucket/path/events.parquet"
        name = "an S3" if protocol in ("s3", "s3a") else f"a {protocol}://"
        raise UserError(f"{uri}: {name} URI needs a bucket and a key, like {example}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TransientStorageError(TransientWarehouseError):
    """The object store could not be reached or answered "try again" (connection refused or
    reset, a timeout, throttling, a 5xx): the same call may succeed later. A subclass of the
    warehouse's transient error, not a UserError, so the CLI prints one line and exits 75 and
    Airflow retries the task with back-off, as for an unreachable database."""


# S3 error codes that say "not now" rather than "not this"
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException",
                    "RequestLimitExceeded", "InternalError", "ServiceUnavailable", "ServiceUnavailableException"}


def _is_transient(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it: s3fs turns botocore's errors into OSErrors) is a failure
    worth retrying as it is, as opposed to a missing bucket, denied access or bad credentials."""
    unreachable: list[type[BaseException]] = [ConnectionError, TimeoutError]  # refused, reset, timed out
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError, HTTPClientError

        unreachable += [BotoConnectionError, HTTPClientError]
    except ImportError:  # pragma: no cover - botocore comes with s3fs
        pass
    try:
        import aiohttp

        unreachable.append(aiohttp.ClientConnectionError)
    except ImportError:  # pragma: no cover - aiohttp comes with s3fs
        pass
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, tuple(unreachable)):
            return True
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            code = str((response.get("Error") or {}).get("Code", ""))
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
            if code in _TRANSIENT_CODES or status == 429 or int(status) >= 500:
                return True
        current = current.__cause__ or current.__context__
    return False


def _remote_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    except ImportError:  # pragma: no cover - botocore comes with s3fs
        pass
    try:
        import aiohttp

        errors.append(aiohttp.ClientError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


@contextlib.contextmanager
def _user_errors(uri: str, action: str) -> Iterator[None]:
    """Turn a missing file or a storage failure inside the block into a one-line UserError.

    `action` is the verb for remote failures: "read", "download", "upload", "list", "check", "delete".
    """
    remote = _is_uri(uri) and _local_target(uri) is None
    try:
        yield
    except UserError:
        raise
    except FileNotFoundError as exc:
        if remote and action == "download":
            raise UserError(f"{uri}: cannot download from {_store(uri)} (file not found)") from exc
        if remote and action == "upload":  # s3fs says FileNotFoundError for a missing bucket
            raise UserError(f"{uri}: cannot upload to {_store(uri)} ({_one_line(exc)})") from exc
        raise UserError(f"{uri}: file not found") from exc
    except IsADirectoryError as exc:
        raise UserError(f"{uri}: is a directory, not a file") from exc
    except _remote_errors() as exc:
        if not remote:
            raise
        preposition = {"upload": "to", "download": "from", "read": "from"}.get(action, "on")
        message = f"{uri}: cannot {action} {preposition} {_store(uri)} ({_one_line(exc)})"
        if _is_transient(exc):
            raise TransientStorageError(message) from exc
        raise UserError(message) from exc


def join(base: str | os.PathLike, *parts: str | os.PathLike) -> str:
    """`base` joined with `parts`: "/" for URIs (s3://b/p + a -> s3://b/p/a), os.path.join for local paths."""
    text = _str(base)
    bits = [_str(p) for p in parts]
    if not _is_uri(text):
        return os.path.join(text, *bits)
    out = text
    for bit in bits:
        bit = bit.strip("/")
        if bit:
            out = out if out.endswith("/") else out + "/"
            out += bit
    return out


# --- local atomic helpers -------------------------------------------------------------------------


def _temp_prefix(target: Path) -> str:
    """`.<name>.<host>_<pid>.`: hidden (listdir and readers skip it), and saying which process on
    which machine writes it, so that a later writer can tell a leftover from a live write."""
    return f".{target.name}.{_HOST}_{os.getpid()}."


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _sweep_stale(target: Path) -> None:
    """Remove the temporary files and folders of `target` that a killed writer left (SIGKILL,
    OOM, power loss skip the clean-up): those of this machine whose process is gone. A live
    writer's, or another machine's on a shared disk, are left alone."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.{re.escape(_HOST)}_(\d+)\.")
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        found = pattern.match(entry.name)
        if not found or _alive(int(found.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            log.debug("removed %s, left by a writer that is gone", entry)
        except FileNotFoundError:  # another writer swept it first
            continue


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    A killed or failing writer leaves the previous good file untouched. Local paths only. The
    temporary file is hidden; one a killed writer left is removed by the next write of `path`.
    A full disk or an unwritable folder raises OutputWriteError (one line, naming `path`).
    """
    target = Path(path)
    with _write_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(target)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=suffix or ".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            os.replace(tmp_path, target)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


@contextlib.contextmanager
def _write_errors(target: str | os.PathLike) -> Iterator[None]:
    """A full disk, a file size limit or quota, a read-only or unwritable folder while writing
    `target`: one-line OutputWriteError naming it and the fix (the temporary file is removed by
    the caller's clean-up, so nothing half-written is left)."""
    try:
        yield
    except OSError as exc:
        error = output_write_error(_str(target), exc, unchanged=True)
        if error is None:
            raise
        raise error from exc


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `path`; swap it into place if the block succeeds.

    Local paths only (build locally, then publish to an object store with put_dir).
    """
    local = _local_target(path)
    if local is None:
        raise UserError(f"{_str(path)}: atomic_dir works on local directories; build locally and publish with put_dir")
    target = local
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), dir=target.parent))
    old = target.parent / f".{target.name}.old"
    try:
        yield tmp
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)


# --- files ----------------------------------------------------------------------------------------


def exists(uri: str | os.PathLike) -> bool:
    """Whether a file or directory (a non-empty prefix on object stores) exists at `uri`."""
    text = _str(uri)
    fs, path = _fs(text)
    with _user_errors(text, "check"):
        return bool(fs.exists(path))


def read_bytes(uri: str | os.PathLike) -> bytes:
    text = _str(uri)
    _require_key(text)
    fs, path = _fs(text)
    with _user_errors(text, "read"):
        return fs.cat_file(path)


def sha256(uri: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks (never the whole file in memory)."""
    import hashlib

    text = _str(uri)
    _require_key(text)
    fs, path = _fs(text)
    with _user_errors(text, "read"), fs.open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_bytes(data: bytes, uri: str | os.PathLike) -> None:
    """Write `data` atomically: local temp file + rename, or one PUT on an object store."""
    text = _str(uri)
    local = _local_target(text)
    if local is not None:
        with atomic_path(local) as tmp:
            tmp.write_bytes(data)
        return
    _require_key(text)
    fs, path = _fs(text)
    with _user_errors(text, "upload"):
        fs.pipe_file(path, bytes(data))  # one PUT: atomic per object


class WriteConflict(TransientStorageError):
    """A conditional write found the object changed since it was read (another writer got there
    first); nothing was written. Transient: rerunning the step decides again against the new
    object, which is what a scheduler's retry does."""


def _s3_key(uri: str) -> tuple[Any, str, str]:
    """(s3fs filesystem, bucket, key) for a single-object s3:// URI; UserError for anything else."""
    if not is_s3(uri):
        raise UserError(f"{uri}: conditional reads and writes need an s3:// URI")
    _require_key(uri)
    fs, path = _fs(uri)
    bucket, key, _ = fs.split_path(path)
    return fs, bucket, key


def read_bytes_tagged(uri: str | os.PathLike) -> tuple[bytes, str] | None:
    """The object at an s3:// `uri` and its ETag from the same GET, or None when there is none.

    Body and tag come from one response, so the tag names exactly the bytes returned: a later
    write_bytes_if(..., tag) replaces the object only if it is still what the caller decided on.
    """
    from fsspec.asyn import sync

    text = _str(uri)
    fs, bucket, key = _s3_key(text)

    async def get() -> tuple[bytes, str] | None:
        try:
            resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        try:
            return await resp["Body"].read(), resp["ETag"]
        finally:
            resp["Body"].close()

    with _user_errors(text, "read"):
        return sync(fs.loop, get)


def _precondition_failed(exc: BaseException) -> bool:
    """Whether S3 refused a conditional PUT: 412 PreconditionFailed, or 409 ConditionalRequestConflict
    (AWS's answer while another conditional write of the key is in flight). s3fs turns both into
    OSErrors and keeps botocore's error as the cause."""
    if isinstance(exc, FileExistsError):  # s3fs's translation of a failed If-None-Match
        return True
    cause = getattr(exc, "__cause__", None)
    response = getattr(cause, "response", None) or getattr(exc, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code", ""))
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409") or status in (409, 412)


def write_bytes_if(data: bytes, uri: str | os.PathLike, expected_tag: str | None) -> None:
    """Replace the object at an s3:// `uri` only if it is unchanged since it was read.

    `expected_tag` is the ETag that read_bytes_tagged returned (PUT with If-Match), or None when the
    caller saw no object (PUT with If-None-Match: *, so a concurrent creator is not overwritten).
    Raises WriteConflict, having written nothing, when S3 finds the object changed.
    """
    from fsspec.asyn import sync

    text = _str(uri)
    fs, bucket, key = _s3_key(text)
    condition = {"IfNoneMatch": "*"} if expected_tag is None else {"IfMatch": expected_tag}

    async def put() -> None:
        await fs._call_s3("put_object", Bucket=bucket, Key=key, Body=bytes(data), **condition)

    with _user_errors(text, "upload"):
        try:
            sync(fs.loop, put)
        except _remote_errors() as exc:
            if _precondition_failed(exc):
                seen = "no object" if expected_tag is None else f"ETag {expected_tag}"
                raise WriteConflict(f"{text}: changed on {_store(text)} since it was read ({seen}); "
                                    f"another writer replaced it first, nothing was written") from exc
            raise
        finally:
            fs.invalidate_cache(f"{bucket}/{key}")


def read_text(uri: str | os.PathLike) -> str:
    return read_bytes(uri).decode("utf-8")


def write_text(text: str, uri: str | os.PathLike) -> None:
    write_bytes(text.encode("utf-8"), uri)


def write_json(obj: Any, uri: str | os.PathLike) -> None:
    """`obj` as JSON (indent=2, sorted keys, str() for other types, trailing newline), atomically.

    Serialises first: an unserialisable object raises before anything is written.
    """
    write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", uri)


def read_json(uri: str | os.PathLike) -> Any:
    text = read_text(uri)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{_str(uri)}: not valid JSON ({exc})") from exc


def write_parquet(df: pd.DataFrame, uri: str | os.PathLike, while_writing: Callable[[], Any] | None = None) -> Any:
    """`df` as Parquet (no index), atomically.

    On an object store the file is written to a local temporary file first and then uploaded
    (one PUT, or a multipart upload completed only at the end), so the frame's bytes are never
    held in memory twice and a failing writer publishes nothing.

    `while_writing` (e.g. the dataset's validation) runs in this thread while the file is
    encoded in another, and the file takes its place only once it has returned: a check that
    raises leaves the previous file, and nothing new, in place. Returns what it returns. The
    two overlap because Arrow encodes without the GIL: 1M users' features (2.7 s to write,
    2 s to check) took the sum of both one after the other.
    """
    text = _str(uri)
    local = _local_target(text)
    if local is not None:
        with atomic_path(local, ".parquet") as tmp:
            return _write_while(df, tmp, while_writing)
    _require_key(text)
    fs, path = _fs(text)
    with tempfile.TemporaryDirectory(prefix="pipelines-io-") as tmpdir:
        tmp = Path(tmpdir) / "upload.parquet"
        with _write_errors(tmp):  # the local disk of the temporary folder is full
            outcome = _write_while(df, tmp, while_writing)
        with _user_errors(text, "upload"):
            fs.put_file(str(tmp), path)
    return outcome


def _write_while(df: pd.DataFrame, path: Path, while_writing: Callable[[], Any] | None) -> Any:
    if while_writing is None:
        df.to_parquet(path, index=False)
        return None
    # leaving the pool waits for the write, also when the check raises: the caller removes or
    # moves a complete file, never one still being written
    with ThreadPoolExecutor(1, thread_name_prefix="write-parquet") as pool:
        written = pool.submit(df.to_parquet, path, index=False)
        outcome = while_writing()
    written.result()  # a failed write raises here, after a check that passed
    return outcome


def read_parquet(uri: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file as a DataFrame (only `columns` when given; remote reads fetch byte ranges)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = _str(uri)
    _require_key(text)
    fs, path = _fs(text)
    try:
        with _user_errors(text, "read"):
            if _is_local_fs(fs):
                # pre_buffer (coalesced reads ahead, pyarrow's default, made for object stores):
                # pq.read_table of the local 1M-user, 186-column features file took 2.8-6.1 s
                # with it (1.7-5.0 s of it kernel time), 1.1-1.3 s without (2 cores, 3 runs each)
                import pyarrow.dataset as ds

                pool = _table_pool()
                scan = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False))
                table = ds.dataset(path, format=scan).to_table(columns=columns, memory_pool=pool)
                return _to_pandas(table, pool)
            with fs.open(path, "rb") as fh:
                return _to_pandas(pq.read_table(fh, columns=columns))
    except pa.ArrowException as exc:
        raise UserError(f"{text}: cannot read as Parquet ({_one_line(exc)})") from exc


def _to_pandas(table, pool=None) -> pd.DataFrame:
    # each Arrow column is freed once pandas has copied it (split_blocks would save the copy,
    # but its zero-copy blocks are read-only: any later assignment into the frame would fail)
    return table.to_pandas(self_destruct=True, memory_pool=pool)


def _table_pool():
    """The Arrow memory pool a whole local table is read into: jemalloc (the system allocator
    where pyarrow is built without it), not pyarrow's default mimalloc, under which reading the
    1M-user, 186-column features file into pandas took 8.7-11.6 CPU s, nearly all of it kernel
    time (page faults of its fresh memory), against 3.3-3.5 with jemalloc (2 cores). Its decay
    is 0: freed pages go back at once, where jemalloc's default keeps them for seconds, and the
    train step of `pipelines run` at 1M users then peaked at 3.82 GiB, not 3.35 (2.37 with 0)."""
    import pyarrow as pa

    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.system_memory_pool()
    pa.jemalloc_set_decay_ms(0)
    return pool


def detect_format(uri: str) -> str:
    name = str(uri).lower()
    for ext in (".gz", ".bz2", ".zst", ".zip"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    raise UserError(f"{uri}: unknown file type; use a .csv or .parquet file")


@contextlib.contextmanager
def local_copy(uri: str | os.PathLike) -> Iterator[Path]:
    """A local path for `uri`: the file itself when local, else a temporary download (removed after)."""
    text = _str(uri)
    local = _local_target(text)
    if local is not None:
        if not local.exists():
            raise UserError(f"{text}: file not found")
        yield local
        return
    _require_key(text)
    fs, path = _fs(text)
    with tempfile.TemporaryDirectory(prefix="pipelines-io-") as tmpdir:
        dest = Path(tmpdir) / (path.rstrip("/").rsplit("/", 1)[-1] or "download")
        with _user_errors(text, "download"):
            fs.get_file(path, str(dest))
            if not dest.is_file():  # fsspec may "download" a prefix as an empty folder
                raise FileNotFoundError(path)
        yield dest


# --- directories ----------------------------------------------------------------------------------


def listdir(uri: str | os.PathLike) -> list[str]:
    """Sorted names (not paths) in the folder `uri`; [] when it does not exist.

    Hidden names (starting with "."; this module's temporary files and folders) are left out,
    so a directory that put_dir or atomic_dir is still building never shows up.
    """
    text = _str(uri)
    fs, path = _fs(text)
    with _user_errors(text, "list"):
        try:
            entries = fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
    stripped = path.rstrip("/")
    if len(entries) == 1 and entries[0]["type"] != "directory" and entries[0]["name"].rstrip("/") == stripped:
        raise UserError(f"{text}: is a file, not a directory")
    names = {e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["name"].rstrip("/") != stripped}
    return sorted(n for n in names if n and not n.startswith("."))


def remove(uri: str | os.PathLike, recursive: bool = False) -> None:
    """Delete the file (or with recursive=True the directory tree) at `uri`; no error when missing.

    A directory without recursive=True is a UserError, locally and on object stores alike.
    """
    text = _str(uri)
    fs, path = _fs(text)
    with _user_errors(text, "delete"):
        try:
            if not recursive and fs.isdir(path):
                raise UserError(f"{text}: is a directory; pass recursive=True to delete it")
            fs.rm(path, recursive=recursive)
        except FileNotFoundError:
            return


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def put_dir(local_dir: str | os.PathLike, uri: str | os.PathLike) -> None:
    """Publish the finished local directory `local_dir` as `uri`; never overwrites a published one.

    Local target: copy to a temporary folder beside the target, then rename it into place (atomic).
    If the target already exists (another process published the same content-addressed directory
    first), theirs is kept and ours discarded: no error, no mix of the two.
    Object store: upload every file, then the top-level `meta.json` last, so a reader that sees
    meta.json sees a complete directory. If meta.json is already there, nothing is uploaded.
    """
    source = Path(local_dir)
    text = _str(uri)
    if not source.is_dir():
        raise UserError(f"{local_dir}: directory not found")
    files = _files_under(source)
    local = _local_target(text)
    if local is not None:
        _put_dir_local(source, local, text)
        return
    fs, path = _fs(text)
    root = path.rstrip("/")
    with _user_errors(text, "upload"):
        marker = source / COMPLETE_MARKER
        if marker.is_file() and fs.exists(f"{root}/{COMPLETE_MARKER}"):
            log.debug("%s is already published (meta.json present); not uploading again", text)
            return
        first = [p for p in files if p != marker]
        if first:
            fs.put([str(p) for p in first], [f"{root}/{p.relative_to(source).as_posix()}" for p in first])
        if marker.is_file():
            fs.put_file(str(marker), f"{root}/{COMPLETE_MARKER}")


def _put_dir_local(source: Path, target: Path, text: str) -> None:
    if target.exists():
        log.debug("%s already exists; keeping it", text)
        return
    with _write_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(target)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), dir=target.parent))
        try:
            try:
                shutil.copytree(source, tmp, dirs_exist_ok=True)
            except shutil.Error as exc:  # copytree gathers each file's error: the first one's OSError
                first = exc.args[0][0] if exc.args and exc.args[0] else None
                raise OSError(*_errno_of(first)) from exc
            try:
                os.rename(tmp, target)  # fails on a non-empty existing directory: never a mix
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and target.is_dir():
                    log.debug("%s was published by another process first; keeping theirs", text)
                    return
                raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)


def _errno_of(failure: Any) -> tuple:
    """(errno, message) from one of shutil.Error's (source, destination, reason) entries."""
    reason = str(failure[2]) if failure else "copy failed"
    found = re.search(r"\[Errno (\d+)\]", reason)
    return (int(found.group(1)), reason) if found else (0, reason)


@contextlib.contextmanager
def get_dir(uri: str | os.PathLike) -> Iterator[Path]:
    """A local Path holding the directory `uri`: the folder itself when local, else a temporary download."""
    text = _str(uri)
    local = _local_target(text)
    if local is not None:
        if not local.is_dir():
            raise UserError(f"{text}: directory not found")
        yield local
        return
    fs, path = _fs(text)
    root = path.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="pipelines-io-") as tmpdir:
        dest = Path(tmpdir) / (root.rsplit("/", 1)[-1] or "download")
        with _user_errors(text, "download"):
            remote = [f for f in fs.find(root) if f.startswith(root + "/")]
            if not remote:
                raise UserError(f"{text}: directory not found")
            local_files = [dest / f[len(root) + 1 :] for f in remote]
            for lf in local_files:
                lf.parent.mkdir(parents=True, exist_ok=True)
            fs.get(remote, [str(lf) for lf in local_files])
        yield dest


# --- cross-process critical sections ----------------------------------------------------------------


@contextlib.contextmanager
def lock(uri: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive cross-process lock for a short read-decide-write of `uri` (e.g. champion.json).

    Local paths: an exclusive fcntl.flock on `<uri>.lock` beside the file (created if needed, never
    removed; the lock is released when the block exits or the process dies). POSIX only.

    Object stores: a no-op. S3 and friends have no locks; plain writes of the same key get
    last-writer-wins (each PUT is atomic, so a reader sees one whole version, but a read-decide-
    write by two processes at once can lose one decision). A read-decide-write that must not lose
    one reads with read_bytes_tagged and writes with write_bytes_if (S3's conditional PUT), as the
    registry does for champion.json.
    """
    text = _str(uri)
    local = _local_target(text)
    if local is None:
        log.debug("lock(%s): object stores have no locks; concurrent writers get last-writer-wins", text)
        yield
        return
    import fcntl

    lock_path = local.with_name(local.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


__all__ = [
    "COMPLETE_MARKER",
    "TransientStorageError",
    "WriteConflict",
    "atomic_dir",
    "atomic_path",
    "detect_format",
    "exists",
    "get_dir",
    "is_local",
    "is_s3",
    "join",
    "listdir",
    "local_copy",
    "lock",
    "put_dir",
    "read_bytes",
    "read_bytes_tagged",
    "read_json",
    "read_parquet",
    "read_text",
    "remove",
    "write_bytes",
    "write_bytes_if",
    "write_json",
    "write_parquet",
    "write_text",
]
