#!/usr/bin/env bash
# Set up (idempotent), then run the whole test suite on real models, data and Chroma.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -q "$@"
