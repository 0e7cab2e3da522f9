"""Build the configured backend and reranker from Settings (the one place that knows them all;
`Recommender` and the eval harness both build through here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from promptrec.config import Settings
from promptrec.errors import SettingsError
from promptrec.ranker.backends.base import LLMBackend

if TYPE_CHECKING:
    from promptrec.ranker.reranker import LLMReranker


def make_backend(settings: Settings) -> LLMBackend:
    """The generator named in settings, on the configured backend, with the LoRA adapter of
    `promptrec train ranker` when one is found (``ranker.adapter``): transformers loads the
    adapter, vLLM serves the merged folder (weights and tokenizer)."""
    from promptrec.assets import resolve_model
    from promptrec.ranker.adapters import resolve_tuned

    kind = settings.ranker.backend
    tuned = resolve_tuned(settings)
    served = {"model_path": tuned.merged_path, "model_id": tuned.model_id} if tuned else {}
    if kind == "vllm-server":
        from promptrec.ranker.backends.vllm_server import VLLMServerBackend

        backend = VLLMServerBackend.from_settings(settings, **served)
    elif kind == "transformers":
        from promptrec.model_files import check_model_dir
        from promptrec.ranker.backends.transformers_backend import TransformersBackend

        path = resolve_model(settings.generator, settings)
        check_model_dir(path, settings.generator)
        backend = TransformersBackend(
            path, model_id=tuned.model_id if tuned else settings.generator, device=settings.device,
            dtype=settings.ranker.dtype, adapter=tuned.adapter_path if tuned else None,
        )
    elif kind == "vllm-engine":
        from promptrec.ranker.backends.vllm_engine import VLLMEngineBackend

        backend = VLLMEngineBackend.from_settings(settings, **served)
    else:
        raise ValueError(f"unknown ranker.backend {kind!r}")
    backend.adapter = tuned.manifest if tuned else None
    return backend


def make_reranker(
    settings: Settings,
    backend: LLMBackend,
    template: str | None = None,
    *,
    n_candidates: int | None = None,
    permutations: int | None = None,
    history_items: int | None = None,
    timeout_s: float | None = None,
    seed: int | None = None,
) -> LLMReranker:
    """The LLMReranker for the configured (or given) template; the keyword options override
    the settings. A letters template with more candidates than letters is a SettingsError."""
    from promptrec.ranker.prompts import LETTER_LABELS, load_template
    from promptrec.ranker.reranker import LLMReranker

    r = settings.ranker
    loaded = load_template(template or r.template, settings.prompts_dir).with_domain(settings.resolved_domain())
    n = n_candidates or settings.n_candidates
    if loaded.strategy == "letters" and n > LETTER_LABELS:
        raise SettingsError(
            f"n_candidates = {n}, but the letters template {loaded.origin} labels {LETTER_LABELS} candidates "
            "at most: lower n_candidates or use a likelihood/yesno template"
        )
    from promptrec.ranker.adapters import check_template

    check_template(backend, loaded)
    seed = r.seed if seed is None else seed
    options = {"permutations": permutations or r.permutations, "seed": seed} if loaded.strategy == "letters" else None
    return LLMReranker(
        backend,
        loaded,
        strategy_options=options,
        timeout_s=timeout_s or r.timeout_s,
        max_history=r.history_items if history_items is None else history_items,
    )
