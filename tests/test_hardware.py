"""dtype "auto" is chosen from the hardware; results say which dtype ran and what it computed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from promptrec.hardware import hardware_info, normalize_dtype, resolve_dtype_name


def _auto_in_subprocess(env: dict[str, str]) -> dict:
    code = (
        "import json; from promptrec.hardware import resolve_dtype_name, cpu_capability, cpu_has_fast_bf16;"
        "print(json.dumps({'dtype': resolve_dtype_name('auto', 'cpu'), 'cap': cpu_capability(),"
        " 'bf16': cpu_has_fast_bf16()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_avx2_cpu_gets_float32(allow_subprocess):
    # ATen capped at AVX2 (as on an AVX2-only CPU): bf16 has no hardware path, auto is float32.
    got = _auto_in_subprocess({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert got == {"dtype": "float32", "cap": "AVX2", "bf16": False}


def test_auto_follows_the_bf16_path_of_this_cpu(allow_subprocess):
    import torch

    native = _auto_in_subprocess({})
    has_bf16 = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert native["bf16"] == (has_bf16 and native["cap"] in ("AVX512", "AMX", "AVX512_BF16"))
    assert native["dtype"] == ("bfloat16" if native["bf16"] else "float32")
    # oneDNN capped below AVX512-BF16: no bf16 path even where ATen could use it.
    assert _auto_in_subprocess({"ONEDNN_MAX_CPU_ISA": "AVX2"})["dtype"] == "float32"


def test_dtype_names():
    assert normalize_dtype("bf16") == "bfloat16"
    assert normalize_dtype("torch.float32") == "float32"
    assert normalize_dtype(None) == "auto"
    assert resolve_dtype_name("fp16", "cpu") == "float16"
    with pytest.raises(ValueError, match="ranker.dtype"):
        normalize_dtype("int4")
    info = hardware_info("cpu", "fp32")
    assert info.dtype == "float32" and info.device == "cpu" and info.torch_threads >= 1


def test_settings_reject_an_unknown_dtype():
    from pydantic import ValidationError

    from promptrec.config import RankerSettings

    assert RankerSettings().dtype == "auto"
    with pytest.raises(ValidationError):
        RankerSettings(dtype="int8")


@pytest.mark.integration
def test_backend_reports_the_dtype_it_chose():
    from promptrec.ranker.backends.transformers_backend import TransformersBackend
    from ranker_support import model_dir

    backend = TransformersBackend(model_dir(), device="cpu", dtype="auto")
    expected = resolve_dtype_name("auto", "cpu")
    assert str(backend.dtype) == f"torch.{expected}"
    assert backend.hardware.dtype == expected
    assert backend.hardware.cpu_capability


# ----------------------------------------------------------------------------- tokens and batches


@pytest.mark.integration
def test_letters_reuses_the_history_prefix_and_counts_what_it_computed():
    from promptrec.ranker.backends.base import track_usage
    from promptrec.ranker.prompts import load_template
    from promptrec.ranker.strategies import ItemView, LettersStrategy
    from ranker_support import backend as load_backend

    fp32 = load_backend("float32")
    template = load_template("letters")
    history = [ItemView(f"Film {i} (199{i})", f"Film {i} (199{i}) — Drama") for i in range(8)]
    cands = [ItemView(f"Pick {c} (2001)", f"Pick {c} (2001) — Comedy") for c in "PQRSTU"]
    strategy = LettersStrategy(permutations=3)
    orders, prompts, _ = strategy.build_prompts(fp32, template, history, cands)
    encoded = [fp32.encode(p) for p in prompts]
    from promptrec.ranker.backends.base import common_prefix_length

    shared = common_prefix_length(encoded)
    assert shared > 50  # system prompt and the whole history
    with track_usage() as reused:
        a = strategy.score(fp32, template, history, cands)
    fp32.reuse_prefix = False
    try:
        with track_usage() as full:
            b = strategy.score(fp32, template, history, cands)
    finally:
        fp32.reuse_prefix = True
    assert full.computed == sum(len(e) for e in encoded) == a.prompt_tokens
    assert reused.computed == shared + sum(len(e) - shared for e in encoded)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


@pytest.mark.integration
def test_score_many_equals_one_user_at_a_time():
    from promptrec.ranker.prompts import load_template
    from promptrec.ranker.strategies import ItemView, LettersStrategy, YesNoStrategy
    from ranker_support import backend as load_backend

    fp32 = load_backend("float32")
    users = [
        ([ItemView("Alien (1979)", "Alien (1979) — Horror, Sci-Fi")],
         [ItemView(f"Cand {c} (1990)", f"Cand {c} (1990) — Action") for c in "ABCD"]),
        ([ItemView("Emma (1996)", "Emma (1996) — Romance"), ItemView("Heat (1995)", "Heat (1995) — Crime")],
         [ItemView(f"Other {c} (1980)", f"Other {c} (1980) — Drama") for c in "ABC"]),
        ([], []),
    ]
    for strategy, name in ((LettersStrategy(permutations=2), "letters"), (YesNoStrategy(), "yesno")):
        template = load_template(name)
        many = strategy.score_many(fp32, template, users)
        assert len(many) == 3 and many[2].scores == []
        for (history, cands), got in zip(users[:2], many[:2]):
            alone = strategy.score(fp32, template, history, cands)
            np.testing.assert_allclose(got.scores, alone.scores, atol=1e-6)
            assert got.prompt_tokens == alone.prompt_tokens
