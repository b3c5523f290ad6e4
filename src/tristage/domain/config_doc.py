"""The key reference of `docs/configuration.md`, generated from the `tristage.toml` schema.

Pure: every table of the schema (a Pydantic model, nested models and tables of models
keyed by a name) becomes a section with one row per key: its type and bounds, its
default, and the `Field(description=...)` text. The class docstring of each model is the
section's introduction; the placeholder of a keyed table (`NAME`, `SOURCE`) comes from
the field's `json_schema_extra={"key": ...}`.

`splice` puts the reference between the markers of the page, leaving the prose around it;
`bash scripts/gen-docs.sh` rewrites the page, and a test fails when it is stale.
"""

from __future__ import annotations

import enum
import inspect
import json
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .config import PipelineConfig

BEGIN = (
    "<!-- BEGIN KEY REFERENCE: generated from src/tristage/domain/config.py "
    "by scripts/gen-docs.sh -->"
)
END = "<!-- END KEY REFERENCE -->"
DEFAULT_PLACEHOLDER = "NAME"


@dataclass(frozen=True)
class Key:
    """One key of the file: its table, name, and what the schema says of it."""

    table: str  # "environments.NAME.database" ("" for the top level)
    name: str
    field: FieldInfo
    child: type[BaseModel] | None  # the model of a nested table, if the key is one
    child_table: str  # the table path of that nested table
    description: str  # the field's, else that of the field it overrides

    @property
    def path(self) -> str:
        return f"{self.table}.{self.name}" if self.table else self.name


@dataclass(frozen=True)
class Table:
    path: str
    model: type[BaseModel]
    keys: tuple[Key, ...]


# ---------------------------------------------------------------------------
# Walking the schema


def _strip(annotation: Any) -> Any:
    """`Annotated[X, ...]` -> X."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _optional(annotation: Any) -> tuple[Any, bool]:
    """(X, True) for `X | None`, else (annotation, False)."""
    annotation = _strip(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return _strip(args[0]), True
    return annotation, False


def _model(annotation: Any) -> type[BaseModel] | None:
    t = _strip(annotation)
    return t if inspect.isclass(t) and issubclass(t, BaseModel) else None


def _keyed_model(annotation: Any) -> type[BaseModel] | None:
    """The value model of `dict[str, Model]`, if the annotation is one."""
    t, _ = _optional(annotation)
    if get_origin(t) is dict:
        return _model(get_args(t)[1])
    return None


def _placeholder(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("key"), str):
        return str(extra["key"])
    return DEFAULT_PLACEHOLDER


def description(model: type[BaseModel], name: str) -> str:
    """The description of field `name`; a subclass that only changes a field's default
    (`[app]` over the settings an environment may override) keeps its base's text."""
    for cls in model.__mro__:
        fields = getattr(cls, "__pydantic_fields__", None)
        if not isinstance(fields, dict) or name not in fields:
            continue
        text = (fields[name].description or "").strip()
        if text:
            return text
    return ""


