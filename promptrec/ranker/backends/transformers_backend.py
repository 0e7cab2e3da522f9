"""`LLMBackend` on Hugging Face transformers: the embedded CPU default.

* Device ``"auto"``: CUDA when available, else CPU. dtype ``"auto"``: chosen from the hardware
  (`promptrec.hardware.auto_dtype`: bf16 on CPUs with AVX512-BF16/AMX and bf16-capable GPUs, float16 on
  older GPUs, float32 on AVX2-only CPUs, where bf16 is ~6x slower). In bf16/fp16 the vocabulary
  projection gets a float32 copy (``fp32_head``): bf16 logits are rounded to steps of ~0.1, as
  coarse as the score differences being compared. Log-softmax is taken in float32.
* Every model call runs under `torch.inference_mode()` and one lock, so a shared backend
  (and a shared Recommender) can be used from several threads; calls are serialised.
* Shared prefixes: `continuation_logprobs` encodes its prefix once; `next_token_logprobs`
  finds the longest common token prefix of its prompts. Either way the prefix is run once,
  its KV cache (a `DynamicCache`) is repeated over the batch, and only the per-prompt
  suffixes are run, right-padded, in batches of ``max_batch``. With right padding no real
  token attends to a pad, so the scores equal separate full passes (up to float rounding).
  ``reuse_prefix=False`` runs full passes instead (the reference, and the benchmark baseline).
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from promptrec.ranker.backends.base import TokenizerOps, common_prefix_length, continues_final_message, record_usage
from promptrec.ranker.backends.quoted import QuotedChoices, TokenTexts
from promptrec.extras import require
from promptrec.hardware import HardwareInfo, hardware_info, resolve_device, resolve_dtype_name

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.config import Settings

_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Below this many shared tokens, prefix reuse is not worth the cache copy.
MIN_SHARED_PREFIX = 8


def resolve_torch_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """A torch dtype; ``None`` or ``"auto"`` is chosen from the hardware (`promptrec.hardware.auto_dtype`)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    return _TORCH_DTYPES[resolve_dtype_name(dtype, str(device))]


