"""Sanitization plans for clones from production. Pure.

Every column needs a rule from ``[sanitize]`` (``"table.column" = "email"``). The only
columns kept without one are those whose type proves they hold no personal text:
primary and foreign keys of integer or uuid type, and timestamps, dates, times and
intervals; even then not when the name looks like personal data (``national_id``,
``born_on``). Booleans and numbers need a rule too (``keep`` is one). A column no rule
covers (such as one added since the rules were written) stops the clone, and the
message never suggests keeping its values.

``keep`` is checked against the values: when sampled values of a kept column look like
emails, phone numbers, names, card numbers or national ids the clone is refused, unless
the rule is forced with a reason (``{ keep = true, reason = "…" }``), which is recorded.
JSON columns take rules by path (``{ json = { "$.email" = "email" } }``); sampled
string leaves no path covers are checked the same way.

The transforms themselves are in `pseudonyms`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import json_paths, pii_values
from .pseudonyms import Transformer
from .snapshot import Table

__all__ = ["ColumnRule", "Plan", "Problem", "RuleSpec", "Transformer", "parse_rule", "plan"]

RULES = ("email", "name", "phone", "address", "scrub", "null", "hash", "redact", "keep")
# what a refusal offers: every rule that changes the values, never keep
RULE_HELP = (
    "rules: email name phone address scrub hash redact null fake:<faker provider>, "
    '{ json = { "$.field" = "<rule>" } } for JSON'
)
# column kinds that hold no text: kept without a rule (names of personal data aside)
NO_TEXT_KINDS = frozenset({"timestamp", "timestamptz", "date", "time", "interval"})
KEY_KINDS = frozenset({"integer", "uuid"})
SAMPLE_ROWS = 1000  # rows sampled for each kept or JSON-ruled column

# Words in a column name that mark it as personal or secret data.
PII_WORDS = frozenset(
    {
        "email",
        "emails",
        "mail",
        "phone",
        "phones",
        "mobile",
        "tel",
        "telephone",
        "fax",
        "name",
        "names",
        "firstname",
        "lastname",
        "fullname",
        "surname",
        "username",
        "nickname",
        "address",
        "addr",
        "street",
        "city",
        "zip",
        "zipcode",
        "postcode",
        "postal",
        "card",
        "cc",
        "pan",
        "cvv",
        "cvc",
        "iban",
        "bic",
        "swift",
        "ip",
        "token",
        "tokens",
        "secret",
        "password",
        "passwd",
        "pwd",
        "ssn",
        "dob",
        "birth",
        "birthday",
        "birthdate",
        "passport",
        "license",
        "latitude",
        "longitude",
        "lat",
        "lng",
        "apikey",
        "key",
        "salt",
        "national",
        "nationalid",
        "tax",
        "taxid",
        "born",
        "blood",
        "pregnant",
        "pregnancy",
        "salary",
        "wage",
        "income",
        "religion",
        "diagnosis",
    }
)


def words(column: str) -> list[str]:
    """The words of a column name: snake_case, camelCase, kebab-case, digits."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", column)
    return [w.lower() for w in re.split(r"[^A-Za-z]+|\s+", spaced) if w]


def looks_like_pii(column: str) -> bool:
    ws = words(column)
    joined = "".join(ws)
    return any(w in PII_WORDS for w in ws) or joined in PII_WORDS


def closest_rule(rule: str) -> str | None:
    match = difflib.get_close_matches(rule, [*RULES, "fake:", "json"], n=1, cutoff=0.5)
    return match[0] if match else None


def check_rule(rule: str, faker_providers: Callable[[str], bool] | None = None) -> str | None:
    """None if `rule` is valid, else the reason."""
    if rule in RULES:
        return None
    if rule.startswith("fake:"):
        provider = rule[5:]
        if not provider.isidentifier() or provider != provider.lower():
            return f"{rule!r}: the provider must be a Faker method name such as fake:company"
        if faker_providers is not None and not faker_providers(provider):
            return f"{rule!r}: Faker has no provider {provider!r}"
        return None
    near = closest_rule(rule)
    did = f"; did you mean {near!r}?" if near else ""
    return f"unknown rule {rule!r}{did} ({RULE_HELP})"


@dataclass(frozen=True)
class RuleSpec:
    """One `[sanitize]` entry: a rule name, a forced keep, or JSON-path rules."""

    rule: str  # a RULES name, "fake:<provider>" or "json"
    reason: str | None = None  # why a keep is forced (recorded with every clone)
    paths: tuple[tuple[json_paths.JsonPath, str], ...] = ()


