#!/usr/bin/env bash
# Set up tristage (if needed), then run the test suite, all of it (the `slow` end-to-end tests too).
#
# Every test is isolated (a platform home under tmp_path, ports from free_port, uniquely named
# PostgreSQL databases), so the suite runs on one pytest-xdist worker per core; a module whose
# tests share one control plane in file order is kept on one worker (`xdist_group`). Arguments go to pytest: `-n 0` runs serially, `-m "not slow"`
# leaves out the end-to-end tests that start a control plane.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest -q -n auto --dist loadgroup "$@"
