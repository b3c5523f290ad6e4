from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tristage.edges.secrets import SecretBox, SecretBoxError, load_master_key


def test_roundtrip_and_key_file_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRISTAGE_MASTER_KEY", raising=False)
    monkeypatch.delenv("TRISTAGE_MASTER_KEY_FILE", raising=False)
    box = SecretBox.for_home(tmp_path)
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600
    blob = box.encrypt_text("sk_live_abc", "var:1")
    assert b"sk_live_abc" not in blob
    assert box.decrypt_text(blob, "var:1") == "sk_live_abc"
    with pytest.raises(SecretBoxError):
        box.decrypt_text(blob, "var:2")  # bound to its context
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(SecretBoxError):
        box.decrypt_text(tampered, "var:1")
    # the same key file gives the same key
    assert SecretBox.for_home(tmp_path).decrypt_text(blob, "var:1") == "sk_live_abc"


def test_world_readable_key_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRISTAGE_MASTER_KEY", raising=False)
    monkeypatch.delenv("TRISTAGE_MASTER_KEY_FILE", raising=False)
    load_master_key(tmp_path)
    os.chmod(tmp_path / "master.key", 0o644)
    with pytest.raises(SecretBoxError, match="chmod 600"):
        load_master_key(tmp_path)


def test_env_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRISTAGE_MASTER_KEY", "not-a-key")
    with pytest.raises(SecretBoxError, match="TRISTAGE_MASTER_KEY"):
        load_master_key(tmp_path)
