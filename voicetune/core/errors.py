"""The one exception type a person sees: its message says what went wrong and how to fix it."""

from __future__ import annotations


class VoicetuneError(Exception):
    """An error with a message a person can act on (one line: what, where, and the fix).

    Raised anywhere in the package, caught once at the CLI edge, printed without a traceback.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class MissingArtifactError(VoicetuneError):
    """An earlier step's artifact is absent: the message names the script to run first."""

    def __init__(self, what: str, path: object, run_first: str) -> None:
        super().__init__(f"{what} not found at {path}: run {run_first} first", exit_code=2)
