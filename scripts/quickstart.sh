#!/usr/bin/env bash
# Set up tristage, then run the guide's whole workflow on the embedded default
# (SQLite, the built-in router, the bundled example app): `tristage quickstart`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tristage quickstart "$@"
