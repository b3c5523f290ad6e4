"""Errors that reach the user: one readable message, a hint, an exit code."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1  # a check or lookup failed
EXIT_USAGE = 2  # bad usage or bad configuration


class TristageError(Exception):
    """An error with a message for humans and a hint on how to fix it."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(TristageError):
    exit_code = EXIT_USAGE


class NotFound(TristageError):
    exit_code = EXIT_FAILED


class Conflict(TristageError):
    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class Problem:
    """One problem in a configuration file, located by its key path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(TristageError):
    """A configuration file with one or more problems; nothing starts."""

    exit_code = EXIT_USAGE

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        n = len(problems)
        super().__init__(
            f"{source}: {n} problem{'s' if n != 1 else ''}\n{lines}",
            None,
        )
