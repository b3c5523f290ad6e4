"""The router's own answers: small plain HTML pages that name the host and nothing else."""

from __future__ import annotations

from html import escape

_TEMPLATE = (
    '<!doctype html>\n<html><head><meta charset="utf-8"><title>{code} {title}</title></head>'
    "<body><h1>{code} {title}</h1><p>{message}</p><hr><p>tristage</p></body></html>\n"
)


def page(code: int, title: str, message: str) -> bytes:
    return _TEMPLATE.format(code=code, title=escape(title), message=message).encode()


def not_found(host: str) -> bytes:
    return page(404, "Not Found", f"No deployment is served at <code>{escape(host)}</code>.")


def no_upstream(host: str) -> bytes:
    return page(
        503,
        "Service Unavailable",
        f"<code>{escape(host)}</code> has no running deployment right now.",
    )


def bad_gateway(host: str) -> bytes:
    return page(
        502, "Bad Gateway", f"The deployment behind <code>{escape(host)}</code> did not answer."
    )


def internal_missing(host: str) -> bytes:
    return page(404, "Not Found", f"Nothing is served here on <code>{escape(host)}</code>.")


def bad_request(reason: str) -> bytes:
    return page(400, "Bad Request", f"The request was refused: {escape(reason)}.")


def gateway_timeout(host: str) -> bytes:
    return page(
        504,
        "Gateway Timeout",
        f"The deployment behind <code>{escape(host)}</code> did not answer in time.",
    )


def sign_in_required(host: str) -> bytes:
    return page(
        401,
        "Unauthorized",
        f"<code>{escape(host)}</code> requires sign-in: open it in a browser first.",
    )
