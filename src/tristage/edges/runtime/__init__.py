"""Runtimes: where builds, releases and one-off commands run (the `Runtime` protocol).

Chosen by name: `sandbox` (bubblewrap + cgroups, the default), `unsandboxed`
(plain local processes, limits still enforced where cgroups are writable),
`fake` (tests). Implementations are imported when first used.
"""

from __future__ import annotations

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
