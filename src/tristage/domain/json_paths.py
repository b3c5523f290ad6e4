"""JSON paths of sanitize rules: ``$.email``, ``$.address.city``, ``$.items[*].email``,
``$..email`` (any depth), ``$["odd key"]``, ``$.tags[0]``. Pure.

A path names the values a rule rewrites inside a JSON document; the rule is applied
to the scalars found there (an object or array found there is walked, so
``$.address`` = ``address`` rewrites every string inside the address).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# one step: ("key", name) | ("index", n) | ("any", None) | ("deep", name or None)
Step = tuple[str, Any]

_STEP = re.compile(
    r"""\.\.(?P<deep>[A-Za-z_$][\w$-]*|\*)
      | \.(?P<key>[A-Za-z_$][\w$-]*|\*)
      | \[\s*(?P<index>-?\d+)\s*\]
      | \[\s*\*\s*\]
      | \[\s*(?P<q>["'])(?P<quoted>(?:\\.|(?!(?P=q)).)*)(?P=q)\s*\]""",
    re.VERBOSE,
)


class PathError(ValueError):
    pass


@dataclass(frozen=True)
class JsonPath:
    text: str
    steps: tuple[Step, ...]


def parse(text: str) -> JsonPath:
    """A path such as ``$.user.email``; raises PathError saying what is wrong."""
    if not text.startswith("$"):
        raise PathError(f"JSON path {text!r} must start with '$' (such as '$.email')")
    steps: list[Step] = []
    pos = 1
    while pos < len(text):
        m = _STEP.match(text, pos)
        if m is None:
            raise PathError(
                f"JSON path {text!r}: cannot read {text[pos:]!r} (steps are .key, ..key, "
                '[n], [*] and ["key"])'
            )
        if m.group("deep") is not None:
            d = m.group("deep")
            steps.append(("deep", None if d == "*" else d))
        elif m.group("key") is not None:
            k = m.group("key")
            steps.append(("any", None) if k == "*" else ("key", k))
        elif m.group("index") is not None:
            steps.append(("index", int(m.group("index"))))
        elif m.group("quoted") is not None:
            steps.append(("key", re.sub(r"\\(.)", r"\1", m.group("quoted"))))
        else:
            steps.append(("any", None))
        pos = m.end()
    if not steps:
        raise PathError(f"JSON path {text!r} names the whole document; name a field ('$.email')")
    return JsonPath(text, tuple(steps))


def apply(doc: Any, path: JsonPath, fn: Callable[[Any], Any]) -> Any:
    """`doc` with `fn` applied to every value `path` finds (a new document)."""
    return _apply(doc, path.steps, fn)


def _apply(value: Any, steps: tuple[Step, ...], fn: Callable[[Any], Any]) -> Any:
    if not steps:
        return fn(value)
    (kind, arg), rest = steps[0], steps[1:]
    if kind == "key":
        if isinstance(value, dict) and arg in value:
            out = dict(value)
            out[arg] = _apply(value[arg], rest, fn)
            return out
        return value
    if kind == "index":
        if isinstance(value, list) and -len(value) <= arg < len(value):
            out_list = list(value)
            out_list[arg] = _apply(value[arg], rest, fn)
            return out_list
        return value
    if kind == "any":
        if isinstance(value, dict):
            return {k: _apply(v, rest, fn) for k, v in value.items()}
        if isinstance(value, list):
            return [_apply(v, rest, fn) for v in value]
        return value
    # deep: the key (or any member) at any depth below here
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if arg is None or k == arg:
                v = _apply(v, rest, fn)
            out[k] = _apply(v, steps, fn) if isinstance(v, dict | list) else v
        return out
    if isinstance(value, list):
        return [_apply(v, steps, fn) if isinstance(v, dict | list) else v for v in value]
    return value


def leaves(doc: Any, prefix: str = "$") -> list[tuple[str, Any]]:
    """Every scalar of `doc` with a path to it (array positions as [*])."""
    out: list[tuple[str, Any]] = []
    stack: list[tuple[str, Any]] = [(prefix, doc)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, dict):
            for k, x in v.items():
                key = f".{k}" if re.fullmatch(r"[A-Za-z_$][\w$-]*", str(k)) else f"[{k!r}]"
                stack.append((where + key, x))
        elif isinstance(v, list):
            stack.extend((where + "[*]", x) for x in v)
        else:
            out.append((where, v))
    return out


def covered(path: str, rules: list[JsonPath]) -> bool:
    """Whether the leaf path `path` (from `leaves`) is one some rule rewrites."""
    parts = _leaf_steps(path)
    return any(_matches(r.steps, parts) for r in rules)


def _leaf_steps(path: str) -> list[Step]:
    return list(parse(path).steps) if path != "$" else []


def _matches(rule: tuple[Step, ...], leaf: list[Step]) -> bool:
    """A rule whose steps reach `leaf` or an ancestor of it (a walked container)."""
    if not rule:
        return True
    if not leaf:
        return False
    (kind, arg), rest = rule[0], rule[1:]
    head = leaf[0]
    if kind == "deep":
        if (arg is None or head == ("key", arg)) and _matches(rest, leaf[1:]):
            return True
        return _matches(rule, leaf[1:])
    if kind == "any":
        return _matches(rest, leaf[1:])
    if kind == "index":
        return head[0] == "any" and _matches(rest, leaf[1:])
    return head == ("key", arg) and _matches(rest, leaf[1:])
