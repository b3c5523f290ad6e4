"""Public host names per environment: `domains` and `branch_domain` in tristage.toml,
the host table they add to, and what the app is told (`TRISTAGE_URL`, `TRISTAGE_HOSTS`)."""

from __future__ import annotations

import pytest

from tristage.api import Tristage
from tristage.domain import aliases
from tristage.domain.config import parse_config
from tristage.errors import ConfigError

BASE = """
[project]
name = "shop"
[environments.development]
tier = "development"
branches = ["dev"]
[environments.preview]
tier = "preview"
branches = ["test", "feature/*"]
{preview}
[environments.production]
tier = "production"
branches = ["main"]
{production}
"""


def config(preview: str = "", production: str = "") -> str:
    return BASE.format(preview=preview, production=production)


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    return {p.path: p.message for p in exc.value.problems}


def test_domains_and_branch_pattern_are_read_and_normalized() -> None:
    cfg = parse_config(
        config(
            preview='domains = ["Staging.Shop.Example.com."]\n'
            'branch_domain = "{branch}.preview.shop.example.com"',
            production='domains = ["shop.example.com", "www.shop.example.com"]',
        )
    )
    names = cfg.public_names()
    assert names["production"] == aliases.PublicNames(
        ("shop.example.com", "www.shop.example.com"), None
    )
    assert names["production"].canonical == "shop.example.com"
    assert names["preview"].domains == ("staging.shop.example.com",)
    assert names["preview"].branch_domain == "{branch}.preview.shop.example.com"
    assert "development" not in names  # nothing public: only its *.localhost hosts


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('"https://shop.example.com"', "no scheme, port or path"),
        ('"shop.example.com:443"', "no scheme, port or path"),
        ('"*.shop.example.com"', "wildcards"),
        ('"203.0.113.7"', "IP address"),
        ('"shop.localhost"', "already answers on *.localhost"),
        ('"shop"', "single label"),
        ('"-shop.example.com"', "lowercase letters, digits or '-'"),
        ('"shop_x.example.com"', "lowercase letters, digits or '-'"),
        ('""', "empty host name"),
    ],
)
def test_a_bad_host_name_is_one_clear_problem_at_its_key(value: str, says: str) -> None:
    found = problems(config(production=f"domains = ['ok.example.com', {value}]"))
    assert list(found) == ["environments.production.domains"]
    assert says in found["environments.production.domains"]


def test_a_domain_listed_twice_in_one_environment() -> None:
    found = problems(config(production='domains = ["a.example.com", "A.example.com"]'))
    assert "'a.example.com' is listed twice" in found["environments.production.domains"]


def test_a_domain_claimed_by_two_environments_names_both() -> None:
    found = problems(
        config(
            preview='domains = ["staging.example.com", "shop.example.com"]',
            production='domains = ["shop.example.com"]',
        )
    )
    message = found["environments.production.domains[0]"]
    assert "'shop.example.com' is also a domain of environment 'preview'" in message
    assert "a host serves one environment" in message


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ('"preview.shop.example.com"', "must contain {branch} exactly once"),
        ('"{branch}.{branch}.example.com"', "must contain {branch} exactly once"),
        ('"x.{branch}.example.com"', "must be in the first label"),
        ('"{branch}"', "no domain after its first label"),
        ('"{branch}-a-very-long-prefix.example.com"', "too little room for a branch name"),
        ('"{branch}.exa mple.com"', "is not a host pattern"),
    ],
)
def test_a_bad_branch_pattern_says_how_to_write_one(pattern: str, says: str) -> None:
    found = problems(config(preview=f"branch_domain = {pattern}"))
    assert says in found["environments.preview.branch_domain"]
    assert "{branch}" in found["environments.preview.branch_domain"]


def test_a_branch_pattern_shared_by_two_environments_is_refused() -> None:
    pattern = 'branch_domain = "{branch}.p.example.com"'
    found = problems(config(preview=pattern, production=pattern))
    assert (
        "also the branch_domain of environment 'preview'"
        in found["environments.production.branch_domain"]
    )


