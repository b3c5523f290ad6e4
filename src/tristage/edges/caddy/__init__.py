"""The production edge: Caddy terminating TLS (certificates through ACME) in front of the
embedded router, which keeps routing and switching aliases."""

from .config import EDGE_HEADER, LETS_ENCRYPT, EdgePlan, EdgeSettings, caddy_config
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
