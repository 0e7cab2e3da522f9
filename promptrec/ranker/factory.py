"""Build the configured backend and reranker from Settings (one place that knows them all)."""

from __future__ import annotations

from promptrec.config import Settings
from promptrec.ranker.backends.base import LLMBackend


def make_backend(settings: Settings) -> LLMBackend:
    """The generator named in settings, on the configured backend."""
    from promptrec.assets import resolve_model

    kind = settings.ranker.backend
    if kind == "vllm-server":
        from promptrec.ranker.backends.vllm_server import VLLMServerBackend

        return VLLMServerBackend.from_settings(settings)
    path = resolve_model(settings.generator, settings)
    if kind == "transformers":
        from promptrec.ranker.backends.transformers_backend import TransformersBackend

        return TransformersBackend(path, model_id=settings.generator, device=settings.device)
    if kind == "vllm-engine":
        from promptrec.ranker.backends.vllm_engine import VLLMEngineBackend

        return VLLMEngineBackend.from_settings(settings)
    raise ValueError(f"unknown ranker.backend {kind!r}")


def make_reranker(settings: Settings, backend: LLMBackend, template: str | None = None):
    """The LLMReranker for the configured (or given) template."""
    from promptrec.ranker.reranker import LLMReranker

    options = {"permutations": settings.ranker.permutations}
    from promptrec.ranker.prompts import load_template

    loaded = load_template(template or settings.ranker.template).with_domain(settings.resolved_domain())
    return LLMReranker(
        backend,
        loaded,
        strategy_options=options if loaded.strategy == "letters" else None,
        timeout_s=settings.ranker.timeout_s,
        max_history=settings.ranker.history_items,
    )
