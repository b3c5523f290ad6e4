"""The build log: what a real build step prints reaches the file redacted, in every form."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from tristage.domain.redaction import build_redactor, flatten
from tristage.edges.builders import BuildContext, BuildFailed, BuildLog
from tristage.edges.runtime.local import LocalRuntime

SECRET = "sk_live_51Hx0q2eZvKYlo2C8xN3qYv7"


def _context(tmp_path: Path, log: BuildLog) -> BuildContext:
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    return BuildContext(
        artifact=artifact,
        env={"PATH": "/usr/bin:/bin"},
        log=log,
        cache=tmp_path,
        runtime=LocalRuntime(sandboxed=False),
    )


def test_a_secret_a_build_step_prints_split_or_encoded_is_masked(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text(f"STRIPE={SECRET}\n" * 3)
    log = BuildLog(tmp_path / "build.log", build_redactor([SECRET]))
    ctx = _context(tmp_path, log)
    script = (
        f"printf 'token {SECRET[:11]}\\n{SECRET[11:]} ok\\n'; "  # across two lines
        f"printf '{SECRET[:20]}'; sleep 0.3; printf '{SECRET[20:]}\\n'; "  # two writes
        f"base64 -w 40 {tmp_path / 'secret.txt'}; "  # wrapped base64 of a file holding it
        f"echo '{SECRET}' | od -An -tx1 | tr -d ' \\n'; echo"  # hex
    )
    ctx.step("print the secret", script)
    log.close()
    text = (tmp_path / "build.log").read_text()
    assert SECRET not in flatten(text), text
    assert SECRET[:11] not in text and SECRET[11:] not in text
    assert SECRET.encode().hex() not in flatten(text)
    blob = "".join(line.strip() for line in text.splitlines() if "ok" not in line)
    assert base64.b64encode(SECRET.encode()).decode()[4:-4] not in blob
    assert "**** ok" in text and "done in" in text


def test_a_held_tail_is_written_soon_and_before_the_next_line(tmp_path: Path) -> None:
    path = tmp_path / "build.log"
    log = BuildLog(path, build_redactor([SECRET]))
    log.output("waiting for sk_live")  # could go on with the rest of the secret
    assert "sk_live" not in path.read_text()
    deadline = time.monotonic() + 5
    while "sk_live" not in path.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.read_text() == "  waiting for sk_live\n"  # written unchanged, not lost
    log.output("sk_live_51Hx")
    log.line("error: the build failed")  # the platform's own line comes after, in order
    assert path.read_text().endswith("  sk_live_51Hx\nerror: the build failed\n")
    log.close()


def test_what_a_failing_step_printed_comes_before_the_error(tmp_path: Path) -> None:
    log = BuildLog(tmp_path / "build.log", build_redactor([SECRET]))
    ctx = _context(tmp_path, log)
    with pytest.raises(BuildFailed) as info:
        ctx.step("fail", "printf 'last words sk_l'; exit 3")
    log.line(f"error: {info.value}")  # as the deploy pipeline does
    text = (tmp_path / "build.log").read_text()
    assert text.endswith(
        "  last words sk_l\nerror: fail failed with exit code 3 (see the build log above)\n"
    )
    log.close()


def test_a_plain_callable_still_redacts_line_by_line(tmp_path: Path) -> None:
    log = BuildLog(tmp_path / "build.log", lambda s: s.replace("hush", "****"))
    log.output("say hush")
    log.line("hush done")
    log.close()
    assert (tmp_path / "build.log").read_text() == "  say ****\n**** done\n"


PRINT_SH = """#!/bin/sh
printf 'key=%s\\n' "$API_TOKEN"
printf '{"k": "%s"}\\n' "$API_TOKEN"
printf 'Authorization: Basic '; printf 'user:%s' "$API_TOKEN" | base64 -w0; echo
printf '%s' "$API_TOKEN" | od -An -tx1 | tr -d ' \\n'; echo
printf '%s\\n' "$API_TOKEN" | fold -w 9
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_build_that_prints_a_secret_in_many_forms_shows_none_of_them(
    repo: Path, home: Path
) -> None:
    from conftest import git, run_cli
    from test_deploy_helpers import ControlPlane, deployment_id, make_project, push

    token = "tok_9f8e7d6c5b4a3210zyxwvu"
    project = make_project(repo)
    (project / "print.sh").write_text(PRINT_SH)
    toml = (project / "tristage.toml").read_text()
    (project / "tristage.toml").write_text(
        toml.replace("[app]\n", '[app]\nbuild = "sh print.sh"\n')
    )
    git(project, "add", "-A")
    git(project, "commit", "-qm", "print the token")
    r = run_cli(
        "env", "set", "API_TOKEN", token, "--env", "production", "--secret", "--build", cwd=project
    )
    assert r.returncode == 0, r.stderr
    plane = ControlPlane(home).start()
    try:
        pushed = push(project, "main")
        dep = deployment_id(pushed.stderr)
        logs = run_cli("logs", dep, "--build", cwd=project)
        assert logs.returncode == 0, logs.stderr
    finally:
        plane.stop()
    for shown in (pushed.stderr, logs.stdout):
        assert "key=****" in shown, shown
        assert shown.count("****") >= 7, shown  # each form, each line of the folded one
        flat = flatten(shown.replace("remote: ", ""))
        for form in (
            token,
            token.encode().hex(),
            base64.b64encode(f"user:{token}".encode()).decode()[8:-4],
            token[:9],
            token[9:18],
        ):
            assert form not in flat, (form, shown)
