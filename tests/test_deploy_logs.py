"""Reading a deployment log as it grows: whole lines only, byte offsets exact."""

from __future__ import annotations

from pathlib import Path

from tristage.services.deploys import _new_lines


def test_new_lines_waits_for_the_newline_and_keeps_its_place_past_invalid_bytes(
    tmp_path: Path,
) -> None:
    log = tmp_path / "d.build.log"
    assert _new_lines(log, 0) == ([], 0)  # not written yet
    log.write_bytes(b"one \xff\xfe bytes\ntw")
    lines, pos = _new_lines(log, 0)
    assert lines == ["one \ufffd\ufffd bytes"] and pos == len(b"one \xff\xfe bytes\n")
    with log.open("ab") as fh:
        fh.write("o \u00e9\nthree\n".encode())
    lines, pos = _new_lines(log, pos)
    assert lines == ["two \u00e9", "three"] and pos == log.stat().st_size
    assert _new_lines(log, pos) == ([], pos)
