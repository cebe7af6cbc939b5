"""Errors that stop the daemon at start-up with one line a person can act on."""


class StartupError(Exception):
    """The daemon cannot start; the message says what to fix (no traceback is shown)."""


class CodedError(Exception):
    """
    An error with a stable machine-readable C{code} (what an API answer carries) and a
    C{message} for people: the one shape the components' error types share.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
