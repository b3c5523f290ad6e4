"""Redaction: every form a secret value takes in output, replaced by ``****``.

Pure. `build_redactor(values)` derives, from each secret value, the strings that
would reveal it when printed (`forms`) and compiles them into one regular
expression shaped as a prefix tree, so a text is scanned once whatever the number
of secrets and forms. A form is, for the value and each of its parts (each line of
a multi-line value, the password of a URL):

- the part itself; its JSON-escaped forms (``\\n``, ``\\"``, ``\\uXXXX``, and escaped
  twice: JSON logged inside JSON); its Python ``repr``/``ascii`` forms (of the
  string and of its UTF-8 bytes);
- its URL-encoded forms (``%2F`` or ``/``, ``+`` for spaces, upper or lower hex);
- its base64, standard and urlsafe, with and without padding, and the part of it
  that any base64 text holding the value at any of the three byte alignments
  contains (so a secret inside ``base64("user:" + secret)``, a Basic auth header,
  is masked too; the one or two bytes that share a base64 group with what is
  around it are the only ones not covered);
- its hex, lower and upper case.

Line breaks (with the indentation that follows them) are transparent: a secret
printed across two lines, or a PEM key re-indented, is still found, and each of its
pieces is masked on its own line. The stream interface (`Redactor.feed`/`flush`)
holds back the tail of what it was given while that tail could be the start of a
form, so a secret written in two writes or on two lines is caught too; what it
holds is bounded (`HOLD_LIMIT`) and `flush()` releases it, e.g. when the writer
has been quiet for a moment.

Values shorter than `MIN_SECRET` (6) characters are not redacted, and the base64
of a value at a byte alignment is dropped when shorter than `MIN_FORM` (8, two
base64 groups): short strings occur in ordinary log text (a 4-character "secret" is
in every other word, and a 4-character base64 run is in every hash), so masking
them would shred logs without hiding anything worth hiding. Every other form is at
least as long as the value.
"""

from __future__ import annotations

import base64
import bisect
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from .mask import MASK

__all__ = [
    "HELD_SECRET",
    "HOLD_LIMIT",
    "MASK",
    "MIN_FORM",
    "MIN_SECRET",
    "Redactor",
    "build_redactor",
    "flatten",
    "forms",
    "parts",
]

MIN_SECRET = 6  # shorter values (and parts) are not redacted
MIN_FORM = 8  # shorter base64 runs of a value at a byte alignment are not redacted
HOLD_LIMIT = 4096  # at most this many characters are held back by a stream
HELD_SECRET = 12  # a held tail this long that starts a secret is masked when released

# Line breaks (CR, LF) and the indentation after them: transparent when matching.
_BREAK = re.compile(r"[\r\n][\r\n \t]*")
_PCT = re.compile(r"%[0-9A-F]{2}")


# -- forms ---------------------------------------------------------------------


def parts(value: str) -> set[str]:
    """The strings to hide for one secret value before encoding: the value, each
    line of a multi-line value, and the password of a URL (raw and decoded)."""
    out = {value}
    if "\n" in value:
        out.update(line.strip() for line in value.splitlines())
    if "://" in value and "@" in value:
        try:
            password = urlsplit(value).password
        except ValueError:
            password = None
        if password:
            out.update({password, unquote(password)})
    return {p for p in out if len(p) >= MIN_SECRET}


def _base64_forms(data: bytes) -> Iterator[str]:
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(data).decode("ascii")
        yield whole
        yield whole.rstrip("=")
        for skip in range(3):  # the value at each byte alignment inside longer data
            groups = (len(data) - skip) // 3
            core = encode(data[skip : skip + 3 * groups]).decode("ascii")
            if len(core) >= MIN_FORM:
                yield core


def encodings(part: str) -> set[str]:
    """Every printed form of one part (the part itself included)."""
    data = part.encode("utf-8", "surrogatepass")
    quoted = {
        quote(part, safe="", errors="surrogatepass"),
        quote(part, errors="surrogatepass"),
        quote_plus(part, errors="surrogatepass"),
    }
    out = {
        part,
        json.dumps(part)[1:-1],
        json.dumps(part, ensure_ascii=False)[1:-1],
        json.dumps(json.dumps(part)[1:-1])[1:-1],  # a JSON text logged inside JSON
        repr(part)[1:-1],
        ascii(part)[1:-1],
        repr(data)[2:-1],
        data.hex(),
        data.hex().upper(),
        *quoted,
        *(_PCT.sub(lambda m: m.group().lower(), q) for q in quoted),
        *_base64_forms(data),
    }
    return out