def parse_rule(value: Any, faker_providers: Callable[[str], bool] | None = None) -> RuleSpec:
    """A `[sanitize]` value (a string, a table or its model) -> RuleSpec; raises ValueError
    saying what is wrong."""
    if isinstance(value, str):
        bad = check_rule(value, faker_providers)
        if bad:
            raise ValueError(bad)
        return RuleSpec(value)
    if hasattr(value, "model_dump_rule"):  # config.SanitizeTable
        value = value.model_dump_rule()
    if not isinstance(value, Mapping):
        raise ValueError(f"a rule is a string or a table, not {type(value).__name__}")
    keys = set(value)
    if "json" in keys:
        if keys - {"json"}:
            raise ValueError('a JSON rule is { json = { "$.path" = "<rule>" } } alone')
        paths = value["json"]
        if not isinstance(paths, Mapping) or not paths:
            raise ValueError('json needs one rule per path: { json = { "$.email" = "email" } }')
        out: list[tuple[json_paths.JsonPath, str]] = []
        for path, rule in paths.items():
            try:
                parsed = json_paths.parse(str(path))
            except json_paths.PathError as exc:
                raise ValueError(str(exc)) from None
            if not isinstance(rule, str):
                raise ValueError(f'{path}: the rule of a path is a string such as "email"')
            if rule == "keep":
                raise ValueError(
                    f"{path}: fields no path names are kept; name only those to change"
                )
            bad = check_rule(rule, faker_providers)
            if bad:
                raise ValueError(f"{path}: {bad}")
            out.append((parsed, rule))
        return RuleSpec("json", paths=tuple(out))
    if "keep" in keys:
        if keys - {"keep", "reason"} or value["keep"] is not True:
            raise ValueError(
                'a forced keep is { keep = true, reason = "why these values are not personal" }'
            )
        reason = str(value.get("reason") or "").strip()
        if not reason:
            raise ValueError('a forced keep needs a reason: { keep = true, reason = "…" }')
        return RuleSpec("keep", reason=reason)
    raise ValueError(f"unknown rule table {dict(value)!r} (json = {{…}} or keep = true)")


@dataclass(frozen=True)
class ColumnRule:
    table: str
    column: str
    rule: str
    source: str  # "sanitize" (from [sanitize]), "key", "type <kind>"
    reason: str | None = None  # a forced keep's reason
    paths: tuple[tuple[json_paths.JsonPath, str], ...] = ()

    @property
    def sniffed(self) -> bool:
        """Whether sampled values must not look like personal data: every keep that is not
        forced (a SQLite column holds any value whatever its declared type), JSON rules."""
        return self.rule == "json" or (
            self.rule == "keep" and self.reason is None and self.source != "generated"
        )


@dataclass(frozen=True)
class Problem:
    table: str
    column: str
    reason: str

    def __str__(self) -> str:
        return f"{self.table}.{self.column}: {self.reason}"


@dataclass
class Plan:
    columns: dict[str, list[ColumnRule]] = field(default_factory=dict)  # table -> rules
    problems: list[Problem] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # rules that name no column

    @property
    def ok(self) -> bool:
        return not self.problems

    def transformed(self) -> dict[str, list[str]]:
        """table -> the columns whose values change."""
        return {t: [c.column for c in cols if c.rule != "keep"] for t, cols in self.columns.items()}

    def forced(self) -> dict[str, str]:
        """ "table.column" -> the reason of each forced keep."""
        return {
            f"{c.table}.{c.column}": c.reason
            for cols in self.columns.values()
            for c in cols
            if c.reason is not None
        }

    def to_sniff(self) -> dict[str, list[ColumnRule]]:
        """table -> the columns whose sampled values must be checked."""
        out = {t: [c for c in cols if c.sniffed] for t, cols in self.columns.items()}
        return {t: cs for t, cs in out.items() if cs}

    def sniff(self, table: str, samples: Mapping[str, Iterable[Any]]) -> None:
        """Refuse kept columns of `table` whose sampled values look like personal data
        (column name -> sampled values, JSON documents as parsed values)."""
        for c in self.to_sniff().get(table, []):
            values = list(samples.get(c.column, ()))
            if c.rule == "keep":
                found = pii_values.kinds(_flat(values))
                if found:
                    self.problems.append(
                        Problem(
                            table,
                            c.column,
                            f"is kept, but sampled values look like {_kinds(found, len(values))}; "
                            f'choose a rule that changes them: `"{table}.{c.column}" = "<rule>"` '
                            f"({RULE_HELP})",
                        )
                    )
                continue
            rules = [p for p, _ in c.paths]
            by_path: dict[str, list[Any]] = {}
            for doc in values:
                for where, leaf in json_paths.leaves(doc):
                    if not json_paths.covered(where, rules):
                        by_path.setdefault(where, []).append(leaf)
            for where, leaves in sorted(by_path.items()):
                found = pii_values.kinds(leaves)
                if found:
                    self.problems.append(
                        Problem(
                            table,
                            c.column,
                            f"JSON field {where} is kept, but sampled values look like "
                            f"{_kinds(found, len(leaves))}; add it to the column's rules: "
                            f'{{ json = {{ "{where}" = "<rule>", … }} }} ({RULE_HELP})',
                        )
                    )