class TransformersBackend(TokenizerOps):
    """A causal LM from a local folder (safetensors + tokenizer), behind `LLMBackend`."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        model_id: str | None = None,
        device: str = "auto",
        dtype: str | torch.dtype | None = None,
        max_batch: int = 16,
        reuse_prefix: bool = True,
        fp32_head: bool = True,
        adapter: str | Path | None = None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path = Path(model_path)
        self.model_id = model_id or self.model_path.name
        self.device = torch.device(resolve_device(device))
        self.dtype = resolve_torch_dtype(dtype, self.device)
        self.max_batch = max(1, int(max_batch))
        self.reuse_prefix = reuse_prefix
        self._lock = threading.RLock()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
        self.model.to(self.device)
        self.model.eval()
        self.fp32_head = fp32_head and self.dtype != torch.float32 and self._float32_head()
        self._pad_id = self._find_pad_id()
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        if adapter is not None:  # a LoRA adapter (`promptrec train ranker`), applied unmerged (after the
            # signature check above: peft's forward takes **kwargs)
            peft = require("peft", "train", "serving a LoRA-tuned ranker on transformers")

            self.model = peft.PeftModel.from_pretrained(self.model, str(adapter))
            self.model.eval()

    @classmethod
    def from_settings(cls, settings: "Settings", **kwargs: Any) -> "TransformersBackend":
        """The generator named in settings, fetched/converted by `promptrec.assets.resolve_model`."""
        from promptrec.assets import resolve_model

        path = resolve_model(settings.generator, settings)
        kwargs.setdefault("device", settings.device)
        kwargs.setdefault("dtype", settings.ranker.dtype)
        return cls(path, model_id=settings.generator, **kwargs)

    @property
    def hardware(self) -> HardwareInfo:
        """Device, dtype and CPU capability this backend runs with."""
        return hardware_info(str(self.device), str(self.dtype).replace("torch.", ""))

    def _float32_head(self) -> bool:
        """Give the vocabulary projection its own float32 weights (and float32 input).

        bfloat16 logits of magnitude ~16 are rounded to steps of 0.125, coarser than the
        differences the scoring strategies compare (a 135M model's Yes/No log-odds vary by
        ~0.1 across candidates). A float32 head costs one float32 copy of the projection
        (113 MB for SmolLM2) and, with only the scored positions projected, little time.
        """
        head = self.model.get_output_embeddings()
        if not isinstance(head, torch.nn.Linear):
            return False
        new = torch.nn.Linear(head.in_features, head.out_features, bias=head.bias is not None,
                              device=head.weight.device, dtype=torch.float32)
        with torch.no_grad():
            new.weight.copy_(head.weight.float())
            if head.bias is not None:
                new.bias.copy_(head.bias.float())
        new.register_forward_pre_hook(lambda _module, args: tuple(a.float() for a in args))
        new.requires_grad_(False)
        self.model.set_output_embeddings(new)
        return True

    # ------------------------------------------------------------------ tokens

    def _find_pad_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0  # pragma: no cover

    # ------------------------------------------------------------------ forward passes

    def _forward(self, input_ids: torch.Tensor, cache: Any = None, logits_to_keep: int | torch.Tensor = 0) -> Any:
        """One forward pass; ``logits_to_keep`` (an int: the last n positions; a 1-D tensor: these
        positions) limits the vocabulary projection to the positions that are scored."""
        kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": cache is not None}
        if cache is not None:
            kwargs[self._cache_kw] = cache
        if isinstance(logits_to_keep, torch.Tensor) or logits_to_keep:
            kwargs["logits_to_keep"] = logits_to_keep
        return self.model(**kwargs)

    def _logprobs(self, input_ids: torch.Tensor, positions: list[int], cache: Any = None) -> tuple[torch.Tensor, dict]:
        """Float32 log-softmax at the given positions (shared by the batch): (B, len(positions), V)
        and a map from position to its column."""
        keep = sorted(set(positions))
        logits = self._forward(input_ids, cache=cache, logits_to_keep=torch.tensor(keep, device=self.device)).logits
        return logits.float().log_softmax(-1), {pos: j for j, pos in enumerate(keep)}

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # pragma: no cover - older transformers
            return DynamicCache()

    def _pad(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Right-padded batch of token rows (its real and padded positions are recorded as usage)."""
        width = max(len(r) for r in rows)
        real = sum(len(r) for r in rows)
        record_usage(real, padded=width * len(rows) - real)
        batch = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            batch[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        return batch.to(self.device)

    def _chunks(self, rows: Sequence[Sequence[int]]) -> Iterator[list[int]]:
        """Indices of rows in batches of similar length (sorted by length to cut padding)."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        for start in range(0, len(order), self.max_batch):
            yield order[start : start + self.max_batch]

    def _shared_prefix_pass(
        self,
        prefix: list[int],
        suffixes: list[list[int]],
        targets: list[int] | None,
        reuse: bool,
    ) -> tuple[list[float], np.ndarray | None]:
        """Run prefix + each suffix, the prefix once when ``reuse`` (its KV cache repeated over the batch).

        Without ``targets``: for each suffix, the summed log-prob of its tokens given the prefix
        (the prefix must not be empty). With ``targets``: the log-probs of those token ids after
        prefix + suffix, shape (len(suffixes), len(targets)); the sums are then not computed.
        Only the positions scored are projected onto the vocabulary.
        """
        n = len(suffixes)
        sums = [0.0] * n
        nexts = np.zeros((n, len(targets)), dtype=np.float64) if targets is not None else None
        target_t = torch.tensor(targets, dtype=torch.long, device=self.device) if targets is not None else None
        if n == 0:
            return sums, nexts
        if any(len(s) == 0 for s in suffixes):
            raise ValueError("every suffix needs at least one token")

        if reuse and prefix:
            record_usage(len(prefix))
            out = self._forward(torch.tensor([prefix], device=self.device), cache=self._new_cache(), logits_to_keep=1)
            prefix_cache = out.cache if hasattr(out, "cache") else out.past_key_values
            prefix_last = out.logits[0, -1].float().log_softmax(-1)
            for idx in self._chunks(suffixes):
                rows = [suffixes[i] for i in idx]
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(rows))
                if nexts is not None:  # only each row's last position
                    wanted = [len(r) - 1 for r in rows]
                else:  # every suffix position but the last predicts a suffix token
                    wanted = list(range(max(len(r) for r in rows) - 1)) or [0]
                logp, col = self._logprobs(self._pad(rows), wanted, cache=cache)
                for b, i in enumerate(idx):
                    row = torch.tensor(rows[b], device=self.device)
                    if nexts is not None:
                        nexts[i] = logp[b, col[len(row) - 1], target_t].double().cpu().numpy()
                        continue
                    total = prefix_last[row[0]]
                    if len(row) > 1:
                        cols = torch.tensor([col[p] for p in range(len(row) - 1)], device=self.device)
                        total = total + logp[b, cols, row[1:]].sum()
                    sums[i] = float(total)
                del logp
        else:
            full = [prefix + s for s in suffixes]
            start = max(len(prefix), 1)  # with no prefix nothing predicts the first token
            for idx in self._chunks(full):
                rows = [full[i] for i in idx]
                if nexts is not None:
                    wanted = [len(r) - 1 for r in rows]
                else:
                    wanted = list(range(start - 1, max(len(r) for r in rows) - 1))
                logp, col = self._logprobs(self._pad(rows), wanted)
                for b, i in enumerate(idx):
                    row = torch.tensor(rows[b], device=self.device)
                    if nexts is not None:
                        nexts[i] = logp[b, col[len(row) - 1], target_t].double().cpu().numpy()
                        continue
                    cols = torch.tensor([col[p] for p in range(start - 1, len(row) - 1)], device=self.device)
                    sums[i] = float(logp[b, cols, row[start:]].sum())
                del logp
        return sums, nexts

    # ------------------------------------------------------------------ protocol: scoring

    def next_token_logprobs(
        self, prompts: list[str], token_ids: list[int], *, reuse_prefix: bool | None = None
    ) -> np.ndarray:
        reuse = self.reuse_prefix if reuse_prefix is None else reuse_prefix
        if not prompts:
            return np.zeros((0, len(token_ids)))
        encoded = [self.encode(p) for p in prompts]
        if any(not e for e in encoded):
            raise ValueError("an empty prompt has no next token to score")
        shared = common_prefix_length(encoded)
        shared = min(shared, min(len(e) for e in encoded) - 1)  # every prompt keeps >= 1 own token
        if len(prompts) < 2 or shared < MIN_SHARED_PREFIX:
            reuse, shared = False, 0
        prefix = encoded[0][:shared]
        suffixes = [e[shared:] for e in encoded]
        with self._lock, torch.inference_mode():
            _, nexts = self._shared_prefix_pass(prefix, suffixes, list(token_ids), reuse)
        assert nexts is not None
        return nexts

    def continuation_logprobs(
        self, prefix: str, continuations: list[str], *, reuse_prefix: bool | None = None
    ) -> list[float]:
        reuse = self.reuse_prefix if reuse_prefix is None else reuse_prefix
        prefix_ids, suffixes = self.continuation_token_ids(prefix, continuations)
        if not prefix_ids:
            raise ValueError("continuation_logprobs needs a non-empty prefix")
        with self._lock, torch.inference_mode():
            sums, _ = self._shared_prefix_pass(prefix_ids, suffixes, None, reuse)
        return sums

    # ------------------------------------------------------------------ protocol: generation

    # chat() and chat_stream() take ``quoted``: strings that quoted text must be one of
    # (`promptrec.ranker.backends.quoted`); backends without it generate freely.
    constrains_quotes = True
    _token_texts: TokenTexts | None = None

    def _generation_inputs(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float,
                           quoted: Sequence[str] | None = None) -> dict:
        ids = torch.tensor([self.encode(self.render_chat(messages))], device=self.device)
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = int(max_new_tokens)
        config.do_sample = temperature > 0
        config.temperature = float(temperature) if temperature > 0 else None
        config.top_p = None
        config.top_k = None
        config.pad_token_id = self._pad_id
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "generation_config": config}
        if quoted:
            from transformers import LogitsProcessorList

            if self._token_texts is None:
                self._token_texts = TokenTexts(self.tokenizer)
            inputs["logits_processor"] = LogitsProcessorList(
                [QuotedChoices(self.tokenizer, self._token_texts, quoted, ids.shape[1],
                               messages[-1]["content"] if continues_final_message(messages) else "")]
            )
        return inputs

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float = 0.0, *,
             quoted: Sequence[str] | None = None) -> str:
        inputs = self._generation_inputs(messages, max_new_tokens, temperature, quoted)
        with self._lock, torch.inference_mode():
            out = self.model.generate(**inputs)
        new = out[0, inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()

    def chat_stream(
        self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float = 0.0, *,
        quoted: Sequence[str] | None = None,
    ) -> Iterator[str]:
        """Yield text pieces as they are generated; closing the iterator stops generation."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop = threading.Event()

        class _StopOnEvent(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        inputs = self._generation_inputs(messages, max_new_tokens, temperature, quoted)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with self._lock, torch.inference_mode():
                    self.model.generate(
                        **inputs, streamer=streamer, stopping_criteria=StoppingCriteriaList([_StopOnEvent()])
                    )
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                errors.append(exc)
                streamer.end()

        def pieces() -> Iterator[str]:
            thread = threading.Thread(target=work, name="promptrec-chat-stream", daemon=True)
            thread.start()
            try:
                for piece in streamer:
                    if piece:
                        yield piece
            finally:
                stop.set()
            thread.join()
            if errors:
                raise errors[0]

        return pieces()