def test_the_host_table_gains_domains_and_branch_and_deployment_hosts() -> None:
    public = {
        "production": aliases.PublicNames(("shop.example.com", "www.shop.example.com")),
        "preview": aliases.PublicNames(
            ("staging.shop.example.com",), "{branch}.preview.shop.example.com"
        ),
    }
    deps = [
        aliases.DeploymentRef("1abcdefg", "production", "main"),
        aliases.DeploymentRef("3abcdefg", "preview", "feature/Log-in"),
    ]
    table = aliases.host_table(
        "shop", "production", ["preview", "production"],
        {"production": "1abcdefg", "preview": "3abcdefg"},
        {d.branch: d for d in deps}, deps, public,
    )  # fmt: skip
    assert table["shop.example.com"] == table["shop.localhost"]
    assert table["www.shop.example.com"].deployment == "1abcdefg"
    assert table["staging.shop.example.com"].environment == "preview"
    assert table["feature-log-in.preview.shop.example.com"].deployment == "3abcdefg"
    assert table["3abcdefg.preview.shop.example.com"].deployment == "3abcdefg"
    # production has no pattern: its branch and deployment hosts stay local
    assert "main.preview.shop.example.com" not in table
    assert "1abcdefg.preview.shop.example.com" not in table
    assert table["feature-log-in.shop.localhost"].deployment == "3abcdefg"  # local ones stay
    # without public names the table is what it was
    plain = aliases.host_table("shop", "production", ["preview", "production"], {}, {}, deps)
    assert all(h.endswith(".localhost") for h in plain)


def test_a_configured_domain_wins_over_a_branch_host_of_the_same_name() -> None:
    public = {
        "production": aliases.PublicNames(("www.p.example.com",)),
        "preview": aliases.PublicNames((), "{branch}.p.example.com"),
    }
    dep = aliases.DeploymentRef("3abcdefg", "preview", "www")
    table = aliases.host_table(
        "shop", "production", ["preview", "production"], {"production": "1x"},
        {"www": dep}, [dep], public,
    )  # fmt: skip
    assert table["www.p.example.com"].environment == "production"


def test_release_hosts_and_url_for_the_app() -> None:
    names = aliases.PublicNames(("staging.example.com",), "{branch}.pv.example.com")
    hosts = aliases.release_hosts("shop", "preview", "production", "3abc", "feature/x", names)
    assert hosts == [
        "staging.example.com",
        "feature-x.pv.example.com",
        "3abc.pv.example.com",
        "preview.shop.localhost",
        "feature-x.shop.localhost",
        "3abc.shop.localhost",
    ]
    assert aliases.public_url(names) == "https://staging.example.com"
    assert aliases.public_url(aliases.NO_NAMES) is None
    prod = aliases.release_hosts("shop", "production", "production", "1abc", "main")
    assert prod == [
        "production.shop.localhost", "shop.localhost", "main.shop.localhost", "1abc.shop.localhost"
    ]  # fmt: skip


def test_a_domain_two_projects_claim_stays_with_the_first_and_is_reported_once(
    api: Tristage,
) -> None:
    from tristage.services.controlplane import ControlPlane
    from tristage.services.releases import ProjectRoutes

    lines: list[str] = []
    cp = ControlPlane(api, "127.0.0.1", 0, log=lines.append)
    names = {"production": aliases.PublicNames(("shop.example.com",))}
    routes = [
        ProjectRoutes(p, "production", ("production",), {"production": None}, {}, [], names)
        for p in ("alpha", "beta")
    ]
    try:
        for _ in range(3):
            cp._install_routes(routes, {})
    finally:
        cp._store.shutdown()
    route = cp.table.lookup("shop.example.com")
    assert route is not None and route.project == "alpha"
    assert cp.table.lookup("beta.localhost") is not None  # its own hosts are unaffected
    warned = [line for line in lines if "shop.example.com is a domain of projects" in line]
    assert len(warned) == 1 and warned[0].endswith(
        "warning: shop.example.com is a domain of projects alpha and beta; alpha keeps it "
        "(remove it from one tristage.toml)"
    )
