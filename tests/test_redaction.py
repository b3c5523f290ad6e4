"""Redaction of every form a secret takes in output (pure, property-tested)."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tristage.domain.redaction import (
    HOLD_LIMIT,
    MASK,
    MIN_SECRET,
    build_redactor,
    flatten,
    forms,
)

# Secrets: no mask character, no line break, no leading blank (breaks are transparent).
_chars = st.characters(blacklist_characters="*\r\n", blacklist_categories=("Cs",))
secret = st.text(_chars, min_size=8, max_size=24).filter(lambda s: not s[:1].isspace())
unbroken = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=8, max_size=24)
noise = st.text(st.characters(blacklist_characters="*", blacklist_categories=("Cs",)), max_size=30)


def _lower_pct(text: str) -> str:
    return re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _b64url(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode()


# How a value is printed (what a log line would hold in place of the value).
ENCODED = {
    "exact": lambda v: v,
    "json": lambda v: json.dumps(v)[1:-1],
    "json utf-8": lambda v: json.dumps(v, ensure_ascii=False)[1:-1],
    "json inside json": lambda v: json.dumps(json.dumps({"token": v}))[1:-1],
    "repr": lambda v: repr({"token": v}),
    "repr bytes": lambda v: repr(v.encode()),
    "ascii": lambda v: ascii([v]),
    "url": lambda v: quote(v, safe=""),
    "url path": lambda v: quote(v),
    "url form": lambda v: quote_plus(v),
    "url lower hex": lambda v: _lower_pct(quote(v, safe="")),
    "base64": _b64,
    "base64 unpadded": lambda v: _b64(v).rstrip("="),
    "base64 urlsafe": _b64url,
    "base64 urlsafe unpadded": lambda v: _b64url(v).rstrip("="),
    "hex": lambda v: v.encode().hex(),
    "HEX": lambda v: v.encode().hex().upper(),
}


@settings(max_examples=300, deadline=None)
@given(value=secret, before=noise, after=noise, how=st.sampled_from(sorted(ENCODED)))
@example(value="sk_live_0123456789", before="token=", after=" ok", how="repr")
@example(value='pa"ss\\wörd/ 1+', before="", after="", how="json inside json")
def test_every_printed_form_is_masked(value: str, before: str, after: str, how: str) -> None:
    printed = ENCODED[how](value)
    out = build_redactor([value]).redact(before + printed + after)
    assert MASK in out
    flat = flatten(out)
    assert flatten(value) not in flat
    for name, encode in ENCODED.items():
        if len(encode(value)) >= 8 and not name.startswith(("repr", "ascii", "json inside")):
            assert encode(value) not in flat, (name, out)
    if how.startswith(("base64", "hex", "HEX")):
        assert not any(value.encode() in d for d in _decodable_windows(flat, how))


def _decodable_windows(text: str, how: str = "base64") -> list[bytes]:
    """Every run of base64 (or hex) characters in `text`, decoded at each alignment."""
    out = []
    if how.startswith(("hex", "HEX")):
        for run in re.findall(r"[0-9A-Fa-f]+", text):
            out += [bytes.fromhex(run[s : len(run) - (len(run) - s) % 2]) for s in (0, 1)]
        return out
    for run in re.findall(r"[A-Za-z0-9+/_-]+", text):
        for skip in range(4):
            chunk = run[skip:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            out.append(base64.b64decode(chunk.replace("-", "+").replace("_", "/")))
    return out


@settings(max_examples=150, deadline=None)
@given(
    value=st.binary(min_size=8, max_size=24).map(lambda b: b.hex()[:24]),
    prefix=st.binary(max_size=10),
    suffix=st.binary(max_size=10),
    urlsafe=st.booleans(),
)
@example(value="s3cr3t-t0ken-9", prefix=b"user:", suffix=b"", urlsafe=False)
def test_a_secret_inside_longer_base64_is_masked_at_any_alignment(
    value: str, prefix: bytes, suffix: bytes, urlsafe: bool
) -> None:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    text = "Authorization: Basic " + encode(prefix + value.encode() + suffix).decode()
    out = build_redactor([value]).redact(text)
    assert MASK in out
    for decoded in _decodable_windows(out):
        assert value.encode() not in decoded


anything = st.text(
    st.characters(blacklist_characters="*", blacklist_categories=("Cs",)), min_size=6, max_size=24
)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(anything, min_size=1, max_size=4),
    pieces=st.lists(
        st.one_of(noise, st.sampled_from(["\n", "  ", "\r\n", "\n\t"]), st.integers(0, 3)),
        max_size=12,
    ),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
@example(values=[" bcdefgh"], pieces=["zz\n  ", 0], cuts=[5])  # blanks after a break
def test_a_stream_in_any_pieces_redacts_like_the_whole_text(
    values: list[str], pieces: list[str | int], cuts: list[int]
) -> None:
    # The text mixes noise, line breaks and the secrets (integers pick a secret).
    text = "".join(values[p % len(values)] if isinstance(p, int) else p for p in pieces)
    redactor = build_redactor(values)
    whole = redactor.redact(text)
    stream = redactor.stream()
    out, last = [], 0
    for cut in sorted({c for c in cuts if c < len(text)}):
        out.append(stream.feed(text[last:cut]))
        assert stream.held <= HOLD_LIMIT + len(text[last:cut])
        last = cut
    out.append(stream.feed(text[last:]))
    out.append(stream.flush())
    assert stream.held == 0
    assert "".join(out) == whole


@settings(max_examples=200, deadline=None)
@given(value=unbroken, split=st.integers(1, 7), before=noise, indent=st.sampled_from(["", "  "]))
def test_a_secret_written_in_two_writes_or_on_two_lines_is_masked(
    value: str, split: int, before: str, indent: str
) -> None:
    stream = build_redactor([value]).stream()
    for sep, ind in (("", ""), ("\n", indent), ("\r\n", indent), ("\r", "\n" + indent)):
        written = stream.feed(before + value[:split] + sep)
        written += stream.feed(ind + value[split:] + " end\n")
        written += stream.flush()
        assert flatten(value) not in flatten(written), written
        assert value[:split] not in written.split(MASK)[0][len(before) :]


def test_base64_wrapped_at_76_columns_is_masked() -> None:
    value = "sk_live_51Hx0q2eZvKYlo2C8xN3qYv7"
    blob = _b64(("k=" + value + ";") * 6)
    wrapped = "\n".join(re.findall(".{1,76}", blob))
    out = build_redactor([value]).redact("data:\n" + wrapped + "\n")
    assert out.count("\n") == wrapped.count("\n") + 2  # lines are kept
    assert not any(value.encode() in d for d in _decodable_windows(flatten(out)))


def test_the_stream_holds_only_what_could_start_a_secret() -> None:
    stream = build_redactor(["sk_live_abcdef123"]).stream()
    assert stream.feed("GET /health 200\n") == "GET /health 200\n"
    assert stream.held == 0
    assert stream.feed("token=sk_li") == "token="
    assert stream.held == len("sk_li")
    assert stream.flush() == "sk_li"  # not a secret after all: released, unchanged
    assert stream.feed("key sk_live_abc") == "key "
    assert stream.feed("def123 done\n") == "**** done\n"
    assert stream.feed("x " + "sk_live_abcdef123"[:9] + "\n") == "x "  # the line may go on
    assert stream.feed("bcdef123\n") == "****\n****\n"  # one mask per line
    # A tail that keeps growing without completing a secret is bounded.
    assert stream.feed("s" + "\n" * (HOLD_LIMIT + 10)) != ""
    assert stream.held <= HOLD_LIMIT


def test_a_multi_line_secret_printed_reindented_is_masked_line_by_line() -> None:
    pem = "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcN\nLYLInFEX6Ppy1tPf\n-----END KEY-----"
    redact = build_redactor([pem])
    printed = "key:\n  " + pem.replace("\n", "\n  ") + "\nnext"
    out = redact(printed)
    assert out == "key:\n  ****\n  ****\n  ****\n  ****\nnext", out
    assert redact("line MIIBOgIBAAJBAKj34GkxFhD90vcN only") == "line **** only"


def test_short_values_are_not_redacted_and_ordinary_text_is_untouched() -> None:
    assert MIN_SECRET == 6
    redact = build_redactor(["abc", "12345", "", "sk_test_abcdefgh"])
    text = "abc 12345 a build of 12 files in 1.2s"
    assert redact(text) == text
    assert forms(["abc", "12345"]) == set()
    assert build_redactor([]).redact("x") == "x" and not build_redactor(["ab"]).active
    # a 6-byte value's base64 at an offset would be 4 characters: not a form of its own
    assert all(len(f) >= 8 for f in forms(["abcdef"]) if f != "abcdef")


@settings(max_examples=100, deadline=None)
@given(values=st.lists(secret, min_size=1, max_size=5), text=st.text(st.sampled_from("*#!? \n")))
def test_text_without_any_secret_character_is_unchanged(values: list[str], text: str) -> None:
    values = [v for v in values if not set(v) & set("*#!? ")]
    redactor = build_redactor(values)
    stream = redactor.stream()
    assert redactor.redact(text) == text
    assert stream.feed(text) + stream.flush() == text
