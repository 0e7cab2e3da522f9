#!/usr/bin/env bash
# Build the docs site into site/ with warnings as errors (a broken link or reference fails).
# Sets up .venv (scripts/setup.sh) and installs the `docs` extra into it when it is missing:
# the settings and command-line references are generated from promptrec itself at build time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! .venv/bin/python -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet -e ".[docs]"
fi
export NO_MKDOCS_2_WARNING=1
.venv/bin/mkdocs build --strict --site-dir site "$@"
