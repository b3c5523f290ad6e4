"""Runtimes: where builds, releases and one-off commands run (the `Runtime` protocol).

Chosen by name: `sandbox` (bubblewrap + cgroups, the default), `unsandboxed`
(plain local processes, limits still enforced where cgroups are writable),
`fake` (tests). Implementations are imported when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import (
        Handle,
        Mount,
        ProcessSpec,
        Runtime,
        RuntimeError_,
        SandboxUnavailable,
        State,
        Status,
    )
    from .local import free_port, proc_start

# imported when first asked for: a release's log pump (`logpump`, a module of this
# package started for every release) then imports only what it uses itself
_LAZY = {
    "Handle": "base", "Mount": "base", "ProcessSpec": "base", "Runtime": "base",
    "RuntimeError_": "base", "SandboxUnavailable": "base", "State": "base", "Status": "base",
    "free_port": "local", "proc_start": "local",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


NAMES = ("sandbox", "unsandboxed", "fake")


def open_runtime(name: str) -> Runtime:
    if name == "sandbox":
        from .local import LocalRuntime

        return LocalRuntime(sandboxed=True)
    if name == "unsandboxed":
        from .local import LocalRuntime

        return LocalRuntime(sandboxed=False)
    if name == "fake":
        from .fake import FakeRuntime

        return FakeRuntime()
    from .base import RuntimeError_

    raise RuntimeError_(f"unknown runtime {name!r}", f"use one of: {', '.join(NAMES)}")


__all__ = [
    "NAMES",
    "Handle",
    "Mount",
    "ProcessSpec",
    "Runtime",
    "RuntimeError_",
    "SandboxUnavailable",
    "State",
    "Status",
    "free_port",
    "open_runtime",
    "proc_start",
]
