"""A fake generator for testing templates, pipelines and failure handling without a model.

`FakeBackend` implements the `LLMBackend` protocol with scripted numbers and answers, so a
test can drive a reranker, a `Recommender` or a conversation through every path, fast and
deterministically::

    from promptrec.testing import FakeBackend

    backend = FakeBackend(logprobs=lambda prompts, ids: my_scores(prompts, ids))   # shape (prompts, ids)
    LLMReranker(backend, "letters").run(history, candidates)     # the real template and strategy
    FakeBackend(error=RuntimeError("CUDA out of memory"))        # every model call raises
    FakeBackend(hang_s=30)                                       # every call stalls until .release()
    FakeBackend(answers=['Because you watched "Heat".'])         # chat answers, in order
    backend.calls["next_token_logprobs"], backend.prompts, backend.chats   # what it was asked

It tokenises text into whitespace-led words (``" A"`` and ``"A"`` are different tokens, as
in byte-level BPE vocabularies) unless it is given a Hugging Face ``tokenizer``, whose chat
template, label ids and token counts it then uses. It imports neither torch nor transformers.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from promptrec.ranker.backends.base import TokenizerOps, continues_final_message

__all__ = ["FakeBackend", "FakeBackendError"]

Messages = list[dict[str, str]]
LogprobScript = float | Callable[[list[str], list[int]], Any]
ContinuationScript = float | Callable[[str, list[str]], Sequence[float]]
AnswerScript = str | Sequence[str] | Callable[[Messages], str]

_TOKEN = re.compile(r"\s*\S+")
_PIECE = re.compile(r"\s*\S+(?:\s+$)?")  # a word and its leading space; the last keeps trailing space


class FakeBackendError(RuntimeError):
    """The fake was asked for more scripted answers than it was given."""


class FakeBackend(TokenizerOps):
    """A scripted `LLMBackend`: log-probs and answers from the test, failures and stalls on demand.

    Args:
        model_id: the id results and calibration keys carry.
        logprobs: what `next_token_logprobs` returns: a constant log-prob for every (prompt,
            token), or ``f(prompts, token_ids)`` whose result is returned as an array unchecked
            (a test may script NaNs or a wrong shape to test the caller's checks).
        continuation: what `continuation_logprobs` returns: a constant per continuation, or
            ``f(prefix, continuations)``.
        answers: what `chat` / `chat_stream` answer: one text for every call, texts used in
            order (one each call; running out raises `FakeBackendError`), or ``f(messages)``.
        error: raised by every model call (log-probs, continuations, chat), after any stall.
        hang_s: every model call first waits this long, or until `release()` is called.
        hang_calls: stall only the first this many model calls (default: all of them).
        tokenizer: a Hugging Face tokenizer for the tokenizer operations; default: words.

    Model calls run one at a time (a lock, as on a real model), so a stalled call holds the
    backend. Counters: ``calls`` (per method: started calls), ``completed`` (model calls that
    returned or raised), ``prompts`` (every prompt and prefix scored), ``chats`` (a copy of
    every conversation sent to `chat` / `chat_stream`); ``closed`` once `close()` ran.
    """

    def __init__(
        self,
        *,
        model_id: str = "fake",
        logprobs: LogprobScript = math.log(0.01),
        continuation: ContinuationScript = -1.0,
        answers: AnswerScript = "I cannot say.",
        error: BaseException | None = None,
        hang_s: float = 0.0,
        hang_calls: int | None = None,
        tokenizer: Any = None,
    ) -> None:
        self.model_id = model_id
        self.logprobs = logprobs
        self.continuation = continuation
        self.answers: AnswerScript = answers if isinstance(answers, str) or callable(answers) else list(answers)
        self.error = error
        self.hang_s = hang_s
        self.hang_calls = hang_calls
        self.tokenizer = tokenizer
        self.calls: Counter[str] = Counter()
        self.completed = 0
        self.prompts: list[str] = []
        self.chats: list[Messages] = []
        self.closed = False
        self._released = threading.Event()
        self._model_lock = threading.Lock()
        self._vocab: dict[str, int] = {}
        self._model_calls = 0

    # ------------------------------------------------------------------ controls

    def release(self) -> None:
        """End every stall, now and later."""
        self._released.set()

    def close(self) -> None:
        """Mark the backend closed (`Recommender.close` calls this on a backend it owns)."""
        self.closed = True

    # ------------------------------------------------------------------ model calls

    def _model_call(self, method: str, compute: Callable[[], Any]) -> Any:
        self.calls[method] += 1
        with self._model_lock:
            self._model_calls += 1
            try:
                if self.hang_s > 0 and (self.hang_calls is None or self._model_calls <= self.hang_calls):
                    self._released.wait(self.hang_s)
                if self.error is not None:
                    raise self.error
                return compute()
            finally:
                self.completed += 1

    def next_token_logprobs(self, prompts: list[str], token_ids: list[int]) -> np.ndarray:
        def compute() -> np.ndarray:
            self.prompts.extend(prompts)
            if callable(self.logprobs):
                return np.asarray(self.logprobs(list(prompts), list(token_ids)), dtype=np.float64)
            return np.full((len(prompts), len(token_ids)), float(self.logprobs))

        return self._model_call("next_token_logprobs", compute)

    def continuation_logprobs(self, prefix: str, continuations: list[str]) -> list[float]:
        def compute() -> list[float]:
            self.prompts.append(prefix)
            if callable(self.continuation):
                return [float(v) for v in self.continuation(prefix, list(continuations))]
            return [float(self.continuation)] * len(continuations)

        return self._model_call("continuation_logprobs", compute)

    def _answer(self, messages: Messages) -> str:
        self.chats.append([dict(m) for m in messages])
        if callable(self.answers):
            return self.answers(messages)
        if isinstance(self.answers, str):
            return self.answers
        if not self.answers:
            raise FakeBackendError(f"the scripted answers ran out after {len(self.chats) - 1} chats")
        return self.answers.pop(0)

    def chat(self, messages: Messages, max_new_tokens: int, temperature: float = 0.0) -> str:
        return self._model_call("chat", lambda: self._answer(messages))

    def chat_stream(self, messages: Messages, max_new_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        """The answer `chat` would give, one whitespace-led word at a time."""
        text = self._model_call("chat_stream", lambda: self._answer(messages))
        yield from _PIECE.findall(text)

    # ------------------------------------------------------------------ tokenizer operations

    def render_chat(self, messages: Messages) -> str:
        if self.tokenizer is not None:
            return super().render_chat(messages)
        if continues_final_message(messages):  # the answer continues the open assistant message
            *before, last = messages
            return "".join(f"<{m['role']}>\n{m['content']}\n" for m in before) + f"<assistant>\n{last['content']}"
        return "".join(f"<{m['role']}>\n{m['content']}\n" for m in messages) + "<assistant>\n"

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return super().count_tokens(text)
        return len(_TOKEN.findall(text))

    def label_token_ids(self, labels: list[str]) -> list[int]:
        if self.tokenizer is not None:
            return super().label_token_ids(labels)
        ids = []
        for label in labels:
            if _TOKEN.fullmatch(label) is None:
                raise ValueError(f"label {label!r} is not one token for {self.model_id}; labels must be single tokens")
            ids.append(self._vocab.setdefault(label, len(self._vocab)))
        if len(set(ids)) != len(ids):
            raise ValueError(f"labels {labels!r} map to repeated token ids {ids}")
        return ids
