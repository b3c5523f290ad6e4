"""Projects: init, registration and the stored configuration (the `projects` table,
through `project_records`).

A project is registered the first time a command runs in its working copy, and its
`tristage.toml` is stored with it on every run, so the control plane and the HTTP API
act on the last configuration the CLI validated. Each project has a random 256-bit key
(sanitize transforms and variable scrubbing are keyed by it), kept in the state store
sealed by the secrets box (AES-256-GCM under the master key, bound to the project): the
state store alone cannot re-identify sanitized data. A key stored in plain text by an
earlier version is sealed the first time it is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..domain.config import FILE_NAME, PipelineConfig, find_config, load_config, parse_config
from ..domain.presets import Preset, render
from ..edges.secrets import MAGIC
from ..errors import Conflict, NotFound, UsageError
from .project_records import project_names, project_row, reseal_key, save_project

if TYPE_CHECKING:
    from ..api import Tristage


@dataclass(frozen=True)
class InitResult:
    path: Path
    project: str
    preset: str
    notes: list[str]  # what else init set up (hosted repository, git remote)


@dataclass(frozen=True)
class ProjectRef:
    name: str
    root: Path | None
    config: PipelineConfig


def default_name(root: Path) -> str:
    """A project name from a directory name: lowercase, dashes, starting with a letter."""
    name = re.sub(r"[^a-z0-9-]+", "-", root.name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"app-{name}".strip("-")
    return name[:40]


class ProjectService:
    def __init__(self, api: Tristage) -> None:
        self.api = api
        self._configs: dict[str, tuple[float, PipelineConfig]] = {}

    def init(
        self,
        root: Path,
        preset: Preset = "professional",
        name: str | None = None,
        force: bool = False,
    ) -> InitResult:
        root = root.resolve()
        if not (root / ".git").exists():
            raise UsageError(
                f"{root} is not a git working copy", "run 'git init' first, or cd into your repo"
            )
        path = root / FILE_NAME
        if path.exists() and not force:
            raise Conflict(f"{path} already exists", "pass --force to overwrite it")
        project = name or default_name(root)
        text = render(preset, project)
        config = parse_config(text, str(path))  # a preset must always validate
        path.write_text(text, encoding="utf-8")
        self.register(config, root, text)
        notes = self.api.deploys.setup_git(project, root)
        self.api.audit.record(
            "project.init", project=project, details={"preset": preset, "root": str(root)}
        )
        return InitResult(path=path, project=project, preset=preset, notes=notes)

    def open(self, start: Path) -> ProjectRef:
        """The project of the working copy at `start` (walking up), registered/updated."""
        path = find_config(start.resolve())
        if path is None:
            raise NotFound(
                f"no {FILE_NAME} in {start} or its parents",
                "run 'tristage init' in your project's git working copy",
            )
        config = load_config(path)
        self.register(config, path.parent, path.read_text(encoding="utf-8"))
        return ProjectRef(config.project.name, path.parent, config)

    def register(self, config: PipelineConfig, root: Path, text: str) -> None:
        name = config.project.name
        if save_project(self.api.store, name, str(root), text, lambda k: self._seal(name, k)):
            self._configs.pop(name, None)
        row = project_row(self.api.store, name)
        if row is not None and not bytes(row["key_salt"]).startswith(MAGIC):
            self.salt(name)  # seals a key an earlier version stored in plain text

    def names(self) -> list[str]:
        """Every registered project's name, in name order."""
        return project_names(self.api.store)

    def get(self, name: str) -> ProjectRef:
        row = project_row(self.api.store, name)
        if row is None:
            raise NotFound(f"no project named {name!r}", "run 'tristage init' in its working copy")
        return ProjectRef(name, Path(row["root"]) if row["root"] else None, self.config(name))

    def config(self, project: str) -> PipelineConfig:
        """The project's last validated configuration (as stored by init/open)."""
        row = project_row(self.api.store, project)
        if row is None:
            raise NotFound(f"no project named {project!r}", "run 'tristage init' first")
        cached = self._configs.get(project)
        if cached and cached[0] == row["updated_at"]:
            return cached[1]
        config = parse_config(row["config"], f"{project}/{FILE_NAME}")
        self._configs[project] = (row["updated_at"], config)
        return config

    def salt(self, project: str) -> bytes:
        row = project_row(self.api.store, project)
        if row is None:
            raise NotFound(
                f"no project named {project!r}",
                "run 'tristage init' (or any command) in its working copy to register it",
            )
        blob = bytes(row["key_salt"])
        box = self.api.secret_box
        if blob.startswith(MAGIC):
            return box.decrypt(blob, _key_context(project))
        # a key stored in plain text by an earlier version: seal it where it is
        if reseal_key(self.api.store, project, blob, self._seal(project, blob)):
            self.api.audit.record("project.key.sealed", project=project)
        return blob

    def _seal(self, project: str, key: bytes) -> bytes:
        return self.api.secret_box.encrypt(key, _key_context(project))


def _key_context(project: str) -> bytes:
    return f"project-key:{project}".encode()
