"""`python -m tristage.edges.runtime.logpump LOG -- CMD...`: run a release, log its output.

The pump is the session leader of a release: it starts the app as its child with
stdout/stderr on a pipe, copies that output line by line into LOG (redacted), and
exits with the app's exit code. Because it is not a child of the control plane's
pipes, the app's output keeps being captured when the control plane restarts.
The values to redact are the project's secret values, read from the platform home
(`TRISTAGE_PUMP_HOME`, `TRISTAGE_PUMP_PROJECT`) after the app has started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def _redactor(home: str | None, project: str | None) -> Callable[[str], str]:
    if not project or not home:
        return lambda s: s
    try:
        from tristage.api import Tristage

        api = Tristage(Path(home), actor="tristage")
        return api.variables.redactor(project)
    except Exception:  # the pump must never take the release down
        return lambda s: s


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str]) -> int:
    # SIGTERM reaches the whole process group: the app stops, the pump drains to EOF.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path = Path(argv[1])
    cmd = argv[argv.index("--") + 1 :]
    env = dict(os.environ)
    home = env.pop("TRISTAGE_PUMP_HOME", None)
    project = env.pop("TRISTAGE_PUMP_PROJECT", None)
    shell = env.pop("TRISTAGE_PUMP_SHELL", "") == "1"
    app = subprocess.Popen(
        cmd[0] if shell else cmd,
        shell=shell,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_default_signals,
    )
    redact = _redactor(home, project)
    assert app.stdout is not None
    with path.open("a", encoding="utf-8") as out:
        for raw in app.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {redact(line)}\n")
            out.flush()
    return app.wait()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
