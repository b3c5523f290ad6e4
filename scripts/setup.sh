#!/usr/bin/env bash
# Set up tristage in ./.venv (idempotent): Python >= 3.11, the package and its dev extras,
# and bubblewrap (the sandbox every build and release runs in) where it can be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing bubblewrap (the sandbox)" >&2
    (apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; }) \
      || echo "setup: could not install bubblewrap; run: apt-get install -y bubblewrap" >&2
  else
    echo "setup: bubblewrap is missing (builds and releases cannot be sandboxed);" \
      "install it with: sudo apt-get install -y bubblewrap" >&2
  fi
fi

# `--test`: also the system packages the tests drive for real (the production edges, a local ACME
# CA, a browser); the main command does not need them.
if [ "${1:-}" = "--test" ]; then
  missing=()
  for pkg in caddy haproxy pebble chromium; do
    command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "setup: installing ${missing[*]} (used by the tests)" >&2
      (apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; }) \
        || echo "setup: could not install ${missing[*]}; the tests that need them are skipped" >&2
    else
      echo "setup: ${missing[*]} missing; install with: sudo apt-get install -y ${missing[*]}" >&2
    fi
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.tristage-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # uv installs the dependencies several times faster than pip; pip stays the fallback
  if .venv/bin/python -m pip install --quiet uv >/dev/null 2>&1 \
    && .venv/bin/python -m uv pip install --quiet --python .venv/bin/python -e '.[dev]'; then
    :
  else
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
  fi
  touch "$stamp"
fi
