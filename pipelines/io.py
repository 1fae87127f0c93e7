"""Reading and writing at the edges: local paths or s3:// URIs, every write atomic."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from pipelines.errors import UserError


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise UserError(f"{uri}: an S3 URI needs a bucket and a key, like s3://bucket/path/events.parquet")
    return bucket, key


def s3_client():
    import boto3  # boto3 honours AWS_ENDPOINT_URL, so tests and MinIO need no code change

    return boto3.client("s3")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    A killed or failing writer leaves the previous good file untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    if is_s3(path):
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        bucket, key = _split_s3(str(path))
        s3_client().put_object(Bucket=bucket, Key=key, Body=buf.getvalue())  # S3 PUT is atomic per object
        return
    with atomic_path(path, ".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


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
    """A local path for `uri`: the path itself, or a temporary download of an s3:// object."""
    if not is_s3(uri):
        path = Path(uri)
        if not path.exists():
            raise UserError(f"{uri}: file not found")
        yield path
        return
    bucket, key = _split_s3(str(uri))
    from botocore.exceptions import BotoCoreError, ClientError

    with tempfile.TemporaryDirectory() as tmpdir:
        dest = Path(tmpdir) / Path(key).name
        try:
            s3_client().download_file(bucket, key, str(dest))
        except (ClientError, BotoCoreError) as exc:
            raise UserError(f"{uri}: cannot download from S3 ({exc})") from exc
        yield dest


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `path`; swap it into place if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
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
