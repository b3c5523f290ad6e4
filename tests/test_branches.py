from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tristage.domain.branches import (
    follows_host,
    host_branches,
    is_glob,
    moves_host,
    pattern_matches,
    resolve,
    rules,
    slug,
)
from tristage.domain.config import PipelineConfig, parse_config
from tristage.domain.presets import render

SIMPLE = parse_config(render("simple", "myapp"))
PRO = parse_config(render("professional", "myapp"))


def test_guide_mapping() -> None:
    for cfg in (SIMPLE, PRO):
        assert resolve(cfg, "feature/login").environment == "development"  # type: ignore[union-attr]
        assert resolve(cfg, "dev").environment == "development"  # type: ignore[union-attr]
        assert resolve(cfg, "test").environment == "preview"  # type: ignore[union-attr]
        assert resolve(cfg, "staging").environment == "preview"  # type: ignore[union-attr]
        assert resolve(cfg, "main").environment == "production"  # type: ignore[union-attr]
    assert resolve(SIMPLE, "xyz").environment == "preview"  # type: ignore[union-attr]


def test_no_match() -> None:
    cfg = parse_config(
        '[project]\nname="a"\n[environments.production]\ntier="production"\nbranches=["main"]\n'
    )
    assert resolve(cfg, "dev") is None


names = st.text(alphabet="abcdefgh/-_.", min_size=1, max_size=12)


@given(
    envs=st.lists(
        st.lists(
            st.sampled_from(["*", "main", "feature/*", "a*", "test", "x/*", "?b"]), max_size=3
        ),
        min_size=1,
        max_size=4,
    ),
    branch=names,
)
def test_first_matching_rule_in_declaration_order(envs: list[list[str]], branch: str) -> None:
    tiers = ["development", "preview", "preview", "preview"]
    text = '[project]\nname="a"\n'
    for i, pats in enumerate(envs):
        text += f'[environments.e{i}]\ntier="{tiers[i]}"\nbranches={pats!r}\n'.replace("'", '"')
    cfg = parse_config(text)
    m = resolve(cfg, branch)
    matching = [(env, p) for env, p in rules(cfg) if pattern_matches(p, branch)]
    if not matching:
        assert m is None
    else:
        assert m is not None
        assert (m.environment, m.pattern) == matching[0]
        # no earlier rule matches
        assert all(not pattern_matches(p, branch) for _, p in rules(cfg)[: m.rule_index])


@given(names)
def test_slug_is_a_dns_label(branch: str) -> None:
    s = slug(branch)
    assert 1 <= len(s) <= 50
    assert all(c.isalnum() or c == "-" for c in s)
    assert s == s.lower() and not s.startswith("-") and not s.endswith("-")


# -- which branches an environment's own host follows ---------------------------------

PATTERNS = ["*", "main", "dev", "feature/*", "a*", "test", "x/*", "?b", "[ab]c", "staging"]


def _config(envs: list[list[str]]) -> PipelineConfig:
    text = '[project]\nname="p"\n'
    for i, pats in enumerate(envs):
        tier = "production" if i == len(envs) - 1 else "preview"
        text += f'[environments.e{i}]\ntier="{tier}"\nbranches={pats!r}\n'
    return parse_config(text)


def test_guide_hosts() -> None:
    for cfg in (SIMPLE, PRO):
        assert follows_host(cfg, "development", "dev")
        assert not follows_host(cfg, "development", "feature/x")  # a glob caught it
        assert follows_host(cfg, "preview", "test") and follows_host(cfg, "preview", "staging")
        assert not follows_host(cfg, "preview", "anything-else")  # the catch-all
        assert follows_host(cfg, "production", "main")
    assert host_branches(PRO, "preview") == ["test", "staging"]
    assert moves_host(PRO, "production", "feature/x", "promote")  # a promote always does
    assert not moves_host(PRO, "development", "feature/x", "push")


@given(
    envs=st.lists(st.lists(st.sampled_from(PATTERNS), max_size=4), min_size=1, max_size=4),
    branch=names,
    trigger=st.sampled_from(["push", "deploy", "redeploy", "promote"]),
)
def test_only_exact_patterns_move_an_environments_host(
    envs: list[list[str]], branch: str, trigger: str
) -> None:
    cfg = _config(envs)
    for i, pats in enumerate(envs):
        env = f"e{i}"
        exact = [p for p in pats if not is_glob(p)]
        # the host follows exactly the names its exact patterns give
        assert follows_host(cfg, env, branch) == (branch in exact)
        assert host_branches(cfg, env) == exact
        for p in exact:
            assert follows_host(cfg, env, p)
        # a branch only a glob of the environment catches never moves its host
        if any(pattern_matches(p, branch) for p in pats if is_glob(p)) and branch not in exact:
            assert moves_host(cfg, env, branch, trigger) == (trigger == "promote")
    match = resolve(cfg, branch)
    if match is not None and is_glob(match.pattern):
        # a deployment by the branch rules moves its environment's host only if named
        assert follows_host(cfg, match.environment, branch) == (
            branch in host_branches(cfg, match.environment)
        )


@given(st.sampled_from(PATTERNS))
def test_is_glob(pattern: str) -> None:
    assert is_glob(pattern) == any(c in pattern for c in "*?[")
