"""The secrets box: authenticated encryption (AES-256-GCM) under the platform master key.

The master key comes from `TRISTAGE_MASTER_KEY` (urlsafe base64 of 32 bytes) or from a
0600 key file in the platform home (`master.key`, created on first use).
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import TristageError
from ..paths import private_mkdirs

MAGIC = b"ts1:"
NONCE_BYTES = 12
KEY_FILE = "master.key"


class SecretBoxError(TristageError):
    pass


def _decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode() + b"==")
    except (ValueError, TypeError):
        key = b""
    if len(key) != 32:
        raise SecretBoxError(
            f"{source} is not a valid master key",
            "it must be the urlsafe base64 of 32 bytes (see 'tristage --help')",
        )
    return key


def load_master_key(home: Path) -> bytes:
    env = os.environ.get("TRISTAGE_MASTER_KEY")
    if env:
        return _decode_key(env, "TRISTAGE_MASTER_KEY")
    path = Path(os.environ.get("TRISTAGE_MASTER_KEY_FILE") or home / KEY_FILE)
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SecretBoxError(
                f"{path} is readable by other users (mode {mode:o})", f"run: chmod 600 {path}"
            )
        return _decode_key(path.read_text(encoding="ascii"), str(path))
    return _create_key_file(path)


def _create_key_file(path: Path) -> bytes:
    """A new key in a 0600 file (its directory 0700 if new), whatever the umask. The
    complete file is linked into place, so concurrent first uses agree on one key."""
    private_mkdirs(path.parent)
    key = AESGCM.generate_key(bit_length=256)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(base64.urlsafe_b64encode(key).decode().rstrip("=") + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process created it first: use theirs
            return _decode_key(path.read_text(encoding="ascii"), str(path))
    finally:
        tmp.unlink(missing_ok=True)
    return key


class SecretBox:
    """Encrypt/decrypt bytes; `context` binds a ciphertext to its owner (e.g. a variable id)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretBoxError("master key must be 32 bytes")
        self._aead = AESGCM(key)
        # how the key is written down (key file, TRISTAGE_MASTER_KEY): redacted from output
        self.key_text = base64.urlsafe_b64encode(key).decode().rstrip("=")

    @classmethod
    def for_home(cls, home: Path) -> SecretBox:
        return cls(load_master_key(home))

    def encrypt(self, plaintext: bytes, context: bytes = b"") -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return MAGIC + nonce + self._aead.encrypt(nonce, plaintext, context or None)

    def decrypt(self, blob: bytes, context: bytes = b"") -> bytes:
        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE_BYTES + 16:
            raise SecretBoxError("not a tristage ciphertext (corrupt or truncated)")
        nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES :], context or None)
        except InvalidTag:
            raise SecretBoxError(
                "a secret could not be decrypted: wrong master key or tampered data",
                "check TRISTAGE_MASTER_KEY / the master.key file of this platform home",
            ) from None

    def encrypt_text(self, text: str, context: str = "") -> bytes:
        return self.encrypt(text.encode("utf-8"), context.encode("utf-8"))

    def decrypt_text(self, blob: bytes, context: str = "") -> str:
        return self.decrypt(blob, context.encode("utf-8")).decode("utf-8")
