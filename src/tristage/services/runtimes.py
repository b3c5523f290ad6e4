"""Which runtime a deployment's processes run in, by policy.

The sandbox is the default everywhere. Where it cannot run on this machine
(`tristage doctor` says why), development runs unsandboxed with a warning on
every start, and preview and production refuse to start unless the project sets
`[policy] sandbox = "off"` (reported by `tristage check`, audited at every start).
`TRISTAGE_RUNTIME` names the runtime to use instead (e.g. `unsandboxed`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from ..domain.config import PipelineConfig, Tier
from ..edges.runtime import Handle, Runtime, SandboxUnavailable, open_runtime
from ..errors import TristageError


class SandboxRequired(TristageError):
    """Preview and production never run unsandboxed unless the policy says so."""


@dataclass(frozen=True)
class Choice:
    runtime: Runtime
    warning: str | None = None  # said at every start (and audited) when not sandboxed


class Runtimes:
    """The runtimes of this control plane, by name; handles name the one that made them."""

    def __init__(self, forced: str | None = None) -> None:
        self.forced = forced if forced is not None else os.environ.get("TRISTAGE_RUNTIME")
        self._by_name: dict[str, Runtime] = {}
        self._lock = threading.Lock()
        self._problem: str | None = None
        self._probed = False

    def get(self, name: str) -> Runtime:
        with self._lock:
            rt = self._by_name.get(name)
            if rt is None:
                rt = self._by_name[name] = open_runtime(name)
            return rt

    def add(self, runtime: Runtime) -> None:
        """Use this instance for its name (tests hand in a fake)."""
        with self._lock:
            self._by_name[runtime.name] = runtime

    def opened(self) -> list[Runtime]:
        """The runtimes used so far, and the local one (its groups are this machine's)."""
        self.get(self.forced or "unsandboxed")
        with self._lock:
            return list(self._by_name.values())

    def for_handle(self, handle: Handle) -> Runtime:
        return self.get(str(handle.get("runtime") or "unsandboxed"))

    def sandbox_problem(self) -> str | None:
        """Why the sandbox cannot run here, None when it can (probed once)."""
        if not self._probed:
            try:
                check = getattr(self.get("sandbox"), "check", None)
                if check is not None:
                    check()
            except SandboxUnavailable as exc:
                self._problem = exc.message
            self._probed = True
        return self._problem

    def choose(self, config: PipelineConfig, environment: str) -> Choice:
        if self.forced:
            rt = self.get(self.forced)
            if rt.sandboxed:
                return Choice(rt)
            return Choice(rt, f"running unsandboxed: TRISTAGE_RUNTIME={self.forced}")
        problem = self.sandbox_problem()
        if problem is None:
            return Choice(self.get("sandbox"))
        tier = config.env(environment).tier
        if tier is Tier.development or config.policy.sandbox == "off":
            return Choice(
                self.get("unsandboxed"),
                f"running {environment} unsandboxed: {problem}; its code can read the "
                "platform's files (run 'tristage doctor')",
            )
        raise SandboxRequired(
            f"{environment} ({tier.value}) must run in the sandbox, which cannot run here: "
            f"{problem}",
            "run 'tristage doctor' for how to fix it, or set [policy] sandbox = \"off\" in "
            "tristage.toml to accept the risk",
        )
