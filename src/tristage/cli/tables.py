"""Tables for a terminal: every cell literal text, some columns kept whole, the others folded.

A URL or an id that a user copies must never be cut with an ellipsis, so columns named in
`whole` keep their full width; the other columns fold onto more lines when the terminal is
narrow. When even that cannot fit, each row is printed as `column: value` lines instead.
Output that goes to a pipe or a file is not narrowed at all (unless `COLUMNS` is set).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

Cell = str | Text | None

# Columns whose values a user copies whole (matched on the header, case-insensitive).
WHOLE_BY_DEFAULT = ("url", "ingest url", "id", "deployment")
GAP = 2  # rich's padding between columns of a box-less table
FOLDED_MIN = 8  # the narrowest a folded column gets


def _text(cell: Cell) -> Text:
    if cell is None:
        return Text("")
    return cell if isinstance(cell, Text) else Text(cell)


def _width(text: Text) -> int:
    return max((cell_len(line) for line in text.plain.split("\n")), default=0)


def available_width(console: Console) -> int | None:
    """How wide the output may be: the terminal's width, or None (no limit) for a pipe."""
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console.width
    return None


def render_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    *,
    width: int | None,
    whole: Collection[str] = WHOLE_BY_DEFAULT,
) -> Table | list[Text]:
    """A table that fits `width` (None: any width), or the rows as `column: value` records."""
    cells = [[_text(c) for c in row] for row in rows]
    keep = [h.lower() in whole for h in headers]
    natural = [
        max([cell_len(h), *(_width(row[i]) for row in cells)]) for i, h in enumerate(headers)
    ]
    gaps = GAP * max(0, len(headers) - 1)
    if width is None or sum(natural) + gaps <= width:
        table = Table(
            *(Column(h, no_wrap=True) for h in headers),
            box=None,
            pad_edge=False,
            width=sum(natural) + gaps,
        )
    else:
        minimum = [n if k else min(n, FOLDED_MIN) for n, k in zip(natural, keep, strict=True)]
        if sum(minimum) + gaps > width:
            return _records(headers, cells)
        columns = [
            Column(h, no_wrap=True, min_width=n) if k else Column(h, overflow="fold", min_width=m)
            for h, n, k, m in zip(headers, natural, keep, minimum, strict=True)
        ]
        table = Table(*columns, box=None, pad_edge=False, width=width)
    for row in cells:
        table.add_row(*row)
    return table


def _records(headers: Sequence[str], cells: list[list[Text]]) -> list[Text]:
    label = max(cell_len(h) for h in headers)
    out: list[Text] = []
    for n, row in enumerate(cells):
        if n:
            out.append(Text(""))
        for h, value in zip(headers, row, strict=True):
            if not value.plain:
                continue
            line = Text()
            line.append(f"{h or '-':<{label}}  ", style="bold")
            line.append_text(value)
            out.append(line)
    return out


def print_table(
    console: Console,
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    *,
    whole: Collection[str] = WHOLE_BY_DEFAULT,
) -> None:
    """Print `rows` under `headers` (see the module's docstring)."""
    width = available_width(console)
    rendered = render_table(headers, rows, width=width, whole=whole)
    if isinstance(rendered, Table):
        if width is None:  # a pipe: as wide as the rows are (rich caps a print at its width)
            saved = console._width
            console.width = rendered.width or console.width
            try:
                console.print(rendered, crop=False)
            finally:
                console._width = saved
        else:
            console.print(rendered, crop=False)
    else:
        for line in rendered:
            console.print(line, soft_wrap=True)
