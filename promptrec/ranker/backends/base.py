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
* `chat(messages, max_new_tokens, temperature)` / `chat_stream(...)`: generation.
* `label_token_ids(labels)`: the single token id of each label string, taken literally:
  ``"A"`` and ``" A"`` are different tokens in byte-level BPE vocabularies; a label that
  is not exactly one token is an error (`ValueError`).
* `count_tokens(text)`: how many tokens ``text`` encodes to (no special tokens added).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

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
