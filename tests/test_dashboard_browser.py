"""The dashboard in a real browser: Debian's chromium driven by Playwright, against one
real control plane (releases, router, monitor) shared by the tests of this module: sign
in with the one-time link, promote preview → production after its preflight and roll
back, set a variable and see the rule's error, back up / drill / restore with the typed
confirmation, follow a runtime log, and see an automatic rollback. Each test needs only
the module's fixtures (none relies on another having run), so they pass in any order and
on any pytest-xdist worker; `xdist_group` keeps them on one where the scheduler honours it.

Screenshots of each step are written to `test-artifacts/dashboard/` (gitignored; the path
is printed) so a failed run can be looked at.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import GIT_ENV, git, run_cli
from test_deploy_helpers import ControlPlane, Load, commit, deployment_id, make_project, push
from tristage.api import Tristage

CHROMIUM = os.environ.get("TRISTAGE_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.xdist_group("dashboard-browser"),
    pytest.mark.skipif(
        not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()),
        reason=f"no chromium at {CHROMIUM} (apt-get install chromium, or set "
        "TRISTAGE_TEST_CHROMIUM)",
    ),
]

playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

# "/" answers 500 while the file ERRORS is in the commit; every request is logged to stdout
# with terminal colours (the runtime log page must show it as text).
APP = r"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ERRORS = Path("ERRORS").exists()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/health"):
            code = 200
        else:
            code = 500 if ERRORS else 200
            if self.path.startswith("/say/"):
                print(f"\x1b[32mGET\x1b[0m {self.path} \x1b[1m{code}\x1b[0m", flush=True)
        body = json.dumps({"deployment": os.environ.get("TRISTAGE_DEPLOYMENT")}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
server.serve_forever()
"""

MONITOR = """
[monitor]
error_rate = 0.5
min_requests = 5
window_seconds = 2
watch_seconds = 120
health_interval = 0.5
health_failures = 3
"""


@dataclass
class Stage:
    home: Path
    repo: Path
    cp: ControlPlane
    base: str
    production: str  # the first production deployment
    preview: str  # preview's live deployment
    shots: Path

    def api(self) -> Tristage:
        return Tristage(self.home, actor="test")


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    root = tmp_path_factory.mktemp("browser")
    home = root / "home"
    home.mkdir()
    repo = root / "shop"
    repo.mkdir()
    shots = ARTIFACTS
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {shots}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRISTAGE_HOME", str(home))
        mp.setenv("TRISTAGE_MASTER_KEY_FILE", str(home / "master.key"))
        mp.setenv("TRISTAGE_MONITOR_TICK", "0.1")
        for k, v in GIT_ENV.items():
            mp.setenv(k, v)
        git(repo, "init", "-q", "-b", "main")
        make_project(repo)
        toml = (repo / "tristage.toml").read_text() + MONITOR
        commit(repo, {"tristage.toml": toml, "watched.py": APP,
                      "Procfile": "web: python watched.py\n"}, "watched app")  # fmt: skip
        assert run_cli("resolve", "main", cwd=repo).returncode == 0
        cp = ControlPlane(home).start()
        try:
            r = push(repo, "main")
            assert r.returncode == 0, r.stderr
            production = deployment_id(r.stderr)
            git(repo, "checkout", "-qb", "test")
            commit(repo, {"note.txt": "preview\n"}, "a preview change")
            r = push(repo, "test")
            assert r.returncode == 0, r.stderr
            preview = deployment_id(r.stderr)
            git(repo, "checkout", "-q", "main")
            r = run_cli("open", "--json")
            assert r.returncode == 0, r.stdout + r.stderr
            base = json.loads(r.stdout)["url"].rstrip("/")
            yield Stage(home, repo, cp, base, production, preview, shots)
        finally:
            cp.stop()


