"""Redaction speed: the compiled trie pattern vs the baselines, on a build-log-sized text.

    .venv/bin/python bench/redactor.py [SECRETS] [LOG_MB]

Baselines: one `str.replace` per secret (the obvious loop), and one flat
alternation regex of all secrets. Prints MB/s for each and the ratio.
"""

from __future__ import annotations

import random
import re
import string
import sys
import time

from tristage.domain.variables import MASK, compile_redactor


def make_secrets(n: int) -> list[str]:
    prefixes = ["sk_test_", "sk_live_", "whsec_", "rk_test_", "", "postgres://app:"]
    out = []
    for _ in range(n):
        body = "".join(random.choices(string.ascii_letters + string.digits, k=32))
        out.append(random.choice(prefixes) + body)
    return out


def make_log(size: int, sample: list[str]) -> str:
    words = ["npm", "install", "built", "in", "ms", "GET", "/api/users", "200", "warn", "chunk"]
    parts: list[str] = []
    total = 0
    while total < size:
        line = " ".join(random.choices(words, k=12))
        if random.random() < 0.01:
            line += " token=" + random.choice(sample)
        parts.append(line)
        total += len(line) + 1
    return "\n".join(parts)


def timed(fn, text: str, rounds: int = 3) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    best = float("inf")
    out = ""
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn(text)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    mb = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    random.seed(7)
    values = make_secrets(n)
    log = make_log(int(mb * 1_000_000), values)
    size = len(log) / 1_000_000

    t0 = time.perf_counter()
    trie = compile_redactor(values)
    compile_s = time.perf_counter() - t0

    def loop(text: str) -> str:
        for v in sorted(values, key=len, reverse=True):
            text = text.replace(v, MASK)
        return text

    flat_re = re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))

    def flat(text: str) -> str:
        return flat_re.sub(MASK, text)

    t_trie, out_trie = timed(trie, log)
    t_loop, out_loop = timed(loop, log)
    t_flat, out_flat = timed(flat, log)
    assert out_trie == out_loop == out_flat, "redactors disagree"
    assert not any(v in out_trie for v in values)
    print(f"{n} secrets, {size:.1f} MB log, trie compiled in {compile_s * 1000:.1f} ms")
    for name, t in (("trie regex", t_trie), ("str.replace loop", t_loop), ("flat regex", t_flat)):
        print(f"  {name:18s} {t * 1000:8.1f} ms  {size / t:8.1f} MB/s")
    print(
        f"ratio vs str.replace loop: {t_loop / t_trie:.2f}x; vs flat regex: {t_flat / t_trie:.2f}x"
    )


if __name__ == "__main__":
    main()
