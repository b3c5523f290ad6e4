"""A registry of named plug-ins of one protocol: built-ins register themselves as an outside
package would, by calling `register(...)` or through an entry point in the registry's group
(loaded on first look-up). The webhook providers and the git hosts are such registries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    """`protocol` is the runtime-checkable protocol every plug-in implements; `kind` is
    what the plug-ins are called in messages ("webhook provider");
    `unknown(message, hint)` builds the error for a name nothing answers to."""

    def __init__(
        self,
        protocol: type,
        group: str,
        kind: str,
        unknown: Callable[[str, str], Exception],
        log: logging.Logger,
        usage: str = "",
    ) -> None:
        self.protocol = protocol
        self.group = group
        self.kind = kind
        self._unknown = unknown
        self._log = log
        self._usage = usage
        self._plugins: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, plugin: T, *, replace: bool = False) -> T:
        """Make `plugin` available under `plugin.name`."""
        if not isinstance(plugin, self.protocol):
            raise TypeError(f"{plugin!r} does not implement {self.protocol.__name__}")
        known = self._plugins.get(plugin.name)
        if known is not None and not replace and known is not plugin:
            raise ValueError(f"a {self.kind} {plugin.name!r} is already registered")
        self._plugins[plugin.name] = plugin
        return plugin

    def unregister(self, name: str) -> None:
        self._plugins.pop(name, None)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            try:
                loaded = ep.load()
                self.register(loaded() if isinstance(loaded, type) else loaded)
            except Exception as exc:  # one broken plug-in does not take the others down
                self._log.error(
                    "%s %s (%s) could not be loaded: %s", self.kind, ep.name, ep.value, exc
                )

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._plugins)

    def get(self, name: str) -> T:
        plugin = self._plugins.get(name)
        if plugin is None:
            self._load_entry_points()
            plugin = self._plugins.get(name)
        if plugin is None:
            raise self._unknown(
                f"no {self.kind} {name!r}",
                f"use one of {', '.join(self.names())}{self._usage}, or register the "
                f"{self.kind} (entry point group {self.group})",
            )
        return plugin
