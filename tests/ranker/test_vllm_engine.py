"""The in-process vLLM engine backend beyond the shared contract (test_backend_contract.py):
bfloat16 against the float32 reference (the contract's BF16_* tolerances and ``logprob_tol``) and
prefix-cache reads. The recomputation of continuations whose cache hit reached into them is checked
in float32 by the contract (test_backend_contract.py).

Tests marked ``vllm`` need vLLM (``.venv-vllm/bin/python -m pytest -m vllm``); under CI=true a
missing vLLM fails them. The others are plain unit tests.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from ranker_support import MODEL_NAME, model_dir
from test_backend_contract import (
    BF16_LOGPROB_TOL,
    assert_bf16_scores_close,
    logprob_tol,
    prompt_pair,
    require_vllm,
)

from promptrec.ranker.backends import vllm_engine
from promptrec.ranker.backends.vllm_engine import (
    VLLMBackendError,
    check_logprob,
    common_prefix_length,
    engine_kwargs,
)

# ----------------------------------------------------------------------------- unit (no vLLM)


def test_engine_kwargs_for_cpu_and_gpu(monkeypatch):
    monkeypatch.setattr(vllm_engine, "has_gpu", lambda: False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    kwargs = engine_kwargs({"dtype": "float32", "block_size": None}, enable_prefix_caching=True)
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert kwargs["dtype"] == "float32" and kwargs["enable_prefix_caching"] is True
    assert kwargs["enforce_eager"] is True and kwargs["block_size"] == 32 and "kv_cache_gib" not in kwargs
    assert engine_kwargs({"block_size": 64}, enable_prefix_caching=True)["block_size"] == 64
    monkeypatch.setattr(vllm_engine, "has_gpu", lambda: True)
    gpu = engine_kwargs({}, enable_prefix_caching=True)
    assert gpu["enforce_eager"] is False and "block_size" not in gpu
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    monkeypatch.setattr(vllm_engine, "has_gpu", lambda: False)
    engine_kwargs({"kv_cache_gib": 1}, enable_prefix_caching=False)
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"  # the environment wins


def test_helpers():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert check_logprob(-1.5, "x") == -1.5 and check_logprob(1e-6, "x") == 0.0
    for bad in (float("nan"), 0.5, "abc", None):
        with pytest.raises(VLLMBackendError):
            check_logprob(bad, "x")


@pytest.mark.integration
def test_constructing_without_vllm_says_how_to_get_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    assert not vllm_engine.vllm_available()
    with pytest.raises(VLLMBackendError, match="setup_vllm.sh"):
        vllm_engine.VLLMEngineBackend(model_dir(), model_id=MODEL_NAME)


# ----------------------------------------------------------------------------- real engine


@pytest.fixture(scope="module")
def engine():
    require_vllm()
    # bf16 asked for explicitly: "auto" would pick float32 on an AVX2-only CPU (test_hardware.py)
    backend = vllm_engine.VLLMEngineBackend(model_dir(), model_id=MODEL_NAME, dtype="bfloat16")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def reference():
    from promptrec.ranker.backends.transformers_backend import TransformersBackend

    return TransformersBackend(model_dir(), model_id=MODEL_NAME, device="cpu", dtype="float32")


@pytest.mark.vllm
def test_bf16_with_prefix_caching_on_by_default(engine):
    config = engine.llm.llm_engine.vllm_config
    assert str(config.model_config.dtype) == "torch.bfloat16"
    assert config.cache_config.enable_prefix_caching and engine.reuse_prefix
    assert engine.block_size >= 16


@pytest.mark.vllm
def test_bf16_label_logprobs_close_to_fp32_reference(engine, reference):
    prompts = prompt_pair(reference)
    ids = reference.label_token_ids([" " + chr(ord("A") + i) for i in range(20)] + [" Yes", " No"])
    diff = np.abs(engine.next_token_logprobs(prompts, ids) - reference.next_token_logprobs(prompts, ids))
    assert diff.max() < BF16_LOGPROB_TOL


@pytest.mark.vllm
@pytest.mark.parametrize("template", ["letters", "likelihood", "yesno"])
def test_bf16_strategy_scores_close_to_fp32_reference(engine, reference, template):
    assert_bf16_scores_close(engine, reference, template)


@pytest.mark.vllm
def test_shared_prefix_is_read_from_cache_only_with_reuse(engine):
    prompts = prompt_pair(engine)
    shared = common_prefix_length([engine.encode(p) for p in prompts])
    assert shared >= engine.block_size
    ids = engine.label_token_ids([" A", " B"])
    engine.llm.reset_prefix_cache()
    before = dict(engine.cache_stats)
    off = engine.next_token_logprobs(prompts, ids, reuse_prefix=False)
    assert engine.cache_stats["cached_tokens"] == before["cached_tokens"]
    engine.llm.reset_prefix_cache()
    before = dict(engine.cache_stats)
    on = engine.next_token_logprobs(prompts, ids, reuse_prefix=True)
    cached = engine.cache_stats["cached_tokens"] - before["cached_tokens"]
    # The second prompt reads every full block of the shared prefix written by the first.
    assert cached == (shared // engine.block_size) * engine.block_size
    # Reused and recomputed prefixes run different bf16 kernels: one log-prob's bf16 tolerance
    # (measured max |diff| .05 on an AMD EPYC with AVX512-BF16, .10 on an Intel Xeon with AMX).
    assert np.abs(on - off).max() < logprob_tol("bfloat16")


@pytest.mark.vllm
def test_labels_beyond_the_top_k_cap(engine):
    """More label ids than max_logprobs (20), the farthest at the bottom of the vocabulary."""
    prompt = prompt_pair(engine)[0]
    ids = engine.label_token_ids([chr(ord("A") + i) for i in range(26)]) + list(range(30))
    got = engine.next_token_logprobs([prompt], ids)
    assert got.shape == (1, 56) and np.all(np.isfinite(got)) and got.min() < -20


@pytest.mark.integration
def test_closed_engine_raises(reference):
    backend = vllm_engine.VLLMEngineBackend(
        model_dir(), model_id=MODEL_NAME, llm=_FakeLLM(reference.tokenizer)
    )
    backend.close()
    with pytest.raises(VLLMBackendError, match="closed"):
        backend.chat([{"role": "user", "content": "hi"}], 4)


class _FakeLLM:
    """Just enough of vllm.LLM for construction and close()."""

    class _Engine:
        class vllm_config:  # noqa: N801
            class cache_config:  # noqa: N801
                block_size = 128

        cache_config = vllm_config.cache_config

        class engine_core:  # noqa: N801
            @staticmethod
            def shutdown() -> None:
                return None

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.llm_engine = self._Engine()

    def get_tokenizer(self):
        return self._tokenizer
