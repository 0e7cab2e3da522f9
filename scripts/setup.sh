#!/usr/bin/env bash
# Create .venv (once) and install promptrec with everything its tests and demo need.
# torch is pinned to the local CPU build first, so nothing can pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.promptrec-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[all,dev,docs]"
  echo "$want" > "$stamp"
fi
# The chat page's browser test (tests/serve/test_serve_browser.py) drives Debian's chromium; install it
# once where we may (root with apt-get). Elsewhere that test is skipped (a failure under CI=true).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "setup.sh: apt-get install chromium failed; the browser test will not run" >&2
fi
# The live store's PostgreSQL tests start a server of their own from Debian's postgresql package.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >/dev/null 2>&1 \
    || echo "setup.sh: apt-get install postgresql failed; the PostgreSQL tests will not run" >&2
fi
