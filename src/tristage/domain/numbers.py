"""Numbers read from text that users and peers send (query strings, headers, files)."""

from __future__ import annotations


def ascii_int(text: str) -> int | None:
    """`text` as a non-negative integer if it is ASCII digits only, else None.

    `str.isdigit()` accepts digits `int()` refuses ('²') and `int()` accepts what a header
    or a query must not carry (' 7', '+7', '7_0', Arabic-Indic digits), so neither is used alone.
    """
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text)
