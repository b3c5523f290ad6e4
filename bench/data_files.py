"""Data-directory files benchmark: backup, restore and drill of an environment whose data
directory holds --files files of --kib KiB each (random bytes, like photos), encrypted
(production) and not (preview), against the floor: `tar -c` of the same directory into
`sha256sum`, and `tar -x` of that archive.

    .venv/bin/python bench/data_files.py --files 2000 --kib 64
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CONFIG = """
[project]
name = "shop"

[environments.preview]
tier = "preview"
branches = ["test"]

[environments.production]
tier = "production"
branches = ["main"]
"""


def fill(data: Path, files: int, kib: int) -> int:
    total = 0
    for i in range(files):
        d = data / "uploads" / f"{i % 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        blob = os.urandom(kib * 1024)
        (d / f"photo-{i}.jpg").write_bytes(blob)
        total += len(blob)
    return total


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--kib", type=int, default=64)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-files-"))
    os.environ["TRISTAGE_HOME"] = str(tmp / "home")
    from tristage.api import Tristage

    repo = tmp / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "tristage.toml").write_text(CONFIG)
    api = Tristage(tmp / "home")
    api.open_project(repo)
    try:
        print(f"{args.files} files of {args.kib} KiB")
        for env in ("preview", "production"):
            data = api.data.data_dir("shop", env)
            total = fill(data, args.files, args.kib)
            mb = total / 1e6
            holder: list[str] = []
            t_backup = timed(lambda: holder.append(api.data.backup("shop", env).id))  # noqa: B023
            bid = holder[0]
            shutil.rmtree(data / "uploads")
            t_restore = timed(lambda: api.data.restore("shop", env, bid, yes=True))  # noqa: B023
            t_drill = timed(lambda: api.data.drill("shop", env, bid))  # noqa: B023
            enc = "encrypted" if env == "production" else "plain"
            print(
                f"  {env:<10} ({enc:>9}) backup {t_backup:6.2f}s ({mb / t_backup:6.1f} MB/s)"
                f"  restore {t_restore:6.2f}s (incl. safety backup)  drill {t_drill:6.2f}s"
            )
        archive = tmp / "floor.tar"
        data = api.data.data_dir("shop", "preview")
        t_tar = timed(
            lambda: subprocess.run(
                f"tar -cf - -C {data} uploads | tee {archive} | sha256sum >/dev/null",
                shell=True,
                check=True,
            )
        )
        out = tmp / "floor-out"
        out.mkdir()
        t_untar = timed(lambda: subprocess.run(["tar", "-xf", archive, "-C", out], check=True))
        print(f"  floor: tar -c | sha256sum {t_tar:.2f}s, tar -x {t_untar:.2f}s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
