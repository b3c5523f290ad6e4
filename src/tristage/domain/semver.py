"""npm-style version ranges (pure): does an installed Node satisfy `engines.node` or
`.nvmrc`? Supports what package.json files use: `20`, `20.11.1`, `v20`, `20.x`, `>=18`,
`>=18 <21`, `^20.1`, `~20.11`, `18 || 20`, `*`, `lts/*` (any even major)."""

from __future__ import annotations

import re

Version = tuple[int, int, int]

_PART = re.compile(r"^(<=|>=|<|>|=|\^|~)?v?(\d+|x|\*)(?:\.(\d+|x|\*))?(?:\.(\d+|x|\*))?$")


def parse_version(text: str) -> Version | None:
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", text.strip())
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def satisfies(version: Version, spec: str) -> bool:
    """True if `version` is in the range `spec`; ValueError for a range this cannot read."""
    spec = spec.strip()
    if spec in ("", "*", "x", "latest", "node", "current"):
        return True
    if spec.startswith("lts/"):
        return version[0] % 2 == 0
    return any(_all(version, alt.split()) for alt in spec.split("||"))


def _all(version: Version, parts: list[str]) -> bool:
    if len(parts) == 3 and parts[1] == "-":  # 18 - 20
        return _one(version, ">=" + parts[0]) and _one(version, "<=" + parts[2])
    return all(_one(version, p) for p in parts) if parts else True


def _one(v: Version, part: str) -> bool:
    m = _PART.match(part)
    if m is None:
        raise ValueError(f"not a version range: {part!r}")
    op = m[1] or ""
    nums = [None if x in (None, "x", "*") else int(x) for x in (m[2], m[3], m[4])]
    given = [n for n in nums if n is not None]
    if not given:
        return True
    base: Version = (nums[0] or 0, nums[1] or 0, nums[2] or 0)
    exact = len([n for n in nums if n is not None]) == 3 and all(n is not None for n in nums)
    if op in ("", "="):
        return tuple(v[: len(given)]) == tuple(given) if not exact else v == base
    if op == ">=":
        return v >= base
    if op == ">":
        return v > base if exact else tuple(v[: len(given)]) > tuple(given)
    if op == "<":
        return v < base
    if op == "<=":
        return v <= base if exact else tuple(v[: len(given)]) <= tuple(given)
    if op == "^":  # same first non-zero part
        if v < base:
            return False
        if base[0] != 0 or len(given) == 1:
            return v[0] == base[0]
        if base[1] != 0 or len(given) == 2:
            return v[:2] == base[:2]
        return v == base
    # ~: same major.minor when a minor is given, else same major
    return v >= base and (v[:2] == base[:2] if len(given) >= 2 else v[0] == base[0])
