"""The key reference generator: every table and key of a schema, in order, with its text."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from tristage.domain import config_doc
from tristage.domain.config import PipelineConfig, ProcessSettings


class Limits(BaseModel):
    """Process limits."""

    memory: str | None = Field(default=None, description="A memory limit such as `512M`.")
    cpus: float = Field(default=1.0, gt=0, le=64, description="CPU share.")


class Item(BaseModel):
    """One keyed item."""

    mode: Literal["on", "off"] = Field(default="on", description="On or off.")


class Root(BaseModel):
    """The root."""

    name: str = Field(description="The name.")
    limits: Limits = Field(default_factory=Limits, description="The limits table.")
    items: dict[str, Item] = Field(
        default_factory=dict, description="Items by name.", json_schema_extra={"key": "ITEM"}
    )
    tags: list[str] = Field(default_factory=lambda: ["a", "b"], description="Tags.")


def test_tables_and_keys_in_declaration_order() -> None:
    assert [t.path for t in config_doc.tables(Root)] == ["", "limits", "items.ITEM"]
    assert [k.path for k in config_doc.all_keys(Root)] == [
        "name",
        "limits",
        "items",
        "tags",
        "limits.memory",
        "limits.cpus",
        "items.ITEM.mode",
    ]


def test_rows_give_type_bounds_default_and_description() -> None:
    text = config_doc.reference(Root)
    assert "### `[limits]`\n\nProcess limits.\n" in text
    assert "| `name` | string | required | The name. |" in text
    assert "| `memory` | string (optional) | unset | A memory limit such as `512M`. |" in text
    assert "| `cpus` | number, > 0, ≤ 64 | `1` | CPU share. |" in text
    assert '| `mode` | `"on"` \\| `"off"` | `"on"` | On or off. |' in text
    assert '| `tags` | list of string | `["a", "b"]` | Tags. |' in text
    assert "[items.ITEM](#itemsitem)" in text and "### `[items.ITEM]`" in text
    assert "[table](#limits)" in text


def test_the_real_schema_is_fully_described() -> None:
    assert config_doc.undocumented() == []
    paths = {k.path for k in config_doc.all_keys()}
    # process settings appear under [app] and under each environment
    for name in ProcessSettings.model_fields:
        assert f"app.{name}" in paths and f"environments.NAME.{name}" in paths
    assert "environments.NAME.webhooks.SOURCE.secret_var" in paths
    assert "environments.NAME.backups.keep.daily" in paths


def test_a_key_without_a_description_is_flagged() -> None:
    class Planted(PipelineConfig):
        """The top-level tables, and one more."""

        undocumented_key: int = 3

    class NoDoc(BaseModel):
        x: int = Field(default=1, description="x.")

    class Nested(Root):
        """Root with an undescribed table."""

        extra: NoDoc = Field(default_factory=NoDoc, description="An extra table.")

    assert config_doc.undocumented(Planted) == ["undocumented_key"]
    assert config_doc.undocumented(Nested) == ["[extra] (class docstring)"]
    # and the generated reference of the planted schema differs from the real one
    assert "`undocumented_key`" in config_doc.reference(Planted)
    assert config_doc.reference(Planted) != config_doc.reference()


def test_splice_replaces_only_between_the_markers() -> None:
    page = f"# Title\n\nprose\n\n{config_doc.BEGIN}\nold\n{config_doc.END}\n\nmore prose\n"
    out = config_doc.splice(page, "NEW\n")
    b, e = config_doc.BEGIN, config_doc.END
    assert out == f"# Title\n\nprose\n\n{b}\n\nNEW\n\n{e}\n\nmore prose\n"
    assert config_doc.splice(out, "NEW\n") == out
    with pytest.raises(config_doc.MarkersMissing, match="markers"):
        config_doc.splice("# no markers\n", "NEW\n")


def test_an_override_of_a_default_keeps_the_base_description() -> None:
    class BigLimits(Limits):
        """Bigger limits."""

        cpus: float = 4.0

    class Big(BaseModel):
        """Root."""

        limits: BigLimits = Field(default_factory=BigLimits, description="Limits.")

    assert config_doc.undocumented(Big) == []
    assert "| `cpus` | number | `4` | CPU share. |" in config_doc.reference(Big)
