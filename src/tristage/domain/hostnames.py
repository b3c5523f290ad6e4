"""Public host names of environments: validation of `domains` and `branch_domain`.

Pure. A host name here is what a browser puts in `Host` and a CA in a certificate: DNS
labels of lowercase letters, digits and '-', at least two of them, no port, no scheme,
no wildcard, not an IP address. `*.localhost` names are not public: every environment
has them already (`aliases.py`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

PLACEHOLDER = "{branch}"
LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
# what a branch slug may take in the first label of a pattern (`branches.slug`'s limit)
SLUG_ROOM = 50


@dataclass(frozen=True)
class PublicNames:
    """An environment's public host names (`domains`, `branch_domain` in tristage.toml)."""

    domains: tuple[str, ...] = ()
    branch_domain: str | None = None

    @property
    def canonical(self) -> str | None:
        return self.domains[0] if self.domains else None


NO_NAMES = PublicNames()


def check_hostname(value: str) -> str:
    """`value` lowercased and without a trailing dot, or ValueError saying how to fix it."""
    host = value.strip().lower().rstrip(".")
    example = "write the name alone, e.g. 'shop.example.com'"
    if not host:
        raise ValueError(f"an empty host name; {example}")
    if "://" in host or "/" in host or ":" in host or "@" in host:
        raise ValueError(f"{value!r} is not a host name: {example} (no scheme, port or path)")
    if "*" in host:
        raise ValueError(
            f"{value!r}: wildcards are not host names; list each name, or use branch_domain "
            "= '{branch}.preview.example.com' for per-branch hosts"
        )
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise ValueError(f"{value!r} is an IP address; {example}")
    if host == "localhost" or host.endswith(".localhost"):
        raise ValueError(
            f"{value!r} is a local name: every environment already answers on *.localhost; "
            "list only public names here"
        )
    labels = host.split(".")
    if len(labels) < 2:
        raise ValueError(f"{value!r} has a single label; {example}")
    if len(host) > 253:
        raise ValueError(f"{value!r} is longer than 253 characters")
    for label in labels:
        if not LABEL_RE.match(label):
            raise ValueError(
                f"{value!r} is not a host name: each dot-separated part must be 1-63 "
                "lowercase letters, digits or '-', not starting or ending with '-'"
            )
    return host


def check_pattern(value: str) -> str:
    """A branch host pattern such as `{branch}.preview.shop.example.com`, checked."""
    pattern = value.strip().lower().rstrip(".")
    example = "e.g. '{branch}.preview.shop.example.com'"
    if pattern.count(PLACEHOLDER) != 1:
        raise ValueError(f"{value!r} must contain {PLACEHOLDER} exactly once, {example}")
    first, _, rest = pattern.partition(".")
    if PLACEHOLDER not in first:
        raise ValueError(f"{value!r}: {PLACEHOLDER} must be in the first label, {example}")
    if len(first) - len(PLACEHOLDER) > 63 - SLUG_ROOM:
        raise ValueError(
            f"{value!r}: the first label leaves too little room for a branch name (at most "
            f"{63 - SLUG_ROOM} characters besides {PLACEHOLDER})"
        )
    if not rest:
        raise ValueError(f"{value!r} has no domain after its first label, {example}")
    try:
        check_hostname(pattern.replace(PLACEHOLDER, "b"))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a host pattern ({exc})") from None
    return pattern


def expand(pattern: str, label: str) -> str:
    """The host of a branch slug or deployment id under `pattern`."""
    return pattern.replace(PLACEHOLDER, label)


def is_local(host: str) -> bool:
    """A name only this machine resolves (`*.localhost`), or an IP literal."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
