from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tristage.domain.branches import pattern_matches, resolve, rules, slug
from tristage.domain.config import parse_config
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
