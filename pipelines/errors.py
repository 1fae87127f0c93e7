"""Errors that reach a user as one line, not a traceback."""


class UserError(Exception):
    """Bad input or configuration: the message says what to fix. The CLI prints it and exits 2."""


class ValidationFailed(UserError):
    """A Great Expectations suite failed; the message is the human summary."""
