"""What runs on every push and every release start imports little: the pre-receive
hook's client only the standard library (it runs with `python -I -S`, no site
packages), a release's log pump neither the configuration schema nor pydantic, the control
plane no data store before it serves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tristage.edges.git import write_hook_client

PROBE = "import json, sys; {load}; print(json.dumps(sorted(sys.modules)))"


def modules(code: str, *flags: str) -> set[str]:
    out = subprocess.run([sys.executable, *flags, "-c", PROBE.format(load=code)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return set(json.loads(out))


def test_the_hook_client_runs_on_the_standard_library_alone(tmp_path: Path) -> None:
    path = write_hook_client(tmp_path)  # the copy the hook runs, and its unix_sockets copy
    deep = str(tmp_path / ("h" * 100))  # its socket has a stand-in: the module is loaded
    loaded = modules(
        f"import importlib.util as u; s = u.spec_from_file_location('c', {str(path)!r}); "
        f"m = u.module_from_spec(s); s.loader.exec_module(m); m.socket_address({deep!r})",
        "-I", "-S",
    )  # fmt: skip
    assert "socket" in loaded and "select" in loaded and "hashlib" in loaded  # (the stand-in)
    assert not {m for m in loaded if m.split(".")[0] in {"tristage", "pydantic", "typer"}}
    stdlib = set(sys.stdlib_module_names) | {"c", "__main__"}
    assert {m.split(".")[0] for m in loaded} <= stdlib | set(sys.builtin_module_names)


def test_a_release_log_pump_imports_no_configuration_schema() -> None:
    loaded = modules(
        "import tristage.edges.runtime.logpump as p; p._redactor(['s3cret-value'])", "-I"
    )
    assert "tristage.domain.redaction" in loaded
    assert not {"tristage.domain.config", "pydantic", "tristage.edges.runtime.local"} & loaded


def test_the_control_plane_serves_before_it_imports_the_data_stores() -> None:
    # what `tristage up` imports before it serves (the HTTP API's models name the data
    # services' records); the data stores come in a thread once it serves
    loaded = modules("import tristage.services.controlplane, tristage.up, tristage.http.app", "-I")
    assert "tristage.services.data_records" in loaded
    assert not {m for m in loaded if m.split(".")[0] == "psycopg"}
    assert not {m for m in loaded if m.startswith("tristage.edges.datastores")}
