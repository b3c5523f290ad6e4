"""The `Runtime` protocol: where builds, releases and one-off commands run.

A runtime starts a `ProcessSpec` (a command, the directories it may see, its
environment, its limits) and hands back a `Handle`: opaque JSON that the control
plane stores and gives back to `status`, `stop` and `adopt`, so a container or
Kubernetes runtime is another implementation of the same protocol. `run` executes
a one-off to completion (a build step, a migration, `tristage run`), streaming its
output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from ...domain.limits import Limits
from ...errors import TristageError

Handle = dict[str, Any]  # opaque to everything but the runtime that made it

# The platform's health probes ask for the health path with this query, and a release's
# log drops the lines that contain it (the app's access log of them): probes every few
# seconds would otherwise be most of an idle app's log.
PROBE_MARK = "tristage-probe=1"


def probe_path(path: str) -> str:
    """The health path as the platform's probes request it."""
    return f"{path}{'&' if '?' in path else '?'}{PROBE_MARK}"


class RuntimeError_(TristageError):
    """A runtime could not start or control a process."""


class SandboxUnavailable(RuntimeError_):
    """The sandbox cannot run on this machine (no bwrap, no user namespaces, no cgroups)."""


@dataclass(frozen=True)
class Mount:
    """A host directory or file visible inside the sandbox at `target` (default: same path)."""

    source: Path
    target: Path | None = None
    writable: bool = False

    @property
    def inside(self) -> Path:
        return self.target or self.source


@dataclass(frozen=True)
class ProcessSpec:
    """One process group to run: what it runs, sees and may use."""

    name: str  # a short id (the deployment id); names the cgroup
    command: str | tuple[str, ...]  # a string runs through /bin/sh -c
    cwd: Path
    env: Mapping[str, str]
    mounts: tuple[Mount, ...] = ()
    limits: Limits = field(default_factory=Limits)
    log_path: Path | None = None  # a release's output, redacted, appended here
    redact: tuple[str, ...] = ()  # secret values never written to the log
    log_prefix: str = ""  # before each line of the log (`[worker.1] `): several processes
    drop_lines: tuple[str, ...] = ()  # lines of the app containing one are not logged
    scope: str = ""  # whose process this is (a platform home): see `Runtime.reap`
    # a one-off with a terminal (`Runtime.run`): its stdin, stdout and stderr are a new
    # pseudo-terminal; the bytes read from this fd are typed into it, and its output is
    # handed on as it comes (chunks, not lines); `terminal_size` is (rows, columns)
    terminal_input: int | None = None
    terminal_size: tuple[int, int] | None = None

    def argv(self) -> list[str]:
        if isinstance(self.command, str):
            return ["/bin/sh", "-c", self.command]
        return list(self.command)


class State(StrEnum):
    running = "running"
    exited = "exited"  # the process group is gone
    orphaned = "orphaned"  # the supervising process died, the app is still there
    unknown = "unknown"  # could not tell (e.g. out of file descriptors): ask again later


@dataclass(frozen=True)
class Status:
    state: State
    exit_code: int | None = None
    oom_killed: bool = False
    detail: str = ""

    @property
    def gone(self) -> bool:
        return self.state is State.exited

    def describe(self) -> str:
        if self.oom_killed:
            return f"killed: out of memory{f' ({self.detail})' if self.detail else ''}"
        if self.exit_code is not None:
            if self.exit_code < 0:
                return f"killed by signal {-self.exit_code}"
            return f"exited with exit code {self.exit_code}"
        return self.detail or self.state.value


class Runtime(Protocol):
    """What the control plane asks of the place releases run."""

    name: str
    sandboxed: bool

    def start(self, spec: ProcessSpec) -> Handle:
        """Start `spec` in the background (it outlives the control plane)."""
        ...

    def status(self, handle: Handle) -> Status: ...

    def stop(self, handle: Handle, grace: float = 5.0) -> Status:
        """SIGTERM the whole group, SIGKILL what is left after `grace`; nothing survives."""
        ...

    def adopt(self, handle: Handle) -> bool:
        """After a control plane restart: True if the release runs and is supervised;
        a release whose supervisor died is stopped (never left running twice)."""
        ...

    def run(
        self,
        spec: ProcessSpec,
        on_output: Callable[[str], None],
        timeout: float,
        cancel: Callable[[], bool] = lambda: False,
    ) -> Status:
        """Run a one-off to completion, each output line to `on_output`."""
        ...

    def reap(self, scope: str, known: Sequence[Handle]) -> int:
        """Stop every process group of `scope` that none of `known` names (one a crash
        left behind between starting it and recording it); how many were stopped."""
        ...