def flatten(text: str) -> str:
    """`text` without its line breaks and the indentation after them."""
    return _BREAK.sub("", text)


def forms(values: Iterable[str]) -> set[str]:
    """Every form of every value, flattened (as matched), shortest ones dropped."""
    out: set[str] = set()
    for value in values:
        for part in parts(value):
            out.update(flatten(f) for f in encodings(part))
    return {f for f in out if len(f) >= MIN_SECRET}


# -- matching ------------------------------------------------------------------


def trie_pattern(words: Iterable[str]) -> str:
    """One regular expression for all `words`, shaped as a prefix tree (longest first)."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def pattern(node: dict[str, Any]) -> str:
        alts: list[str] = []
        for ch in sorted(k for k in node if k):
            child = node[ch]
            chain = ch
            while len(child) == 1 and "" not in child:  # compress single-child chains
                (nxt,) = child
                chain += nxt
                child = child[nxt]
            alts.append(re.escape(chain) + pattern(child))
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:
            return f"(?:{body})?"
        return body

    return pattern(trie)


class _View:
    """A text seen without its line breaks, with the way back to its positions (built
    only when a position is asked for: most texts have no match)."""

    def __init__(self, original: str) -> None:
        self.original = original
        broken = "\n" in original or "\r" in original
        self.text = _BREAK.sub("", original) if broken else original
        self._starts: list[int] = []  # where each piece starts in `text`
        self._origins: list[int] = []  # where each piece starts in the original

    def _map(self) -> None:
        pos = size = 0
        for m in _BREAK.finditer(self.original):
            if m.start() > pos:
                self._starts.append(size)
                self._origins.append(pos)
                size += m.start() - pos
            pos = m.end()
        self._starts.append(size)
        self._origins.append(pos)

    def origin(self, i: int) -> int:
        """The original position of flat character `i` (or of the end when i == len)."""
        if self.text is self.original:
            return i
        if not self._starts:
            self._map()
        k = bisect.bisect_right(self._starts, i) - 1
        return self._origins[k] + (i - self._starts[k])


class _Matcher:
    """The compiled forms: find them in a text, tell whether a tail may start one."""

    def __init__(self, words: set[str]) -> None:
        self.regex = re.compile(trie_pattern(words))
        self.sorted = sorted(words)
        self.longest = max(len(w) for w in words)
        self.heads = frozenset(w[:k] for w in words for k in (1, 2, 3))
        # Where a form may start: found by the regex engine, not a loop over positions.
        self.starts = re.compile("(?=" + trie_pattern({w[:3] for w in words}) + ")")

    def may_continue(self, s: str) -> bool:
        """Whether `s` is a proper prefix of some form (more text could complete it)."""
        if s[:3] not in self.heads:
            return False
        i = bisect.bisect_left(self.sorted, s)
        if i < len(self.sorted) and self.sorted[i] == s:
            i += 1
        return i < len(self.sorted) and self.sorted[i].startswith(s)

    def spans(self, text: str) -> tuple[_View, list[tuple[int, int]]]:
        """The flat view of `text` and the matches in it."""
        view = _View(text)
        return view, [m.span() for m in self.regex.finditer(view.text)]

    def hold_from(self, flat: str) -> int:
        """The start of the longest suffix of `flat` that may start a form (else its end)."""
        end = len(flat)
        start = max(0, end - self.longest + 1)
        candidates = [m.start() for m in self.starts.finditer(flat, start, end)]
        candidates += [i for i in (end - 2, end - 1) if i >= start]  # too short for `starts`
        for i in candidates:
            if self.may_continue(flat[i:end]):
                return i
        return end


def _mask(text: str, start: int, end: int) -> str:
    """`text[start:end]` with each piece between line breaks replaced by the mask."""
    out: list[str] = []
    pos = start
    for m in _BREAK.finditer(text, start, end):
        if m.start() > pos:
            out.append(MASK)
        out.append(m.group())
        pos = m.end()
    if end > pos:
        out.append(MASK)
    return "".join(out)


def _render(view: _View, spans: list[tuple[int, int]], stop: int) -> str:
    """The original text up to `stop` (an original position), matched spans masked."""
    text = view.original
    if not spans:
        return text if stop == len(text) else text[:stop]
    out: list[str] = []
    pos = 0
    for a, b in spans:
        a, b = view.origin(a), view.origin(b - 1) + 1
        if b > stop:
            break
        out.append(text[pos:a])
        out.append(_mask(text, a, b))
        pos = b
    out.append(text[pos:stop])
    return "".join(out)


class Redactor:
    """Replaces every form of a set of secret values with ``****``.

    `redact(text)` (also `redactor(text)`) redacts a line or any text on its own.
    `feed(text)` redacts a stream given in pieces: it returns what is safe to write
    now and holds back a tail that could be the start of a secret (at most
    `HOLD_LIMIT` characters); `flush()` returns what is held, redacted. Whatever the
    pieces, ``feed(a) + feed(b) + flush() == redact(a + b)``. A stream is not
    thread-safe: `stream()` gives an independent one sharing the compiled forms.
    """

    def __init__(self, matcher: _Matcher | None) -> None:
        self._matcher = matcher
        self._pending = ""
        self._after_break = False
        self._resume = ""  # a secret's start `release` masked: its rest is masked too

    @property
    def active(self) -> bool:
        """Whether there is anything to redact at all."""
        return self._matcher is not None

    @property
    def held(self) -> int:
        """How many characters `feed` is holding back."""
        return len(self._pending)

    def stream(self) -> Redactor:
        return Redactor(self._matcher)

    def redact(self, text: str) -> str:
        if self._matcher is None:
            return text
        view, spans = self._matcher.spans(text)
        return _render(view, spans, len(text))

    __call__ = redact

    def feed(self, text: str) -> str:
        if not self._resume:
            return self._emit(text, final=False)
        resume, self._resume = self._resume, ""
        out = self._emit(resume + text, final=False)
        if out.startswith("****"):  # the secret went on: its rest is masked with it
            return out[4:]
        if out.startswith(resume):  # it did not: the start was written masked already
            return out[len(resume) :]
        return out

    def flush(self) -> str:
        return self._emit("", final=True)

    def release(self) -> str:
        """What is held, when the writer pauses (the rest of a secret may never come):
        a held tail of `HELD_SECRET` or more characters is the start of a secret form
        and is masked; a shorter one (e.g. a key prefix such as ``sk_live``) is written."""
        held = self._pending
        self._pending = ""
        if self._matcher is None or len(held.strip()) < HELD_SECRET:
            return self._emit(held, final=True)
        body = held.rstrip("\n")
        if body == held:
            self._resume = held
        return "****" + held[len(body) :]

    def _emit(self, text: str, final: bool) -> str:
        pending = self._pending + text
        if self._matcher is None or not pending:
            self._pending = ""
            return pending
        # Blanks after a line break already written still belong to that break.
        lead = "\n" if self._after_break and pending[0] in " \t" else ""
        source = lead + pending
        view, spans = self._matcher.spans(source)
        flat = view.text
        stop = len(source)
        if not final:
            cut = self._matcher.hold_from(flat)
            for a, b in spans:  # a complete match must not be split either
                if a < cut < b:
                    cut = a
                    break
            if cut < len(flat) and len(source) - view.origin(cut) <= HOLD_LIMIT:
                stop = view.origin(cut)
        self._pending = source[stop:]
        if stop > len(lead):
            i = stop
            while i > 0 and source[i - 1] in " \t":
                i -= 1
            self._after_break = i > 0 and source[i - 1] in "\r\n"
        return _render(view, spans, stop)[len(lead) :]


def build_redactor(values: Iterable[str]) -> Redactor:
    """The redactor of these secret values (see the module's docstring for the forms)."""
    words = forms(values)
    return Redactor(_Matcher(words) if words else None)
