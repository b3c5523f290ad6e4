"""Sample data: realistic-looking, entirely fictional users and payment attempts.

Deterministic for a given seed (so seeding twice adds nothing), different across seeds
(each environment seeds its own). Emails use reserved example domains, phone numbers the
fictional 555-01xx range, cards the public test card numbers.
"""

from __future__ import annotations

import datetime as dt
import random
import string
from dataclasses import dataclass

from .database import Connection, utcnow

FIRST = (
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Ken",
    "Frances",
    "Dennis",
    "Radia",
    "Tim",
    "Hedy",
    "Linus",
    "Katherine",
    "John",
    "Sophie",
    "Niklaus",
    "Anita",
    "Guido",
    "Joan",
    "Bjarne",
    "Shafi",
    "Leslie",
    "Karen",
    "Vint",
    "Mary",
    "Wes",
)
LAST = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Hamilton",
    "Thompson",
    "Allen",
    "Ritchie",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "Torvalds",
    "Johnson",
    "McCarthy",
    "Wilson",
    "Wirth",
    "Borg",
    "van Rossum",
    "Clarke",
    "Stroustrup",
    "Goldwasser",
    "Lamport",
    "Sparck Jones",
    "Cerf",
    "Keller",
    "McKinney",
)
DOMAINS = ("example.com", "example.org", "example.net", "mail.example")
AREA = ("202", "312", "415", "512", "617", "718", "206", "303")
# (last4, outcome) of public test cards
CARDS = (
    ("4242", "paid"),
    ("4444", "paid"),
    ("0005", "paid"),
    ("1117", "paid"),
    ("0002", "failed"),
    ("9995", "failed"),
)
PLANS = ((900, "USD"), (1900, "USD"), (4900, "USD"), (1900, "EUR"))
ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class SeedResult:
    users: int
    payment_attempts: int


def _ident(rng: random.Random, prefix: str, length: int = 27) -> str:
    return prefix + "".join(rng.choice(ALPHABET) for _ in range(length))


def seed(conn: Connection, count: int, seed_text: str, max_payments: int = 3) -> SeedResult:
    """Insert `count` users (and up to `max_payments` attempts each); returns rows added."""
    rng = random.Random(f"saas-app:{seed_text}")
    now = utcnow().replace(microsecond=0)
    added_users = added_payments = 0
    with conn.transaction():
        for n in range(count):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            clerk_id = _ident(rng, "user_")
            local = f"{first}.{last}".lower().replace(" ", "").replace("-", "")
            email = f"{local}{rng.randint(1, 999)}@{rng.choice(DOMAINS)}"
            phone = f"+1 {rng.choice(AREA)}-555-01{rng.randint(0, 99):02d}"
            created = now - dt.timedelta(days=rng.randint(1, 90), minutes=rng.randint(0, 1439))
            added_users += conn.execute(
                "INSERT INTO users (clerk_id, email, first_name, last_name, phone, created_at,"
                " updated_at, deleted) VALUES (?, ?, ?, ?, ?, ?, ?, FALSE)"
                " ON CONFLICT (clerk_id) DO NOTHING",
                (clerk_id, email, first, last, phone, created, created),
            )
            user_id = conn.scalar("SELECT id FROM users WHERE clerk_id = ?", (clerk_id,))
            for _ in range(rng.randint(0, max_payments)):
                last4, status = rng.choice(CARDS)
                if status == "paid" and rng.random() < 0.1:
                    status = "pending"
                amount, currency = rng.choice(PLANS)
                at = created + dt.timedelta(days=rng.randint(0, 30), minutes=rng.randint(0, 600))
                at = min(at, now)
                added_payments += conn.execute(
                    "INSERT INTO payment_attempts (user_id, clerk_payment_id, amount_cents,"
                    " currency, status, card_last4, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (clerk_payment_id) DO NOTHING",
                    (user_id, _ident(rng, "pay_", 24), amount, currency, status, last4, at, at),
                )
            del n
    return SeedResult(added_users, added_payments)
