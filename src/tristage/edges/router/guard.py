"""The router's side of protected previews: does a request carry a valid access cookie?
(the rules and the cookie format are in `domain/access.py`)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from ...domain.access import check_cookie, cookie_value
from ...paths import private_dirs, private_open
from .routes import Route

KEY_FILE = "access.key"


def load_access_key(home: Path) -> bytes:
    """The platform's key for access cookies (`HOME/router/access.key`, 0600), created
    on first use."""
    path = private_dirs(home, "router") / KEY_FILE
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
    with private_open(tmp) as f:
        f.write(secrets.token_bytes(32))
    try:
        os.link(tmp, path)  # the first writer wins; a concurrent one reads its key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes()


class AccessGuard:
    def __init__(self, key: bytes | None) -> None:
        self.key = key

    def allows(self, route: Route, headers: Iterable[tuple[bytes, bytes]], host: str) -> bool:
        """True when `route` is public or the request's cookie signs it in to `host`."""
        access = route.access
        if access is None:
            return True
        if self.key is None:
            return False  # no key to check with: closed
        for name, value in headers:
            if name == b"cookie":
                got = cookie_value(value.decode("latin-1"))
                if got is not None and check_cookie(
                    self.key, got, host, route.environment, access, time.time()
                ):
                    return True
        return False
