"""Errors that stop the daemon at start-up with one line a person can act on."""


class StartupError(Exception):
    """The daemon cannot start; the message says what to fix (no traceback is shown)."""
