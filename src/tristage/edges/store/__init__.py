"""The state store: projects, deployments, aliases, variables, audit events and more.

`Store` is the small interface every service uses; `SqliteStore` is the embedded
implementation (WAL, one writer at a time, concurrent readers). A PostgreSQL
implementation for a multi-machine control plane implements the same protocol:
SQL is written in the portable subset (``?`` placeholders are translated), and the
shared suite in ``tests/test_store_conformance.py`` runs against each implementation.
"""

from .base import Migration, Row, Store, StoreBusy
from .sqlite import SqliteStore, open_store

__all__ = ["Migration", "Row", "SqliteStore", "Store", "StoreBusy", "open_store"]