def _flat(values: Iterable[Any]) -> Iterator[Any]:
    """Values with JSON documents and arrays opened into their leaves."""
    for v in values:
        if isinstance(v, dict | list):
            for _, leaf in json_paths.leaves(v):
                yield leaf
        else:
            yield v


def _kinds(found: Mapping[str, int], total: int) -> str:
    return ", ".join(f"{kind}s ({n} of {total})" for kind, n in sorted(found.items()))


def plan(
    tables: Sequence[Table],
    rules: Mapping[str, Any],
    faker_providers: Callable[[str], bool] | None = None,
) -> Plan:
    """Assign a rule to every column; list every column that has none."""
    out = Plan()
    used: set[str] = set()
    for table in tables:
        keys = set(table.primary_key)
        for fk in table.foreign_keys:
            keys.update(fk.columns)
        cols: list[ColumnRule] = []
        for col in table.columns:
            ref = f"{table.name}.{col.name}"
            value = rules.get(ref)
            if value is not None:
                used.add(ref)
                try:
                    spec = parse_rule(value, faker_providers)
                except ValueError as exc:
                    out.problems.append(Problem(table.name, col.name, str(exc)))
                    continue
                if spec.rule == "json" and col.kind not in ("json", "text", "other"):
                    out.problems.append(
                        Problem(
                            table.name, col.name, f"JSON rules need a JSON column, not {col.type}"
                        )
                    )
                    continue
                cols.append(
                    ColumnRule(table.name, col.name, spec.rule, "sanitize", spec.reason, spec.paths)
                )
                continue
            hint = f'add `"{ref}" = "<rule>"` to [sanitize] ({RULE_HELP})'
            if looks_like_pii(col.name):
                out.problems.append(
                    Problem(table.name, col.name, f"looks like personal data; {hint}")
                )
                continue
            if col.name in keys and col.kind in KEY_KINDS:
                cols.append(ColumnRule(table.name, col.name, "keep", "key"))
                continue
            if col.kind in NO_TEXT_KINDS and not col.generated:
                cols.append(ColumnRule(table.name, col.name, "keep", f"type {col.kind}"))
                continue
            if col.generated:
                # computed from other columns by the target: nothing to copy
                cols.append(ColumnRule(table.name, col.name, "keep", "generated"))
                continue
            out.problems.append(
                Problem(
                    table.name,
                    col.name,
                    f"has no rule ({col.type or col.kind}, new column?); {hint}",
                )
            )
        out.columns[table.name] = cols
    out.unused = sorted(set(rules) - used)
    return out


_KEY_VALUES = re.compile(r"=\((?:[^()]|\([^()]*\))*\)")
_ROW = re.compile(r"(Failing row contains |row )\((?:[^()]|\([^()]*\))*\)")
_QUOTED = re.compile(r"(:\s*)(\"[^\"]*\"|'[^']*')")


def without_values(text: str) -> str:
    """A database's error message with the values it quotes taken out (`Key (email)=(…)`,
    `Failing row contains (…)`, `syntax for type integer: "…"`), and any email, phone,
    card number or national id left in it: errors of a clone from production print no
    production value."""
    text = _KEY_VALUES.sub("=(…)", text)
    text = _ROW.sub(lambda m: m.group(1) + "(…)", text)
    text = _QUOTED.sub(lambda m: m.group(1) + "…", text)
    spans = list(pii_values.spans(text))
    for start, end, _ in reversed(spans):
        text = text[:start] + "…" + text[end:]
    return text
