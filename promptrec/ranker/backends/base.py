"""The protocol every LLM backend implements: strings and token ids in, log-probs and text out.

Kept small on purpose, so that a vLLM backend (in-process `vllm.LLM` or an OpenAI-compatible
server) can implement it too:

* `next_token_logprobs(prompts, token_ids)`: for each prompt, the log-probability (over the
  full vocabulary) of each given token being the next one. Shape (len(prompts), len(token_ids)).
  Prompts that share a prefix may reuse its KV cache (transformers: computed once and
  expanded to the batch; vLLM: prefix caching); the result must not depend on it.
* `continuation_logprobs(prefix, continuations)`: for each continuation, the sum of the
  log-probabilities of its tokens given ``prefix``. The prefix is encoded once and its KV
  cache reused; continuation tokens are the tokens of ``prefix + continuation`` after those
  of ``prefix`` (or the continuation encoded alone when the boundary merges tokens).
* `render_chat(messages)`: the prompt text for a chat (the model's chat template, with the
  generation prompt), which strategies extend with an assistant prefix.
* `chat(messages, max_new_tokens, temperature)` / `chat_stream(...)`: generation. When the last
  message is the assistant's, the answer continues it (the chat template's
  ``continue_final_message``) and only the continuation is returned: how an explanation's
  opening words, written from the records, are handed to the model.
* `label_token_ids(labels)`: the single token id of each label string, taken literally:
  ``"A"`` and ``" A"`` are different tokens in byte-level BPE vocabularies; a label that
  is not exactly one token is an error (`ValueError`).
* `count_tokens(text)`: how many tokens ``text`` encodes to (no special tokens added).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class LLMBackend(Protocol):
    model_id: str

    def next_token_logprobs(self, prompts: list[str], token_ids: list[int]) -> np.ndarray: ...

    def continuation_logprobs(self, prefix: str, continuations: list[str]) -> list[float]: ...

    def render_chat(self, messages: list[dict[str, str]]) -> str: ...

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float = 0.0) -> str: ...

    def chat_stream(
        self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float = 0.0
    ) -> Iterator[str]: ...

    def label_token_ids(self, labels: list[str]) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...


def continues_final_message(messages: Sequence[dict[str, str]]) -> bool:
    """Whether a chat ends in an assistant message that the answer continues."""
    return bool(messages) and messages[-1].get("role") == "assistant"


class TokenizerOps:
    """Prompt tokenisation shared by every Hugging Face-tokenizer backend (transformers, vLLM).

    Needs ``self.tokenizer`` (a Hugging Face tokenizer) and ``self.model_id``.
    """

    tokenizer: Any
    model_id: str
    _bos_cache: list[int] | None = None

    def _bos_prefix(self) -> list[int]:
        """[bos] when the tokenizer adds one by default (e.g. Gemma), else []."""
        if self._bos_cache is None:
            bos = getattr(self.tokenizer, "bos_token_id", None)
            ids = self.tokenizer("x", add_special_tokens=True)["input_ids"] if bos is not None else []
            self._bos_cache = [int(bos)] if ids and ids[0] == bos else []
        return self._bos_cache

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt text; special-token strings in it (chat markers) are parsed."""
        ids = [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]
        bos = self._bos_prefix()
        if bos and (not ids or ids[0] != bos[0]):
            ids = bos + ids
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def label_token_ids(self, labels: list[str]) -> list[int]:
        ids = []
        for label in labels:
            encoded = self.tokenizer(label, add_special_tokens=False)["input_ids"]
            if len(encoded) != 1:
                raise ValueError(
                    f"label {label!r} is {len(encoded)} tokens for {self.model_id}; labels must be single tokens"
                )
            ids.append(int(encoded[0]))
        if len(set(ids)) != len(ids):
            raise ValueError(f"labels {labels!r} map to repeated token ids {ids}")
        return ids

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The prompt text: the chat template with the generation prompt, or, when the last
        message is the assistant's, ending in that message's open text (to be continued)."""
        tok = self.tokenizer
        go_on = continues_final_message(messages)
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=not go_on,
                                           continue_final_message=go_on)
        text = "".join(m["content"].strip() + "\n\n" for m in messages)
        return text.rstrip("\n") if go_on else text

    def continuation_token_ids(self, prefix: str, continuations: list[str]) -> tuple[list[int], list[list[int]]]:
        """(prefix ids, each continuation's own ids), split as the transformers backend splits them."""
        prefix_ids = self.encode(prefix)
        suffixes = []
        for text in continuations:
            if not text:
                raise ValueError("empty continuation")
            whole = self.encode(prefix + text)
            if whole[: len(prefix_ids)] == prefix_ids and len(whole) > len(prefix_ids):
                suffixes.append(whole[len(prefix_ids) :])
            else:  # the boundary merged tokens: score the continuation's own tokens
                suffixes.append([int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]])
        return prefix_ids, suffixes


def next_token_logprobs_grouped(
    backend: LLMBackend, groups: list[list[str]], token_ids: list[int]
) -> list[np.ndarray]:
    """`next_token_logprobs` for several groups of prompts (one group a user: its prompts share a
    prefix), one array per group. Backends that batch across groups (the vLLM engine: one engine
    call, each group's prefix cached by its first prompt; the server: concurrent requests)
    implement ``next_token_logprobs_grouped``; elsewhere the groups run one after another
    (on CPU a batch of users costs as much per token as one user: measured, 4 x 600 tokens).
    """
    grouped = getattr(backend, "next_token_logprobs_grouped", None)
    if grouped is not None:
        return list(grouped(groups, token_ids))
    return [backend.next_token_logprobs(prompts, token_ids) for prompts in groups]


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading token ids all rows share."""
    first = rows[0]
    length = min(len(r) for r in rows)
    for i in range(length):
        token = first[i]
        if any(r[i] != token for r in rows[1:]):
            return i
    return length


@dataclass
class TokenUsage:
    """Tokens a backend ran through the model while a `track_usage` block was open.

    ``computed``: positions actually run (a shared prefix counted once, prefix-cache hits not
    at all); ``padded``: extra positions computed as batch padding; ``cached``: prompt tokens
    served from a cache instead of being computed.
    """

    computed: int = 0
    padded: int = 0
    cached: int = 0


_USAGE: contextvars.ContextVar[TokenUsage | None] = contextvars.ContextVar("promptrec_token_usage", default=None)


@contextlib.contextmanager
def track_usage() -> Iterator[TokenUsage]:
    """Count the tokens the backends compute in this thread/context until the block ends."""
    usage = TokenUsage()
    token = _USAGE.set(usage)
    try:
        yield usage
    finally:
        _USAGE.reset(token)


def record_usage(computed: int, padded: int = 0, cached: int = 0) -> None:
    """Called by backends for each model pass; a no-op outside `track_usage`."""
    usage = _USAGE.get()
    if usage is not None:
        usage.computed += int(computed)
        usage.padded += int(padded)
        usage.cached += int(cached)
