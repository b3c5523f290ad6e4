"""Redaction speed: every form of every secret vs the exact values only, on a build log.

    .venv/bin/python bench/redactor.py [SECRETS] [LOG_MB]

Both redactors are one compiled prefix-tree pattern: the exact-match one holds the
values (and their parts: lines, URL passwords), the full one every printed form of
them (escaped, URL-encoded, base64 at each alignment, hex), with line breaks
transparent. The log mixes ordinary lines with secrets printed as they are, as
JSON, base64 and hex. Prints MB/s for each, the stream interface fed line by line,
compile times and ratios.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import sys
import time
from collections.abc import Callable

from tristage.domain.redaction import MASK, build_redactor, forms, parts, trie_pattern

PRINTS: list[Callable[[str], str]] = [
    lambda v: v,
    lambda v: json.dumps({"token": v}),
    lambda v: base64.b64encode(f"user:{v}".encode()).decode(),
    lambda v: v.encode().hex(),
]


def make_secrets(n: int) -> list[str]:
    prefixes = ["sk_test_", "sk_live_", "whsec_", "rk_test_", "", "postgres://app:"]
    out = []
    for _ in range(n):
        body = "".join(random.choices(string.ascii_letters + string.digits, k=32))
        out.append(random.choice(prefixes) + body)
    return out


def make_log(size: int, sample: list[str]) -> str:
    words = ["npm", "install", "built", "in", "ms", "GET", "/api/users", "200", "warn", "chunk"]
    parts_: list[str] = []
    total = 0
    while total < size:
        line = " ".join(random.choices(words, k=12))
        if random.random() < 0.01:
            line += " token=" + random.choice(PRINTS)(random.choice(sample))
        parts_.append(line)
        total += len(line) + 1
    return "\n".join(parts_) + "\n"


def unmasked(text: str) -> int:
    """Lines that print a token with no mask in them."""
    return sum(1 for line in text.splitlines() if "token=" in line and MASK not in line)


def best_of(fn: Callable[[], str], rounds: int = 3) -> tuple[float, str]:
    best, out = float("inf"), ""
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    mb = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    random.seed(7)
    values = make_secrets(n)
    log = make_log(int(mb * 1_000_000), values)
    lines = log.splitlines(keepends=True)
    size = len(log) / 1_000_000

    t0 = time.perf_counter()
    exact_re = re.compile(trie_pattern({p for v in values for p in parts(v)}))
    exact_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = build_redactor(values)
    full_compile = time.perf_counter() - t0

    def stream() -> str:
        s = full.stream()
        return "".join([s.feed(line) for line in lines]) + s.flush()

    t_exact, out_exact = best_of(lambda: exact_re.sub(MASK, log))
    t_exact_lines, _ = best_of(lambda: "".join([exact_re.sub(MASK, line) for line in lines]))
    t_full, out_full = best_of(lambda: full.redact(log))
    t_stream, out_stream = best_of(stream)
    assert out_stream == out_full, "the stream and the one-shot redactor disagree"
    assert not any(v in out_full or v in out_exact for v in values)
    assert unmasked(out_full) == 0, "a printed secret got through"
    print(
        f"{n} secrets ({len(forms(values))} forms), {size:.1f} MB log ({len(lines)} lines); "
        f"compiled in {exact_compile * 1000:.0f} ms (exact) / {full_compile * 1000:.0f} ms (forms)"
    )
    for name, t in (
        ("exact values only, whole log", t_exact),
        ("every form, whole log", t_full),
        ("exact values only, line by line", t_exact_lines),
        ("every form, stream fed line by line", t_stream),
    ):
        print(f"  {name:36s} {t * 1000:8.1f} ms  {size / t:8.1f} MB/s")
    print(
        f"cost of every form: {t_full / t_exact:.2f}x on the whole log, "
        f"{t_stream / t_exact_lines:.2f}x line by line "
        f"({t_stream / len(lines) * 1e6:.1f} µs a line)"
        f"; printed secrets let through: {unmasked(out_exact)} of "
        f"{unmasked(log)} by the exact-only redactor, {unmasked(out_full)} by every form"
    )


if __name__ == "__main__":
    main()
