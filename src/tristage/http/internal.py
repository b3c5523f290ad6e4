"""The ASGI app the router serves under `/.tristage/` on every environment host.

The router puts the matched `Route` in `scope["tristage.route"]`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.types import ASGIApp

if TYPE_CHECKING:
    from ..api import Tristage


def build_internal_app(api: Tristage) -> ASGIApp:
    return Starlette(routes=[])
