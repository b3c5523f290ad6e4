"""The dashboard page: which environment this is, what is deployed, and the data."""

from __future__ import annotations

from html import escape
from typing import Any

from .database import Row
from .settings import Settings

COLOURS = {
    "development": ("#1d4ed8", "#dbeafe"),  # blue
    "preview": ("#b45309", "#fef3c7"),  # amber
    "production": ("#b91c1c", "#fee2e2"),  # red
}

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#111827;
background:#f9fafb}
.banner{padding:18px 28px;color:#fff;display:flex;align-items:baseline;gap:18px;flex-wrap:wrap}
.banner h1{margin:0;font-size:28px;letter-spacing:.08em;text-transform:uppercase}
.banner .meta{font-family:ui-monospace,Menlo,monospace;font-size:13px;opacity:.95}
main{padding:20px 28px;max-width:1100px}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin-bottom:18px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 16px;min-width:150px}
.card b{display:block;font-size:24px}
table{border-collapse:collapse;width:100%;background:#fff;margin-bottom:24px;font-size:14px}
th,td{border-bottom:1px solid #e5e7eb;padding:6px 10px;text-align:left}
th{background:#f3f4f6}
.deleted{color:#9ca3af;text-decoration:line-through}
.notice{padding:10px 14px;border-radius:6px;margin-bottom:14px}
button{cursor:pointer}
"""


def _e(value: Any) -> str:
    return "" if value is None else escape(str(value))


def money(cents: int, currency: str) -> str:
    return f"{cents / 100:,.2f} {currency}"


def dashboard(
    settings: Settings,
    counts: dict[str, int],
    users: list[Row],
    payments: list[Row],
    csrf_token: str,
    notice: str | None = None,
) -> str:
    fg, bg = COLOURS.get(settings.tier, COLOURS["development"])
    cards = "".join(
        f'<div class="card"><span>{_e(label)}</span><b id="count-{_e(key)}">{counts[key]}</b></div>'
        for key, label in (
            ("users", "users"),
            ("deleted_users", "deleted users"),
            ("payment_attempts", "payment attempts"),
            ("paid_cents", "paid (cents)"),
        )
    )
    user_rows = (
        "".join(
            f'<tr class="{"deleted" if u["deleted"] else ""}"><td>{_e(u["clerk_id"])}</td>'
            f"<td>{_e(u['email'])}</td><td>{_e(u['first_name'])} {_e(u['last_name'])}</td>"
            f"<td>{_e(u['phone'])}</td><td>{_e(u['created_at'])}</td></tr>"
            for u in users
        )
        or '<tr><td colspan="5">no users yet</td></tr>'
    )
    payment_rows = (
        "".join(
            f"<tr><td>{_e(p['clerk_payment_id'])}</td><td>{_e(p['email'] or p['clerk_id'])}</td>"
            f"<td>{_e(money(int(p['amount_cents']), p['currency']))}</td>"
            f'<td class="status">{_e(p["status"])}</td><td>{_e(p["card_last4"])}</td>'
            f"<td>{_e(p['created_at'])}</td><td>{_refund_form(p, csrf_token)}</td></tr>"
            for p in payments
        )
        or '<tr><td colspan="7">no payment attempts yet</td></tr>'
    )
    note = (
        f'<div class="notice" style="background:{bg};color:{fg}">{_e(notice)}</div>'
        if notice
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>[{_e(settings.environment)}] saas-app dashboard</title>
<style>{_STYLE}</style></head>
<body>
<header class="banner" style="background:{fg}" data-tier="{_e(settings.tier)}">
<h1 id="environment">{_e(settings.environment)}</h1>
<span class="meta">tier {_e(settings.tier)} &middot; deployment
<span id="deployment">{_e(settings.deployment)}</span> &middot; branch
<span id="branch">{_e(settings.branch)}</span> &middot; commit
<span id="commit">{_e(settings.commit[:12])}</span> &middot; {_e(settings.database.engine)}</span>
</header>
<main style="border-top:6px solid {bg}">
{note}
<div class="cards">{cards}</div>
<h2>Latest users</h2>
<table><thead><tr><th>Clerk id</th><th>email</th><th>name</th><th>phone</th><th>created</th>
</tr></thead><tbody>{user_rows}</tbody></table>
<h2>Latest payment attempts</h2>
<table><thead><tr><th>payment</th><th>user</th><th>amount</th><th>status</th><th>card</th>
<th>created</th><th></th></tr></thead><tbody>{payment_rows}</tbody></table>
</main></body></html>
"""


def _refund_form(payment: Row, csrf_token: str) -> str:
    if payment["status"] != "paid":
        return ""
    return (
        f'<form method="post" action="/payments/{int(payment["id"])}/refund">'
        f'<input type="hidden" name="csrf_token" value="{_e(csrf_token)}">'
        '<button type="submit">mark refunded</button></form>'
    )
