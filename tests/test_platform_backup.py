"""`tristage platform backup/restore`: an encrypted copy of the platform's state store
that restores under the same master key and is refused under another or when altered."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tristage.api import Tristage
from tristage.errors import UsageError
from tristage.services.platform_backup import PlatformBackupError


def test_platform_backup_restores_the_state_and_hides_it(api: Tristage, repo: Path) -> None:
    (repo / "tristage.toml").write_text(
        '[project]\nname = "shop"\n[environments.production]\ntier = "production"\n'
        'branches = ["main"]\n'
    )
    api.open_project(repo)
    api.variables.set("shop", "STRIPE_SECRET_KEY", "sk_live_platformbackup",
                      environments=["production"], secret=True)  # fmt: skip
    key = api.project_salt("shop")
    out = repo.parent / "platform.tsplatform"
    info = api.platform_backup(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and info.bytes == out.stat().st_size
    raw = out.read_bytes()
    assert b"shop" not in raw and b"sk_live" not in raw and key not in raw
    assert not [p for p in (api.home / "tmp").iterdir() if p.is_file()]
    with pytest.raises(UsageError):
        api.platform_backup(out)  # never overwrites
    # the state changes, then comes back
    api.store.execute("DELETE FROM projects")
    with pytest.raises(UsageError, match="--yes"):
        api.platform_restore(out)
    api.platform_restore(out, yes=True)
    assert api.project_salt("shop") == key
    # the audit log is the backup's, and then the restore
    assert [e.action for e in api.audit.events(action="platform.*")] == ["platform.restore"]
    # altered or cut: refused, state untouched
    bad = repo.parent / "bad.tsplatform"
    bad.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(PlatformBackupError, match="cannot be decrypted"):
        api.platform_restore(bad, yes=True)
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PlatformBackupError):
        api.platform_restore(bad, yes=True)
    assert api.project_salt("shop") == key


def test_another_master_key_cannot_restore(
    api: Tristage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "p.tsplatform"
    api.platform_backup(out)
    monkeypatch.delenv("TRISTAGE_MASTER_KEY", raising=False)
    monkeypatch.delenv("TRISTAGE_MASTER_KEY_FILE", raising=False)
    other = Tristage(tmp_path / "other-home")  # a new home: a new master key
    with pytest.raises(PlatformBackupError, match="another master key"):
        other.platform_restore(out, yes=True)
    other.close()


_HOLD = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from tristage.edges.homelock import HomeLock\n"
    "HomeLock(Path(sys.argv[1])).acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(60)\n"
)


def test_restore_is_refused_while_the_control_plane_holds_the_home(api: Tristage) -> None:
    out = api.home.parent / "p.tsplatform"
    api.platform_backup(out)
    # another process holds the home's lock, as `tristage up` does while it runs
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(api.home)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(UsageError, match=rf"control plane runs.*pid {holder.pid}"):
            api.platform_restore(out, yes=True)
    finally:
        holder.kill()
        holder.wait()
    assert [e.action for e in api.audit.events(action="platform.restore")] == []
    api.platform_restore(out, yes=True)  # stopped: the restore goes ahead
    assert [e.action for e in api.audit.events(action="platform.restore")] == ["platform.restore"]
