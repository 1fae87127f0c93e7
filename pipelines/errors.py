"""Errors that reach a user as one line, not a traceback."""


class UserError(Exception):
    """Bad input or configuration: the message says what to fix. The CLI prints it and exits 2."""


class ValidationFailed(UserError):
    """A Great Expectations suite failed; the message is the human summary."""


class ScoresNotFinite(UserError):
    """A detector gave NaN or infinite scores (a diverged network, a model fitted on degenerate
    features): raised before any score is written, since such a ranking means nothing."""


class TransientWarehouseError(Exception):
    """The warehouse is unreachable, busy or locked right now (connection refused, serialization
    failure, deadlock, lock timeout, a DuckDB file locked by another process): the same command
    may succeed later. Not a UserError, so schedulers retry it; the CLI prints it on one line and
    exits EXIT_TEMPFAIL."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h)


class OutputWriteError(OSError):
    """An output could not be written: the disk is full, a file size limit or quota was reached,
    the file system is read-only or the folder is not writable. Nothing half-written is left at
    the output's path and the previous file is unchanged. Not a UserError: once space is freed a
    retry can succeed, so schedulers retry it; the CLI prints it on one line and exits 74. An
    OSError still, for callers that catch those."""

    exit_code = 74  # EX_IOERR (sysexits.h)


def _write_problems() -> dict[int, tuple[str, str]]:
    import errno

    problems = {
        errno.ENOSPC: ("no space left on the device", "free space on that disk or point storage at a bigger one"),
        errno.EFBIG: ("file too large (the file system's limit or this process's file size limit, ulimit -f)",
                      "raise the limit or write to a file system that allows larger files"),
        errno.EROFS: ("the file system is read-only", "remount it read-write or point storage at a writable folder"),
        errno.EACCES: ("permission denied", "make the folder writable for this user or point storage elsewhere"),
        errno.EPERM: ("operation not permitted", "make the folder writable for this user or point storage elsewhere"),
    }
    if hasattr(errno, "EDQUOT"):
        problems[errno.EDQUOT] = ("disk quota exceeded", "free space within the quota or raise it")
    return problems


def output_write_error(path: str | None, exc: BaseException, unchanged: bool = False) -> OutputWriteError | None:
    """The one-line OutputWriteError for an OSError of a write to `path` (None: the error's own
    file name), or None when `exc` is not one of the "cannot write here" failures. `unchanged`:
    the writer knows the file at `path` is as it was (an atomic write), and the line says so."""
    errno_ = getattr(exc, "errno", None)
    problem = _write_problems().get(errno_) if isinstance(exc, OSError) else None
    if problem is None:
        return None
    where = path or getattr(exc, "filename", None) or "an output file"
    reason, fix = problem
    kept = f"; {where} is unchanged" if unchanged else ""
    return OutputWriteError(f"cannot write {where}: {reason}{kept}: {fix}")


_STRERRORS = {"No space left on device": "ENOSPC", "File too large": "EFBIG", "Disk quota exceeded": "EDQUOT",
              "Read-only file system": "EROFS"}


def write_failure(exc: BaseException) -> OutputWriteError | None:
    """What the CLI prints for an exception no step turned into one line, when it (or what
    caused it, or what it was raised while handling) is a write the system refused: an OSError
    of a write, shutil's gathered copy errors, or a library's own error that says so (DuckDB's
    'Could not write file "PATH": No space left on device'). None for anything else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _one_write_failure(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def _one_write_failure(exc: BaseException) -> OutputWriteError | None:
    import errno
    import re
    import shutil

    if isinstance(exc, OutputWriteError):
        return exc
    if isinstance(exc, shutil.Error):  # [(source, destination, "[Errno 28] ..."), ...]
        entries = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        for entry in entries:
            code = re.search(r"\[Errno (\d+)\]", str(entry[2])) if len(entry) == 3 else None
            if code:
                found = output_write_error(str(entry[1]), OSError(int(code.group(1)), str(entry[2])))
                if found is not None:
                    return found
        return None
    if isinstance(exc, OSError) and exc.errno is not None:
        return output_write_error(None, exc)
    text = str(exc)
    for strerror, name in _STRERRORS.items():
        if strerror in text and hasattr(errno, name):
            path = re.search(r'"([^"]+)"', text)
            return output_write_error(path.group(1) if path else None, OSError(getattr(errno, name), strerror))
    return None
