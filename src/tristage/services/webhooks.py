"""The webhook gateway per environment (contract; the webhooks area fills it in)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..api import Tristage

# (project, environment) -> base URL of the live release, e.g. "http://127.0.0.1:41234"
UpstreamLookup = Callable[[str, str], str | None]


class WebhookService:
    def __init__(self, api: Tristage) -> None:
        self.api = api

    async def run_forwarder(self, stop: asyncio.Event, upstream: UpstreamLookup) -> None:
        """Forward stored deliveries to live releases until `stop` is set."""
        await stop.wait()
