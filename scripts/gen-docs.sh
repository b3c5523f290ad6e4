#!/usr/bin/env bash
# Regenerate the generated parts of docs/ from the code: the key reference of
# docs/configuration.md from the tristage.toml schema. `--check` changes nothing and
# exits 1 when a page is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
"$PY" - "$@" <<'PYEOF'
import sys
from pathlib import Path

from tristage.domain.config_doc import reference, splice

check = "--check" in sys.argv[1:]
page = Path("docs/configuration.md")
text = page.read_text(encoding="utf-8")
fresh = splice(text, reference())
if fresh == text:
    print(f"{page}: up to date")
elif check:
    print(f"{page}: stale; run 'bash scripts/gen-docs.sh'", file=sys.stderr)
    sys.exit(1)
else:
    page.write_text(fresh, encoding="utf-8")
    print(f"{page}: regenerated")
PYEOF
