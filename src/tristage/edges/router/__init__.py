"""The embedded router: host-based HTTP/1.1 reverse proxy in front of the releases."""

from .routes import Route, RouteTable, normalize_host
from .server import Router
from .stats import DeploymentStats

__all__ = ["DeploymentStats", "Route", "RouteTable", "Router", "normalize_host"]
