"""Turning a generator's GGUF into a safetensors folder that transformers and vLLM load."""

from __future__ import annotations

from pathlib import Path

from promptrec.assets.registry import CHATML_TEMPLATE
from promptrec.errors import AssetError


def convert_gguf(gguf_path: Path, out_dir: Path, *, chat_template: str | None = CHATML_TEMPLATE) -> Path:
    """Dequantise a GGUF into a bf16 safetensors folder `out_dir` (model + tokenizer).

    Writes into `out_dir` directly; callers wanting atomicity pass a temporary folder.
    `chat_template` is set when the GGUF's tokenizer carries none.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    folder, file = str(gguf_path.parent), gguf_path.name
    extra = {}
    try:  # newer transformers can keep GGUF weights packed (with `kernels`); ask for dense ones
        from transformers import GgufConfig

        extra["quantization_config"] = GgufConfig(dequantize=True)
    except (ImportError, TypeError):
        pass
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.bfloat16, **extra)
    # transformers may still mark a GGUF-loaded model as quantised and refuse to save it;
    # the weights are dequantised, so drop the marks and save a plain folder.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    packed = sorted({str(p.dtype) for p in model.parameters() if not p.dtype.is_floating_point})
    if packed:
        raise AssetError(
            f"{gguf_path.name}: transformers kept some weights packed ({', '.join(packed)}); "
            f"they cannot be saved as a plain safetensors folder. Upgrade or downgrade transformers."
        )
    if not getattr(tokenizer, "chat_template", None) and chat_template:
        tokenizer.chat_template = chat_template
    if not getattr(tokenizer, "chat_template", None):
        raise AssetError(f"{gguf_path.name}: the tokenizer has no chat template and none was given")
    # fail here, not in the first request, if the template cannot render
    tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)
