"""The production edge on HAProxy: TLS with certificates through ACME, and the switch
itself (dynamic servers through the runtime API); the embedded router keeps the hosts
that need its own features."""

from .certificates import AcmeError, AcmeIssuer, ChallengeServer, due, expires_at
from .config import HAProxySettings, haproxy_config
from .server import EdgeError, HAProxyEdge

__all__ = [
    "AcmeError",
    "AcmeIssuer",
    "ChallengeServer",
    "EdgeError",
    "HAProxyEdge",
    "HAProxySettings",
    "due",
    "expires_at",
    "haproxy_config",
]
