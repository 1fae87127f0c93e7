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
