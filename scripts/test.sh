#!/usr/bin/env bash
# Set up tristage (if needed), then run the test suite, all of it (the `slow` end-to-end tests too).
#
# Every test is isolated (a platform home under tmp_path, ports from free_port, uniquely named
# PostgreSQL databases), so the suite runs on one pytest-xdist worker per core. Each module runs
# on one worker, in file order (`--dist loadfile`): some modules share one control plane across
# their tests (`xdist_group` no longer keeps a group together under pytest 9). Arguments go to
# pytest: `-n 0` runs serially, `-m "not slow"` leaves out the end-to-end tests that start a
# control plane.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest -q -n auto --dist loadfile "$@"
