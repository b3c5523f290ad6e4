"""Release logs: which process wrote a line, filters by process and age, rotation by
size (several pumps on one log), retention by age, probe lines left out."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tristage.domain.logs import keep, parse_since, process_of
from tristage.edges.runtime.base import PROBE_MARK, probe_path
from tristage.edges.runtime.logpump import Lines, LogFile
from tristage.errors import UsageError
from tristage.services.log_retention import sweep


def test_lines_name_their_process_and_filter_by_process_and_time() -> None:
    web = "2026-01-01T03:00:00 GET / 200"
    worker = "2026-01-01T03:00:05 [worker.1] sent 3 emails"
    assert process_of(web) == "web.1" and process_of(worker) == "worker.1"
    assert process_of("no stamp") is None
    assert keep(worker, "worker.1", None) and not keep(web, "worker.1", None)
    assert keep(web, "web.1", None) and not keep(worker, "web.1", None)
    assert keep(worker, None, "2026-01-01T03:00:01") and not keep(web, None, "2026-01-01T03:00:01")
    assert parse_since("10m") == 600 and parse_since("2h") == 7200 and parse_since("1.5s") == 1.5
    with pytest.raises(UsageError, match="not a duration"):
        parse_since("ten minutes")


def test_probe_lines_are_left_out_of_the_log(tmp_path: Path) -> None:
    assert probe_path("/health") == f"/health?{PROBE_MARK}"
    assert probe_path("/up?full=1") == f"/up?full=1&{PROBE_MARK}"
    log = LogFile(tmp_path / "r.log")
    lines = Lines(log, (PROBE_MARK,))
    lines.add(f'127.0.0.1 "GET /health?{PROBE_MARK} HTTP/1.1" 200\nGET /pay 200\n')
    text = (tmp_path / "r.log").read_text()
    assert "GET /pay" in text and PROBE_MARK not in text


def test_a_log_is_rotated_by_size_and_two_writers_follow_the_rotation(tmp_path: Path) -> None:
    path = tmp_path / "d.runtime.log"
    a = LogFile(path, "", max_bytes=4096, keep=3)
    b = LogFile(path, "[worker.1] ", max_bytes=4096, keep=3)
    for i in range(2000):
        (a if i % 2 else b).write(f"line {i} " + "x" * 40)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["d.runtime.log", "d.runtime.log.1", "d.runtime.log.2", "d.runtime.log.3"]
    # each writer looks every 64 of its lines: a file overshoots by at most that, twice
    assert all(p.stat().st_size < 4096 + 2 * 64 * 80 for p in tmp_path.iterdir())
    # the newest lines are in the live log, from both writers
    text = path.read_text()
    assert "line 1999 " in text and "[worker.1] line 1998 " in text


def test_logs_past_their_age_are_deleted_unless_their_release_runs(tmp_path: Path) -> None:
    logs = tmp_path / "logs" / "shop"
    logs.mkdir(parents=True)
    old = time.time() - 40 * 86400
    for name in ("1aaaaaaa.runtime.log", "1aaaaaaa.build.log", "1aaaaaaa.runtime.log.1",
                 "2bbbbbbb.runtime.log", "3ccccccc.runtime.log"):  # fmt: skip
        (logs / name).write_text("x\n")
    for name in ("1aaaaaaa.runtime.log", "1aaaaaaa.build.log", "1aaaaaaa.runtime.log.1",
                 "2bbbbbbb.runtime.log"):  # fmt: skip
        os.utime(logs / name, (old, old))
    assert sweep(tmp_path / "logs", running={"2bbbbbbb"}, age=30 * 86400) == 3
    assert sorted(p.name for p in logs.iterdir()) == [
        "2bbbbbbb.runtime.log",
        "3ccccccc.runtime.log",
    ]
