"""The one exception class for problems a user can fix (bad input, missing tool, design too big)."""

__all__ = ["LowbitError"]


class LowbitError(Exception):
    """A problem with the user's input or environment, reported as one line, never a traceback.

    The message names the problem; ``hint`` says what to do about it. The CLI prints
    ``lowbit: error: <message> (<hint>)`` and exits with status 2.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self):
        return f"{self.message} ({self.hint})" if self.hint else self.message