def tables(model: type[BaseModel] = PipelineConfig, path: str = "") -> Iterator[Table]:
    """Every table of the schema, depth first in declaration order."""
    keys: list[Key] = []
    nested: list[tuple[type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        key_name = field.alias or name
        sub = f"{path}.{key_name}" if path else key_name
        child = _model(_optional(field.annotation)[0])
        child_table = sub
        if child is None:
            child = _keyed_model(field.annotation)
            child_table = f"{sub}.{_placeholder(field)}"
        if child is None:
            child_table = ""
        keys.append(Key(path, key_name, field, child, child_table, description(model, name)))
        if child is not None:
            nested.append((child, child_table))
    yield Table(path, model, tuple(keys))
    for child, child_path in nested:
        yield from tables(child, child_path)


def all_keys(model: type[BaseModel] = PipelineConfig) -> list[Key]:
    """Every key of the schema, table by table."""
    return [k for t in tables(model) for k in t.keys]


def undocumented(model: type[BaseModel] = PipelineConfig) -> list[str]:
    """Key paths without a description, and tables without an introduction."""
    missing = [k.path for k in all_keys(model) if not k.description]
    missing += [f"[{t.path}] (class docstring)" for t in tables(model) if not _intro(t.model)]
    return missing


# ---------------------------------------------------------------------------
# Rendering


def _type(annotation: Any) -> str:
    t, optional = _optional(annotation)
    text = _type_name(t)
    return f"{text} (optional)" if optional else text


def _type_name(t: Any) -> str:
    t = _strip(t)
    origin = get_origin(t)
    if origin is Literal:
        return " | ".join(f"`{json.dumps(a)}`" for a in get_args(t))
    if inspect.isclass(t) and issubclass(t, enum.Enum):
        return " | ".join(f"`{json.dumps(m.value)}`" for m in t)
    if origin is list:
        return f"list of {_type_name(get_args(t)[0])}"
    if origin is dict:
        return f"table of {_type_name(get_args(t)[1])}"
    if origin in (Union, types.UnionType):
        kinds = [_type_name(a) for a in get_args(t) if a is not type(None)]
        optional = len(kinds) < len(get_args(t))
        return " or ".join(kinds) + (" (optional)" if optional else "")
    if _model(t) is not None:
        return "table"
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if t in names:
        return names[t]
    return getattr(t, "__name__", str(t))


_BOUNDS = (
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.Le, "le", "≤"),
)


def _number(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _bounds(field: FieldInfo) -> str:
    parts: list[str] = []
    for meta in field.metadata:
        for cls, attr, sign in _BOUNDS:
            if isinstance(meta, cls):
                parts.append(f"{sign} {_number(getattr(meta, attr))}")
        if isinstance(meta, annotated_types.MinLen):
            parts.append(f"at least {meta.min_length} long")
        if isinstance(meta, annotated_types.MaxLen):
            parts.append(f"at most {meta.max_length} long")
    return ", ".join(parts)


def _toml(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {_toml(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    return str(value)


def _default(key: Key) -> str:
    field = key.field
    if field.is_required():
        return "required"
    if key.child is not None:
        return "—"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    return f"`{_toml(value)}`"


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().replace("|", "\\|")


def _intro(model: type[BaseModel]) -> str:
    doc = model.__doc__ or ""
    if doc == (BaseModel.__doc__ or "") or not doc.strip():
        return ""
    return re.sub(r"\s+", " ", inspect.cleandoc(doc).split("\n\n")[0]).strip()


def heading(path: str) -> str:
    return f"`[{path}]`" if path else "Top level"


def anchor(path: str) -> str:
    """The anchor a Markdown renderer gives the section heading of `path`."""
    text = heading(path).lower()
    return re.sub(r"[^a-z0-9 _-]", "", text).replace(" ", "-")


def _row(key: Key) -> str:
    kind = _type(key.field.annotation)
    if key.child is not None:
        kind = f"[table](#{anchor(key.child_table)})"
        if _keyed_model(key.field.annotation) is not None:
            kind = f"tables by name, each [{key.child_table}](#{anchor(key.child_table)})"
    bounds = _bounds(key.field)
    if bounds:
        kind = f"{kind}, {bounds}"
    return f"| `{key.name}` | {_cell(kind)} | {_cell(_default(key))} | {_cell(key.description)} |"


def reference(model: type[BaseModel] = PipelineConfig) -> str:
    """The key reference: one section per table, one row per key."""
    out: list[str] = []
    for table in tables(model):
        out.append(f"### {heading(table.path)}")
        out.append("")
        intro = _intro(table.model)
        if intro:
            out.append(intro)
            out.append("")
        out.append("| key | type | default | description |")
        out.append("|---|---|---|---|")
        out.extend(_row(k) for k in table.keys)
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


class MarkersMissing(ValueError):
    pass


def splice(page: str, section: str) -> str:
    """`page` with the text between its BEGIN and END markers replaced by `section`."""
    start = page.find(BEGIN)
    end = page.find(END)
    if start < 0 or end < start:
        raise MarkersMissing(f"the page has no '{BEGIN}' ... '{END}' markers")
    return page[: start + len(BEGIN)] + "\n\n" + section + "\n" + page[end:]
