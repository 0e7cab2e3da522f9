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
    """The generator named in settings, on the configured backend."""
    from promptrec.assets import resolve_model

    kind = settings.ranker.backend
    if kind == "vllm-server":
        from promptrec.ranker.backends.vllm_server import VLLMServerBackend

        return VLLMServerBackend.from_settings(settings)
    path = resolve_model(settings.generator, settings)
    if kind == "transformers":
        from promptrec.ranker.backends.transformers_backend import TransformersBackend
        from promptrec.model_files import check_model_dir

        check_model_dir(path, settings.generator)
        return TransformersBackend(path, model_id=settings.generator, device=settings.device, dtype=settings.ranker.dtype)
    if kind == "vllm-engine":
        from promptrec.ranker.backends.vllm_engine import VLLMEngineBackend

        return VLLMEngineBackend.from_settings(settings)
    raise ValueError(f"unknown ranker.backend {kind!r}")


def make_reranker(
    settings: Settings,
    backend: LLMBackend,
    template: str | None = None,
    *,
    n_candidates: int | None = None,
    permutations: int | None = None,
    history_items: int | None = None,
    timeout_s: float | None = None,
    seed: int = 0,
) -> LLMReranker:
    """The LLMReranker for the configured (or given) template; the keyword options override
    the settings. A letters template with more candidates than letters is a SettingsError."""
    from promptrec.ranker.prompts import LETTER_LABELS, load_template
    from promptrec.ranker.reranker import LLMReranker

    r = settings.ranker
    loaded = load_template(template or r.template).with_domain(settings.resolved_domain())
    n = n_candidates or settings.n_candidates
    if loaded.strategy == "letters" and n > LETTER_LABELS:
        raise SettingsError(
            f"n_candidates = {n}, but the letters template {loaded.origin} labels {LETTER_LABELS} candidates "
            "at most: lower n_candidates or use a likelihood/yesno template"
        )
    options = {"permutations": permutations or r.permutations, "seed": seed} if loaded.strategy == "letters" else None
    return LLMReranker(
        backend,
        loaded,
        strategy_options=options,
        timeout_s=timeout_s or r.timeout_s,
        max_history=r.history_items if history_items is None else history_items,
    )
