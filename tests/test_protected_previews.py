"""Protected previews over real HTTP: a preview host asks for sign-in (the environment's
password or a tristage API token), then an HttpOnly, SameSite cookie scoped to that host;
webhook ingest stays open; production stays public."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from conftest import git, run_cli
from test_deploy_helpers import ControlPlane, deployment_id, make_project, push
from tristage.domain.access import COOKIE_NAME, Access, check_cookie, make_cookie
from tristage.domain.config import parse_config
from tristage.errors import ConfigError

pytestmark = [pytest.mark.timeout(180)]
PASSWORD = "correct horse battery staple"


def protect(project: Path, how: str = '"password"') -> None:
    toml = (project / "tristage.toml").read_text()
    toml = toml.replace("[environments.preview]\n", f"[environments.preview]\nprotect = {how}\n")
    (project / "tristage.toml").write_text(toml)
    git(project, "commit", "-qam", "protect preview")


def sign_in(client: httpx.Client, port: int, host: str, secret: str) -> httpx.Response:
    return client.post(
        f"http://127.0.0.1:{port}/.tristage/sign-in",
        headers={"Host": host},
        data={"secret": secret, "next": "/?from=sign-in"},
    )


def test_a_preview_host_asks_for_sign_in_while_webhooks_and_production_stay_open(
    repo: Path, cp: ControlPlane
) -> None:
    project = make_project(repo)
    protect(project)
    r = run_cli(
        "env", "set", "TRISTAGE_ACCESS_PASSWORD", "--env", "preview", "--secret",
        cwd=project, input=PASSWORD + "\n",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    prod = deployment_id(push(project, "main").stderr)
    git(project, "checkout", "-qb", "test")
    preview = deployment_id(push(project, "test").stderr)
    host = "preview.shop.localhost"
    base = f"http://127.0.0.1:{cp.port}"
    with httpx.Client(timeout=10, trust_env=False) as c:
        assert cp.serves("shop.localhost") == prod  # production: public
        r = c.get(f"{base}/some/page?x=1", headers={"Host": host})
        assert r.status_code == 401 and 'name="secret"' in r.text
        assert 'value="/some/page?x=1"' in r.text and preview not in r.text
        # the provider's webhook path is not behind the sign-in (404: no such source here)
        r = c.post(f"{base}/.tristage/webhooks/stripe", headers={"Host": host}, content=b"{}")
        assert r.status_code == 404 and r.json()["ok"] is False
        # a wrong password: the page again, no cookie
        r = sign_in(c, cp.port, host, "wrong")
        assert r.status_code == 401 and "set-cookie" not in r.headers
        r = sign_in(c, cp.port, host, PASSWORD)
        assert r.status_code == 303 and r.headers["location"] == "/?from=sign-in"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE_NAME}=")
        attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attrs and "domain" not in attrs
        assert "SameSite=Lax" in cookie
        value = cookie.split(";")[0]
        r = c.get(f"{base}/", headers={"Host": host, "Cookie": value})
        assert r.status_code == 200 and r.json()["deployment"] == preview
        # the cookie is the host's own: another host of the environment wants its own
        r = c.get(f"{base}/", headers={"Host": f"{preview}.shop.localhost", "Cookie": value})
        assert r.status_code == 401
        # a forged cookie gets nothing
        forged = re.sub(r"\.[0-9a-f]{64}$", "." + "0" * 64, value)
        assert c.get(f"{base}/", headers={"Host": host, "Cookie": forged}).status_code == 401
        # a tristage API token signs in too
        made = run_cli("token", "create", "qa", "--role", "viewer", "--json")
        assert made.returncode == 0, made.stderr
        token = json.loads(made.stdout)["token"]
        r = sign_in(c, cp.port, f"{preview}.shop.localhost", token)
        assert r.status_code == 303 and COOKIE_NAME in r.headers["set-cookie"]


def test_protection_is_refused_on_production_unless_explicit() -> None:
    base = (
        '[project]\nname = "shop"\n'
        '[environments.production]\ntier = "production"\nbranches = ["main"]\n'
    )
    with pytest.raises(ConfigError, match="production stays public"):
        parse_config(base + 'protect = "password"\n')
    cfg = parse_config(base + 'protect = "token"\nprotect_production = true\n')
    assert cfg.environments["production"].protect == "token"
    cfg = parse_config(base + "protect = false\n")
    assert cfg.environments["production"].protect is None


def test_an_access_cookie_is_bound_to_host_environment_expiry_and_password() -> None:
    key = b"k" * 32
    a = Access("password", "pbkdf2$1$00$00")
    value = make_cookie(key, "preview.shop.localhost", "preview", a, 1000.0, False)
    value = value.split(";")[0].split("=", 1)[1]
    assert check_cookie(key, value, "preview.shop.localhost", "preview", a, 1001.0)
    assert not check_cookie(key, value, "other.shop.localhost", "preview", a, 1001.0)
    assert not check_cookie(key, value, "preview.shop.localhost", "development", a, 1001.0)
    assert not check_cookie(key, value, "preview.shop.localhost", "preview", a, 10.0**9)
    changed = Access("password", "pbkdf2$1$00$01")
    assert not check_cookie(key, value, "preview.shop.localhost", "preview", changed, 1001.0)
    assert not check_cookie(b"x" * 32, value, "preview.shop.localhost", "preview", a, 1001.0)
