"""Errors that reach the user: one readable message, a hint, and what each face makes of it.

Every error class says, once, how it ends a command (`exit_code`), how the HTTP API
answers it (`http_status`) and the stable machine code it is known by (`code`, the
`error` field of the API's JSON). The CLI and the HTTP API read these attributes;
neither keeps a table of its own. A subclass defined elsewhere (a build failure, a
rule violation, a damaged backup) inherits them from its parent here.

    class                exit  HTTP  code            what it means
    TristageError         1    422   refused         a refusal: a rule, a failed build or step
    ├── UsageError        2    400   bad_request     bad usage: a malformed name, option, value
    ├── ConfigError       2    422   invalid_config  a configuration file with problems
    ├── NotFound          1    404   not_found       no such project, deployment, token, ...
    ├── Conflict          1    409   conflict        the current state does not allow it
    ├── Unauthorized      1    401   unauthorized    no credentials, or no active token matches
    ├── Forbidden         1    403   forbidden       a valid token whose role does not allow it
    ├── GitError          1    500   git_failed      a git command failed, or git is missing
    └── StoreError        1    500   store_failed    the platform's state store failed

Edges turn the errors of what they wrap (a git process, sqlite3) into these, with the
foreign error as `__cause__`; a message never carries a secret value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

EXIT_OK = 0
EXIT_FAILED = 1  # a check or lookup failed
EXIT_USAGE = 2  # bad usage or bad configuration


class TristageError(Exception):
    """An error with a message for humans and a hint on how to fix it."""

    exit_code: ClassVar[int] = EXIT_FAILED
    http_status: ClassVar[int] = 422
    code: ClassVar[str] = "refused"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(TristageError):
    exit_code = EXIT_USAGE
    http_status = 400
    code = "bad_request"


class NotFound(TristageError):
    http_status = 404
    code = "not_found"


class Conflict(TristageError):
    http_status = 409
    code = "conflict"


class Unauthorized(TristageError):
    """No credentials, or credentials that match no active token."""

    http_status = 401
    code = "unauthorized"


class Forbidden(TristageError):
    """A valid token whose role does not allow the action."""

    http_status = 403
    code = "forbidden"


class GitError(TristageError):
    """A git command failed (its stderr is in the message), or git could not be run."""

    http_status = 500
    code = "git_failed"


class StoreError(TristageError):
    """The platform's state store refused or failed a statement (locked, full, corrupt)."""

    http_status = 500
    code = "store_failed"


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
    code = "invalid_config"

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        n = len(problems)
        super().__init__(
            f"{source}: {n} problem{'s' if n != 1 else ''}\n{lines}",
            None,
        )
