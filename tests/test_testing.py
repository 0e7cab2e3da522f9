"""`promptrec.testing.FakeBackend`: the protocol, its scripts, its switches and its counters,
driven through the real reranker and templates."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from promptrec.data.schema import Item
from promptrec.ranker.backends.base import LLMBackend
from promptrec.ranker.reranker import LLMReranker
from promptrec.retrieval.schema import Candidate, CandidateList
from promptrec.testing import FakeBackend, FakeBackendError

TITLES = ["Heat", "Fantasia", "Alien", "Fargo"]
HISTORY = [Item(item_id="h1", title="Toy Story", year=1995)]


def candidates() -> CandidateList:
    return CandidateList(user_id="u", history=["h1"], candidates=[
        Candidate(item_id=str(i), title=t, text=f"{t} (1990)", fused_score=1 / (i + 1), rank=i + 1, popularity=i)
        for i, t in enumerate(TITLES)
    ])


def favour(title: str):
    """Log-probs that put the label of the candidate line naming ``title`` first, in any order."""

    def logprobs(prompts: list[str], token_ids: list[int]) -> np.ndarray:
        rows = []
        for prompt in prompts:
            labels = re.findall(r"^([A-Z])\. (.+)$", prompt, flags=re.MULTILINE)
            best = next(n for n, (_, text) in enumerate(labels) if text.startswith(title))
            rows.append([-0.1 if j == best else -5.0 for j in range(len(token_ids))])
        return np.array(rows)

    return logprobs


def test_it_is_an_llm_backend():
    assert isinstance(FakeBackend(), LLMBackend)


def test_scripted_logprobs_drive_the_real_letters_template():
    backend = FakeBackend(logprobs=favour("Fantasia"))
    result = LLMReranker(backend, "letters", strategy_options={"permutations": 3}).run(HISTORY, candidates())
    assert not result.degraded, result.degraded_reason
    assert result.ranked_item_ids()[0] == "1" and result.model_id == "fake"
    assert backend.calls["next_token_logprobs"] == 1 and len(backend.prompts) == 3
    assert all("Toy Story" in p for p in backend.prompts)


def test_constant_scripts_and_likelihood():
    backend = FakeBackend(continuation=lambda prefix, conts: [-len(c) for c in conts])
    result = LLMReranker(backend, "likelihood").run(HISTORY, candidates())
    assert not result.degraded and backend.calls["continuation_logprobs"] == 2  # with and without history
    assert FakeBackend(continuation=-2.5).continuation_logprobs("p", ["a", "b"]) == [-2.5, -2.5]
    assert FakeBackend(logprobs=-1.0).next_token_logprobs(["p"], [0, 1, 2]).tolist() == [[-1.0, -1.0, -1.0]]


def test_a_scripted_nan_or_wrong_shape_reaches_the_caller():
    assert LLMReranker(FakeBackend(logprobs=float("nan")), "yesno").run(HISTORY, candidates()).degraded
    short = FakeBackend(logprobs=lambda prompts, ids: np.zeros((len(prompts), len(ids) - 1)))
    assert short.next_token_logprobs(["p"], [1, 2]).shape == (1, 1)


def test_error_switch_raises_from_every_model_call():
    backend = FakeBackend(error=RuntimeError("CUDA out of memory"))
    result = LLMReranker(backend, "yesno", timeout_s=5).run(HISTORY, candidates())
    assert result.degraded and result.degraded_reason == "RuntimeError: CUDA out of memory"
    for call in (lambda: backend.chat([{"role": "user", "content": "hi"}], 5),
                 lambda: list(backend.chat_stream([{"role": "user", "content": "hi"}], 5)),
                 lambda: backend.continuation_logprobs("p", ["x"])):
        with pytest.raises(RuntimeError, match="out of memory"):
            call()
    assert backend.completed == sum(backend.calls.values()) == 4


def test_hang_switch_outlives_a_timeout_until_released():
    backend = FakeBackend(hang_s=30)
    started = time.perf_counter()
    result = LLMReranker(backend, "letters", timeout_s=0.05).run(HISTORY, candidates())
    assert result.degraded and "RerankTimeout" in result.degraded_reason
    assert backend.calls["next_token_logprobs"] == 1 and backend.completed == 0  # still computing
    backend.release()
    deadline = time.time() + 10
    while backend.completed == 0 and time.time() < deadline:
        time.sleep(0.01)
    assert backend.completed == 1 and time.perf_counter() - started < 10


def test_hang_calls_stalls_only_the_first_calls_and_holds_the_backend():
    backend = FakeBackend(hang_s=30, hang_calls=1)
    first = threading.Thread(target=backend.next_token_logprobs, args=(["p"], [0]))
    first.start()
    while backend.calls["next_token_logprobs"] == 0:
        time.sleep(0.01)
    second: list[np.ndarray] = []
    waiter = threading.Thread(target=lambda: second.append(backend.next_token_logprobs(["q"], [0])))
    waiter.start()
    waiter.join(0.3)
    assert not second  # the stalled call holds the model lock
    backend.release()
    first.join(5), waiter.join(5)
    assert len(second) == 1 and backend.completed == 2
    assert backend.next_token_logprobs(["r"], [0]).shape == (1, 1)  # no stall after the first call


def test_answers_in_order_then_a_clear_error():
    backend = FakeBackend(answers=["One.", "Two words."])
    messages = [{"role": "user", "content": "Why?"}]
    assert backend.chat(messages, 10) == "One."
    assert list(backend.chat_stream(messages, 10)) == ["Two", " words."]
    assert backend.chats == [messages, messages] and backend.chats[0] is not messages
    with pytest.raises(FakeBackendError, match="ran out after 2 chats"):
        backend.chat(messages, 10)
    assert FakeBackend(answers=lambda m: m[-1]["content"].upper()).chat(messages, 10) == "WHY?"
    assert FakeBackend().chat(messages, 10) == FakeBackend().chat(messages, 10) == "I cannot say."
    assert "".join(FakeBackend(answers=" Two  words.\n").chat_stream(messages, 10)) == " Two  words.\n"


def test_tokenizer_operations():
    backend = FakeBackend()
    assert backend.count_tokens("Toy Story  (1995)\n") == len("Toy Story (1995)".split()) == 3
    a, b, space_a = backend.label_token_ids(["A", "B", " A"])
    assert len({a, b, space_a}) == 3 and backend.label_token_ids(["B", "A"]) == [b, a]
    for bad in (["AB CD"], [""], ["A "]):
        with pytest.raises(ValueError, match="single tokens"):
            backend.label_token_ids(bad)
    with pytest.raises(ValueError, match="repeated"):
        backend.label_token_ids(["A", "A"])
    text = backend.render_chat([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert text.index("S") < text.index("U") and text.endswith("<assistant>\n")


def test_close_marks_it_closed():
    backend = FakeBackend()
    backend.close()
    assert backend.closed


def test_importing_it_loads_neither_torch_nor_transformers(allow_subprocess):
    """`promptrec.testing` and what it imports, without the package's own `__init__` (which
    imports the whole library)."""
    package = Path(__file__).resolve().parents[1] / "promptrec"
    code = f"""
import importlib.abc, sys, types
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "sentence_transformers", "chromadb"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
stub = types.ModuleType("promptrec")
stub.__path__ = [{str(package)!r}]
sys.modules["promptrec"] = stub
from promptrec.testing import FakeBackend
assert FakeBackend().next_token_logprobs(["p"], [1]).shape == (1, 1)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
