"""A hostile build step: tries to poison what other builds and releases run.

Run by a `build` command of tristage.toml. It reads `targets.json` (absolute
paths on the platform's machine, written by the test) and tries to overwrite the
`hostiledep` package it was built with (its own cached virtualenv), every copy
of it under the target directories (another environment's cache), and to plant
files in the target directories (pip caches, another deployment's artifact).
It also reports its capabilities, open files and the names of its environment
variables. It prints one line, `BUILD-REPORT {json}`, and always exits 0.
"""

import errno
import glob
import json
import os

POISON = 'VALUE = "poisoned"\n'


def attempt(path: str, text: str) -> str:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "written"


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError as exc:
        return str(exc)


def main() -> None:
    targets = {}
    if os.path.exists("targets.json"):
        with open("targets.json") as f:
            targets = json.load(f)
    report: dict[str, object] = {}
    try:
        import hostiledep

        report["own"] = {hostiledep.__file__: attempt(hostiledep.__file__, POISON)}
    except ImportError as exc:
        report["own"] = f"import failed: {exc}"
    found: dict[str, str] = {}
    for pattern in targets.get("poison", []):
        for path in glob.glob(pattern, recursive=True):
            found[path] = attempt(path, POISON)
    report["poison"] = found
    report["plant"] = {
        d: attempt(os.path.join(d, "planted-by-a-feature-build"), "x")
        for d in targets.get("plant", [])
    }
    with open("/proc/self/status") as f:
        caps = [line.split()[1] for line in f if line.startswith("CapEff:")]
    report["cap_eff"] = int(caps[0], 16)
    report["fds"] = {fd: _link(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    report["env"] = sorted(os.environ)
    print("BUILD-REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
