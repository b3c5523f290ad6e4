"""What personal data looks like in values: emails, phone numbers, card numbers, national
ids and personal names, inside a value or inside free text. Pure.

Used two ways: `kinds` tells whether sampled values of a column kept as they are look
like personal data (a `keep` is refused then), and `spans` finds the pieces of free
text the `scrub` rule replaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by spaces or dashes (Luhn-checked after the match)
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# US social security numbers, UK national insurance numbers
NATIONAL_ID = re.compile(
    r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])|\b[A-CEGHJ-PR-TW-Z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]\b"
)
# a + and 8-15 digits, or 10-15 digits grouped by separators; a date is not a phone
PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\(?\d{1,4}\)?(?:[\s.-]?\(?\d{1,5}\)?){2,7}(?![\w])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{1,2}:\d{2}")
_NAME = re.compile(r"[^\W\d_][^\W\d_'\u2019.-]+(?:[ -][^\W\d_][^\W\d_'\u2019.-]+){1,3}")

_FIRST_NAMES = """james mary john patricia robert jennifer michael linda william elizabeth david
    barbara richard susan joseph jessica thomas sarah charles karen christopher lisa daniel
    nancy matthew betty anthony margaret mark sandra donald ashley steven kimberly paul emily
    andrew donna joshua michelle kenneth carol kevin amanda brian melissa george deborah
    timothy stephanie ronald rebecca edward sharon jason laura jeffrey cynthia ryan kathleen
    jacob amy gary angela nicholas shirley eric anna jonathan brenda stephen pamela larry emma
    justin nicole scott helen brandon samantha benjamin katherine samuel christine gregory
    debra alexander rachel frank carolyn patrick janet raymond catherine jack maria dennis
    heather jerry diane tyler ruth aaron julie jose olivia adam joyce henry virginia nathan
    victoria douglas kelly zachary lauren peter christina kyle joan noah evelyn ethan judith
    jeremy megan walter andrea christian cheryl keith hannah roger jacqueline terry martha
    austin gloria sean teresa gerald ann carl sara harold madison dylan frances arthur kathryn
    lawrence janice jordan jean jesse abigail bryan alice billy judy bruce sophia gabriel
    grace joe denise logan amber alan doris juan marilyn albert danielle willie beverly elijah
    isabella wayne theresa randy diana vincent natalie mason brittany roy charlotte ralph
    marie bobby kayla russell alexis bradley lori philip alyssa eugene liam lucas leon luca
    mohammed muhammad ahmed ali fatima aisha wei li yan ming hiroshi yuki sakura kenji
    carlos luis miguel pedro sofia lucia mateo hugo leo paolo giulia marco francesca pierre
    louise camille jean-pierre hans klaus anna-lena lena lukas jonas mia zoe chloe ines
"""
COMMON_FIRST_NAMES = frozenset(_FIRST_NAMES.split())


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def is_card(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and digits.isdigit() and luhn(digits) and len(set(digits)) > 1


def is_phone(text: str) -> bool:
    s = text.strip()
    if _DATE.fullmatch(s) or not re.fullmatch(r"(?:\+|00)?[\d\s().-]+", s):
        return False
    digits = re.sub(r"\D", "", s)
    if s.startswith(("+", "00")):
        return 8 <= len(digits) <= 15
    grouped = bool(re.search(r"\d[\s().-]+\d", s))
    return 10 <= len(digits) <= 15 and (grouped or not is_card(s))


def is_name(text: str) -> bool:
    s = text.strip()
    if _NAME.fullmatch(s):
        words = re.split(r"[ -]", s)
        return all(w[:1].isupper() for w in words)
    return s.lower() in COMMON_FIRST_NAMES and s[:1].isupper()


def spans(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, kind) of each email, card number, national id and phone in `text`,
    in order, not overlapping."""
    taken: list[tuple[int, int, str]] = []

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e, _ in taken)

    for m in EMAIL.finditer(text):
        taken.append((m.start(), m.end(), "email"))
    for m in CARD.finditer(text):
        if is_card(m.group()) and free(m.start(), m.end()):
            taken.append((m.start(), m.end(), "card"))
    for m in NATIONAL_ID.finditer(text):
        if free(m.start(), m.end()):
            taken.append((m.start(), m.end(), "national id"))
    for m in PHONE.finditer(text):
        if is_phone(m.group()) and free(m.start(), m.end()):
            taken.append((m.start(), m.end(), "phone"))
    yield from sorted(taken)


# share of sampled values that must look like a name or phone before a keep is refused
# (emails, card numbers and national ids refuse it at the first one)
NAME_SHARE = 0.3


def kinds(values: Iterable[Any]) -> dict[str, int]:
    """Kinds of personal data seen in sampled values, with how many values showed each.

    Emails, card numbers and national ids count anywhere in a string; phones and names
    only as a whole value (free text full of numbers is not a phone book), and only when
    at least `NAME_SHARE` of the strings are such.
    """
    seen: dict[str, int] = {}
    strings = numbers = cards = 0
    whole: dict[str, int] = {"phone": 0, "name": 0}
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, int):
            numbers += 1
            cards += is_card(str(abs(v)))  # 1 in 10 numbers passes Luhn: a share counts
            continue
        if not isinstance(v, str):
            continue
        strings += 1
        found = {kind for _, _, kind in spans(v)} - {"phone"}
        for kind in found:
            seen[kind] = seen.get(kind, 0) + 1
        if is_phone(v):
            whole["phone"] += 1
        elif is_name(v):
            whole["name"] += 1
    if numbers and cards / numbers >= 0.5:
        seen["card"] = seen.get("card", 0) + cards
    for kind, n in whole.items():
        if strings and n / strings >= NAME_SHARE:
            seen[kind] = n
    return seen
