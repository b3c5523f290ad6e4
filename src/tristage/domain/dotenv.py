"""Dotenv text: rendering values that python-dotenv reads back identically, and parsing.

Pure (text in, text out). Rendering rules:

- a value made only of ``A-Z a-z 0-9 _ - . / : @ + , %`` is written bare;
- anything else is double-quoted, with ``\\``, ``"``, newline, carriage return and
  tab escaped (python-dotenv decodes exactly these escapes in double quotes), so
  ``#``, ``=``, quotes, spaces, newlines and any unicode survive a round trip.

python-dotenv expands ``${NAME}`` in every value (``interpolate=True``, its default)
and offers no escape for it: `interpolated` names the values that contain ``${``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from ..errors import UsageError
from .config import VAR_RE

_BARE = re.compile(r"[A-Za-z0-9_\-./:@+,%]+")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPE_RE = re.compile(r'[\\"\n\r\t]')


def quote(value: str) -> str:
    if _BARE.fullmatch(value):
        return value
    return '"' + _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], value) + '"'


def render(values: Mapping[str, str], header: str | None = None) -> str:
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    for name, value in values.items():
        if not VAR_RE.match(name):
            raise UsageError(f"{name!r} is not a variable name (letters, digits, '_')")
        lines.append(f"{name}={quote(value)}")
    return "\n".join(lines) + "\n"


def interpolated(values: Mapping[str, str]) -> list[str]:
    """Names whose value a loader that expands ``${NAME}`` would change."""
    return [n for n, v in values.items() if "${" in v]


def parse(text: str, source: str = ".env") -> dict[str, str]:
    """The variables of a dotenv text, verbatim (no ``${}`` expansion).

    Raises `UsageError` naming every line that is not ``NAME=value`` and every
    name that is not a variable name; nothing is returned half-parsed.
    """
    problems: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            problems.append(f"line {line}: not NAME=value")
        elif binding.key is not None and binding.value is None:
            problems.append(f"line {line}: {binding.key!r} has no '=' and no value")
        elif binding.key is not None and not VAR_RE.match(binding.key):
            problems.append(f"line {line}: {binding.key!r} is not a variable name")
    if problems:
        raise UsageError(
            f"{source}: {len(problems)} problem{'s' if len(problems) != 1 else ''}: "
            + "; ".join(problems),
            "each line is NAME=value, NAME='value' or NAME=\"value\" (# starts a comment)",
        )
    raw = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {k: v for k, v in raw.items() if v is not None}
