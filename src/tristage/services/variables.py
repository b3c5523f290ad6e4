"""The variables service (its area fills it in)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..api import Tristage


class VariableService:
    def __init__(self, api: Tristage) -> None:
        self.api = api
