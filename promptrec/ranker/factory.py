"""Build the configured backend and reranker from Settings (one place that knows them all)."""

from __future__ import annotations

from promptrec.config import Settings
from promptrec.ranker.backends.base import LLMBackend


def make_backend(settings: Settings) -> LLMBackend:
    """The generator named in settings, on the configured backend."""
    from promptrec.assets import resolve_model

    from promptrec.ranker.tuning import resolve_tuned

    kind = settings.ranker.backend
    tuned = resolve_tuned(settings)  # the LoRA adapter of `promptrec train ranker`, if any
    # vLLM serves the merged folder (weights and tokenizer); transformers loads the adapter.
    served = {"model_path": tuned.merged_path, "model_id": tuned.model_id} if tuned else {}
    if kind == "vllm-server":
        from promptrec.ranker.backends.vllm_server import VLLMServerBackend

        backend = VLLMServerBackend.from_settings(settings, **served)
    elif kind == "transformers":
        from promptrec.ranker.backends.transformers_backend import TransformersBackend

        backend = TransformersBackend(
            resolve_model(settings.generator, settings), model_id=tuned.model_id if tuned else settings.generator,
            device=settings.device, adapter=tuned.adapter_path if tuned else None,
        )
    elif kind == "vllm-engine":
        from promptrec.ranker.backends.vllm_engine import VLLMEngineBackend

        backend = VLLMEngineBackend.from_settings(settings, **served)
    else:
        raise ValueError(f"unknown ranker.backend {kind!r}")
    backend.adapter = tuned.manifest if tuned else None
    return backend


def make_reranker(settings: Settings, backend: LLMBackend, template: str | None = None):
    """The LLMReranker for the configured (or given) template."""
    from promptrec.ranker.reranker import LLMReranker

    options = {"permutations": settings.ranker.permutations}
    from promptrec.ranker.prompts import load_template

    from promptrec.ranker.tuning import check_template

    loaded = load_template(template or settings.ranker.template)
    check_template(backend, loaded)
    return LLMReranker(
        backend,
        loaded,
        strategy_options=options if loaded.strategy == "letters" else None,
        timeout_s=settings.ranker.timeout_s,
        max_history=settings.ranker.history_items,
    )
