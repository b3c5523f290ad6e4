"""Where to bind a unix socket whose path may be too long for a socket address.

Standard library only, and nothing but `os` and `stat` at import (`hashlib` only for a
path that is too long): the pre-receive hook's client (`edges/hook_client.py`, run with
`python -I -S`, where tristage cannot be imported) loads a copy of this file from the
platform home, so the control plane and the client agree on the hook socket's address
the same way every other socket of the platform does (`paths.socket_path`).
"""

from __future__ import annotations

import os
import stat

# A unix socket's address holds 107 bytes; HAProxy first binds `NAME.PID.tmp` beside it.
SOCKET_PATH_MAX = 90


def socket_path(preferred: str) -> str:
    """Where to bind the unix socket meant to be at `preferred`: there when its path is
    short enough for a socket address, else the same name in a private directory of this
    user's (`$XDG_RUNTIME_DIR/tristage`, else `/tmp/tristage-UID`), prefixed by a hash of
    `preferred`'s directory, so every process asking for `preferred` gets the same path.
    A stand-in directory that is a link, another user's or open to others is refused
    (PermissionError)."""
    if len(os.fsencode(preferred)) <= SOCKET_PATH_MAX:
        return preferred
    import hashlib

    uid = os.getuid()
    directory, name = os.path.split(preferred)
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    base = os.path.join(runtime, "tristage") if runtime.startswith("/") else f"/tmp/tristage-{uid}"
    digest = hashlib.sha256(os.fsencode(directory)).hexdigest()[:16]
    path = os.path.join(base, f"{digest}-{name}")
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        base = f"/tmp/tristage-{uid}"
        path = os.path.join(base, f"{digest}-{name}")
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        raise PermissionError(
            f"{base} (for the unix socket {preferred}) is not a private directory of this "
            "user's; remove it, or use a shorter TRISTAGE_HOME"
        )
    return path