@pytest.fixture(scope="module")
def browser(stage: Stage) -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser: Any, stage: Stage) -> Iterator[Any]:
    """One tab for the module, signed in as the local owner with a one-time link; no page
    it shows may break the Content-Security-Policy or throw."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    broken: list[str] = []
    tab.on("pageerror", lambda exc: broken.append(f"script error: {exc}"))
    tab.on("console", lambda m: broken.append(m.text) if "Content Security" in m.text else None)
    tab.goto(sign_in_link())
    tab.wait_for_url(stage.base + "/")
    yield tab
    context.close()
    assert not broken, broken


def shot(page: Any, stage: Stage, name: str) -> None:
    page.screenshot(path=str(stage.shots / f"{name}.png"), full_page=True)


def text(page: Any, selector: str) -> str:
    value: str = page.locator(selector).first.inner_text()
    return value


def sign_in_link() -> str:
    r = run_cli("open", "--print", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    link: str = json.loads(r.stdout)["sign_in_url"]
    return link


def test_sign_in_with_the_one_time_link(browser: Any, stage: Stage) -> None:
    r = run_cli("open", "--print")  # the link alone on stdout, what it is on stderr
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().startswith(stage.base + "/login/link?code=")
    assert "one-time sign-in link, valid for 5 minutes" in r.stderr
    plain = run_cli("open", "--print", "--no-sign-in")
    assert plain.stdout.strip() == stage.base + "/"
    link = sign_in_link()
    assert link.startswith(stage.base + "/login/link?code=")
    first, second = browser.new_context(), browser.new_context()
    try:
        page = first.new_page()
        page.goto(link)
        page.wait_for_url(stage.base + "/")
        assert "local-owner (admin)" in text(page, "header")
        cookie = next(c for c in first.cookies() if c["name"] == "tristage_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        rows = page.locator('section[data-project="shop"] tr[data-environment]').evaluate_all(
            "rows => rows.map(r => r.dataset.environment)"
        )
        assert rows == ["development", "preview", "production"]  # pipeline order
        assert "development → preview → production" in text(
            page, 'section[data-project="shop"] p.path'
        )
        shot(page, stage, "01-signed-in-overview")
        # the same link in another browser: spent
        tab = second.new_page()
        tab.goto(link)
        assert "used, expired or unknown" in tab.content()
        tab.goto(stage.base + "/")
        assert "/login" in tab.url
        shot(tab, stage, "02-link-used-twice")
    finally:
        first.close()
        second.close()


def test_promote_preview_after_the_preflight_then_roll_back(page: Any, stage: Stage) -> None:
    api = stage.api()
    try:
        for env in ("preview", "production"):
            api.variables.set("shop", "GREETING", f"hello from {env}", environments=[env])
        api.variables.set("shop", "PREVIEW_ONLY_TOKEN", "s3cr3t-preview-only",
                          environments=["preview"], secret=True)  # fmt: skip
    finally:
        api.close()
    page.goto(stage.base + "/projects/shop")
    page.get_by_role("link", name="Promote preview's live deployment to production…").click()
    page.wait_for_url("**/projects/shop/promote?from=preview")
    facts = text(page, "dl.preflight")
    assert stage.preview in facts and "artifact is reused" in facts
    before = stage.cp.serves("shop.localhost")
    assert before is not None and before in facts  # what production serves now
    greeting = text(page, 'table.variable-diff tr[data-variable="GREETING"]')
    assert "differs" in greeting and "hello from preview" in greeting
    assert "hello from production" in greeting
    secret = text(page, 'table.variable-diff tr[data-variable="PREVIEW_ONLY_TOKEN"]')
    assert "only in preview" in secret and "secret" in secret
    assert "s3cr3t-preview-only" not in page.content()  # masked
    # the deploy engine's preflight findings (names only), warnings do not stop it
    checks = text(page, 'table.checks tr[data-kind="variables"]')
    assert "warning" in checks and "PREVIEW_ONLY_TOKEN" in checks
    shot(page, stage, "03-preflight")
    page.get_by_role("button", name=f"Promote {stage.preview} to production").click()
    page.wait_for_selector("p.notice")
    notice = text(page, "p.notice")
    assert notice.startswith("Production now serves "), notice
    promoted = notice.removeprefix("Production now serves ").rstrip(".")
    assert stage.cp.serves("shop.localhost") == promoted != before
    prod_row = text(page, 'tr[data-environment="production"]')
    assert promoted in prod_row and "healthy" in prod_row
    shot(page, stage, "04-promoted")

    # roll back from the deployments page (after the browser's confirmation)
    page.goto(stage.base + "/projects/shop/deployments")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Roll back production").click()
    page.wait_for_selector("p.notice")
    assert text(page, "p.notice") == f"Rolled production back to {before}."
    assert stage.cp.serves("shop.localhost") == before
    row = text(page, f'tr[data-deployment="{promoted}"]')
    assert "rolled back" in row and "by token:local-owner" in row and "ready" not in row
    shot(page, stage, "05-rolled-back")


def test_set_a_variable_and_see_the_rule_error(page: Any, stage: Stage) -> None:
    page.goto(stage.base + "/projects/shop/variables?environment=preview")
    form = page.locator("#set-variable")
    form.locator('input[name="name"]').fill("STRIPE_SECRET_KEY")
    form.locator('input[name="value"]').fill("sk_live_51Habcdefghijklmnop")
    form.locator('select[name="secret"]').select_option("yes")
    form.get_by_role("button", name="Set").click()
    page.wait_for_selector("p.notice")
    row = page.locator('tr[data-variable="STRIPE_SECRET_KEY"]')
    error = row.locator(".finding-error").first.inner_text()
    assert "live" in error.lower() and "stripe" in error.lower(), error
    assert "sk_live_51H" not in page.content()  # the secret is masked
    shot(page, stage, "06-variable-rule-error")
    # changing it to a test key clears the error next to it
    row.locator('input[name="value"]').fill("sk_test_51Habcdefghijklmnop")
    row.get_by_role("button", name="Save").click()
    page.wait_for_selector("p.notice")
    fixed = page.locator('tr[data-variable="STRIPE_SECRET_KEY"]')
    assert fixed.locator(".finding-error").count() == 0
    assert "ok" in fixed.locator("td.findings").inner_text()


def test_back_up_drill_and_restore_with_the_typed_confirmation(page: Any, stage: Stage) -> None:
    page.goto(stage.base + "/projects/shop/backups")
    section = page.locator('section[data-environment="production"]')
    section.get_by_role("button", name="Back up now").click()
    page.wait_for_selector("p.notice")
    notice = text(page, "p.notice")
    assert notice.startswith("Backup ") and "taken and verified" in notice
    backup = notice.split()[1]
    section = page.locator('section[data-environment="production"]')
    section.get_by_role("button", name="Drill").click()
    page.wait_for_selector("p.notice")
    assert text(page, "p.notice").startswith("Drill passed")
    row = page.locator(f'section[data-environment="production"] tr[data-backup="{backup}"]')
    row.locator('input[name="confirm"]').fill("preview")  # the wrong name
    row.get_by_role("button", name="Restore").click()
    page.wait_for_selector("p.error")
    assert "not confirmed" in text(page, "p.error")
    shot(page, stage, "07-restore-refused")
    row = page.locator(f'section[data-environment="production"] tr[data-backup="{backup}"]')
    row.locator('input[name="confirm"]').fill("production")
    row.get_by_role("button", name="Restore").click()
    page.wait_for_selector("p.notice")
    notice = "Restored {backup}; what it replaced is kept (db restore --undo, or a safety backup)."
    assert text(page, "p.notice") == notice.format(backup=backup)
    shot(page, stage, "08-restored")
    api = stage.api()
    try:
        events = api.audit.events(project="shop", action="db.restore*")
    finally:
        api.close()
    assert events and events[0].actor == "token:local-owner"


def test_the_runtime_log_follows(page: Any, stage: Stage) -> None:
    dep = stage.cp.serves("shop.localhost")
    page.goto(f"{stage.base}/projects/shop/deployments/{dep}/log?kind=runtime")
    assert page.locator("pre[data-follow]").count() == 1
    assert stage.cp.get("shop.localhost", "/say/followed-line").status_code == 200
    page.wait_for_function(
        "() => document.getElementById('log').textContent.includes('/say/followed-line')"
    )
    log = text(page, "#log")
    assert "GET /say/followed-line 200" in log and "\x1b" not in log and "[32m" not in log
    shot(page, stage, "09-runtime-log")


def test_an_automatic_rollback_shows_on_the_overview_and_the_deployment(
    page: Any, stage: Stage
) -> None:
    good = stage.cp.serves("shop.localhost")
    commit(stage.repo, {"ERRORS": "1\n"}, "answers 500")
    r = push(stage.repo, "main")
    assert r.returncode == 0, r.stderr
    bad = deployment_id(r.stderr)
    with Load(stage.cp.port, "shop.localhost"):
        page.goto(stage.base + "/projects/shop")
        page.wait_for_selector(f'p.rollback[data-rolled-back="{bad}"]', timeout=60_000)
    assert stage.cp.serves("shop.localhost") == good
    banner = text(page, f'p.rollback[data-rolled-back="{bad}"]')
    assert "Automatic rollback" in banner and good in banner and "error rate" in banner
    shot(page, stage, "10-automatic-rollback-overview")
    page.goto(stage.base + "/projects/shop/alerts")
    alert = text(page, 'tr[data-kind="auto_rollback"]')
    assert bad in alert and "automatic rollback" in alert and f"rolled back to {good}" in alert
    shot(page, stage, "11-alerts")
    page.goto(f"{stage.base}/projects/shop/deployments/{bad}/log")
    assert "Rolled back automatically" in text(page, "p.rollback")
    assert "rolled back" in text(page, "dl.facts")
    page.goto(stage.base + "/projects/shop/deployments?environment=production")
    row = text(page, f'tr[data-deployment="{bad}"]')
    assert "rolled back" in row and "automatically" in row and "ready" not in row
    shot(page, stage, "12-rolled-back-deployment")


def test_the_header_stays_on_one_line_with_many_projects(
    page: Any, stage: Stage, tmp_path: Path
) -> None:
    api = stage.api()
    try:
        for i in range(12):
            other = tmp_path / f"a-project-with-a-long-name-{i}"
            other.mkdir()
            git(other, "init", "-q", "-b", "main")
            api.init_project(other, name=f"a-project-with-a-long-name-{i}")
    finally:
        api.close()
    page.goto(stage.base + "/projects/shop/deployments")
    header = page.locator("header").bounding_box()
    assert header["height"] < 60, header
    tops = page.locator("header nav a").evaluate_all(
        "links => links.map(a => Math.round(a.getBoundingClientRect().top))"
    )
    assert len(tops) >= 7 and len(set(tops)) == 1, tops
    shot(page, stage, "13-many-projects")
    page.locator("#project-switcher").select_option("a-project-with-a-long-name-7")
    page.wait_for_url("**/projects/a-project-with-a-long-name-7")
    assert "a-project-with-a-long-name-7: environments" in text(page, "h1")
