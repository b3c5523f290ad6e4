"""The production edge: Caddy terminating TLS (certificates through ACME) in front of the
embedded router, which keeps routing and switching aliases."""

from ...domain.edge import LETS_ENCRYPT
from .config import EDGE_HEADER, EdgePlan, EdgeSettings, caddy_config
from .server import CaddyEdge, EdgeError

__all__ = [
    "EDGE_HEADER",
    "LETS_ENCRYPT",
    "CaddyEdge",
    "EdgeError",
    "EdgePlan",
    "EdgeSettings",
    "caddy_config",
]
