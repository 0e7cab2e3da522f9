"""One contract for every `LLMBackend`: transformers, the in-process vLLM engine and the vLLM
server (OpenAI-compatible HTTP), all on the same converted SmolLM2-135M-Instruct folder.

The reference is `NaiveReference`, written here: the same model in float32 run the plainest way,
one full forward pass per prompt (no batching, padding, prefix reuse or KV cache), so the
default run checks the transformers backend's batched, prefix-reusing passes against it rather
than against itself. Every backend, also in float32, must give the reference's label log-probs
and continuation log-probs within ``LOGPROB_TOL`` nats, the same strategy scores within
``SCORE_TOL`` and the same ranking, the same tokens, and the same greedy text.

In bfloat16 (what dtype "auto" picks on CPUs with AVX512-BF16 or AMX, and on GPUs) logits are
rounded, so the contract is looser: ``BF16_*`` below, checked here for transformers and in
test_vllm_engine.py for the vLLM engine, whichever dtype this machine's "auto" would pick.

The ``-tuned`` cases run the same contract on a LoRA-tuned model (`promptrec.train.ranker`):
transformers loads the adapter on the base folder; vLLM (engine and server) serves the merged
folder the trainer writes; their reference is the tuned transformers backend in float32.

The vLLM cases are marked ``vllm``: they run in the vLLM environment (scripts/setup_vllm.sh),
``.venv-vllm/bin/python -m pytest -m vllm``. Without vLLM they are skipped, except under CI=true,
where a missing vLLM fails them.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from promptrec.data.schema import Item
from promptrec.ranker.backends.base import LLMBackend, TokenizerOps
from promptrec.ranker.reranker import LLMReranker
from promptrec.retrieval.schema import Candidate, CandidateList
from ranker_support import MODEL_NAME, model_dir

pytestmark = pytest.mark.integration

DTYPE = "float32"
#: Max |difference| in nats between ONE log-prob of a backend and the reference's, by the dtype
#: the backend computes in. float32: measured ~1e-4. bfloat16 rounds logits to 8 significant bits
#: (a step of 0.06-0.125 nats at this model's logit sizes); measured max |diff| vs fp32 (vLLM bf16 /
#: transformers bf16) for label log-probs .10/.20.
TOKEN_LOGPROB_TOL = {"float32": 2e-3, "bfloat16": 0.5}
LOGPROB_TOL = TOKEN_LOGPROB_TOL["float32"]
BF16_LOGPROB_TOL = TOKEN_LOGPROB_TOL["bfloat16"]


def logprob_tol(dtype: str, n_tokens: int = 1) -> float:
    """The tolerance for a sum of ``n_tokens`` log-probs computed in ``dtype``.

    Per-token rounding errors are independent, so a sum's error grows like sqrt(n): a fixed
    tolerance fails on long continuations (an AMX Xeon saw .387 nats on a ~240-token bf16 sum
    against a fixed .25) and is loose on short ones.
    """
    return TOKEN_LOGPROB_TOL[dtype] * math.sqrt(max(1, n_tokens))


def max_tokens(backend: LLMBackend, texts: list[str]) -> int:
    return max(backend.count_tokens(t) for t in texts)


#: Max |difference| between fp32 strategy scores (letters: renormalised and averaged log-probs;
#: likelihood: a difference of two sums; yesno: a log-odds). Measured: ~1e-4.
SCORE_TOL = 5e-3
#: bfloat16 strategy scores vs fp32. letters and yesno are one-token quantities (measured max
#: |diff| vLLM/transformers .02/.06 and .09/.08); likelihood is a difference of two sums over the
#: candidate's title tokens (measured 1.1/.6), so its tolerance follows from the longest title.
BF16_SCORE_TOL = {"letters": 0.2, "yesno": 0.3}
#: Rank agreement with fp32 (Kendall tau; measured .90 letters, .91 likelihood). yesno scores
#: of these candidates span ~0.1 nats, below bf16's rounding, so its order is not compared.
BF16_MIN_TAU = {"letters": 0.6, "likelihood": 0.6}

BACKENDS = [
    pytest.param("transformers", id="transformers"),
    pytest.param("vllm-engine", id="vllm-engine", marks=pytest.mark.vllm),
    pytest.param("vllm-server", id="vllm-server", marks=pytest.mark.vllm),
    pytest.param("transformers-tuned", id="transformers-tuned"),
    pytest.param("vllm-engine-tuned", id="vllm-engine-tuned", marks=pytest.mark.vllm),
    pytest.param("vllm-server-tuned", id="vllm-server-tuned", marks=pytest.mark.vllm),
]
TUNED_ID = MODEL_NAME + "+lora-contract"


def require_vllm() -> None:
    """Skip without vLLM; under CI=true a missing vLLM is a failure."""
    from promptrec.ranker.backends.vllm_engine import vllm_available

    if vllm_available():
        return
    message = (
        "vLLM is not importable in this environment: run scripts/setup_vllm.sh and "
        ".venv-vllm/bin/python -m pytest -m vllm"
    )
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail("CI=true: " + message, pytrace=False)
    pytest.skip(message)


# ----------------------------------------------------------------------------- fixtures


class NaiveReference(TokenizerOps):
    """The model in float32, one full forward pass per prompt or continuation; nothing reused."""

    def __init__(self, folder: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.model_id = MODEL_NAME
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    def _logprobs(self, ids: list[int]) -> np.ndarray:
        with self.torch.inference_mode():
            logits = self.model(self.torch.tensor([ids])).logits[0].double()
        return self.torch.log_softmax(logits, dim=-1).numpy()

    def next_token_logprobs(self, prompts, token_ids, reuse_prefix=None):
        rows = [self._logprobs(self.encode(p))[-1, token_ids] for p in prompts]
        return np.array(rows).reshape(len(prompts), len(token_ids))

    def continuation_logprobs(self, prefix, continuations, reuse_prefix=None):
        prefix_ids, suffixes = self.continuation_token_ids(prefix, continuations)
        sums = []
        for suffix in suffixes:
            full = prefix_ids + suffix
            logp = self._logprobs(full)
            sums.append(float(sum(logp[pos - 1, full[pos]] for pos in range(len(prefix_ids), len(full)))))
        return sums

    def chat(self, messages, max_new_tokens, temperature=0.0):
        ids = self.torch.tensor([self.encode(self.render_chat(messages))])
        with self.torch.inference_mode():
            out = self.model.generate(ids, attention_mask=self.torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                      do_sample=False, temperature=None, top_p=None, top_k=None)
        return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()

    def chat_stream(self, messages, max_new_tokens, temperature=0.0):
        yield self.chat(messages, max_new_tokens, temperature)


@pytest.fixture(scope="module")
def base_reference():
    return NaiveReference(model_dir())


@pytest.fixture(scope="module")
def transformers_backend():
    from promptrec.ranker.backends.transformers_backend import TransformersBackend

    return TransformersBackend(model_dir(), model_id=MODEL_NAME, device="cpu", dtype=DTYPE)


@pytest.fixture(scope="module")
def tuned_folder(tmp_path_factory):
    """A LoRA adapter (r=8, q/v) with seeded random B weights, saved and merged by the trainer."""
    import torch

    from promptrec.ranker.adapters import TuningConfig
    from promptrec.train.ranker import RankerTrainer

    folder = tmp_path_factory.mktemp("tuned")
    trainer = RankerTrainer(model_dir(), MODEL_NAME, TuningConfig(dtype=DTYPE, device="cpu"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    trainer.save_adapter(folder / "adapter")
    trainer.save_merged(folder / "adapter", folder / "merged", "float32")
    return folder


@pytest.fixture(scope="module")
def tuned_reference(tuned_folder):
    """The merged tuned folder, one full pass per prompt: what every tuned backend must match."""
    reference = NaiveReference(tuned_folder / "merged")
    reference.model_id = TUNED_ID
    return reference


@pytest.fixture(scope="module")
def tuned_transformers_backend(tuned_folder):
    from promptrec.ranker.backends.transformers_backend import TransformersBackend

    return TransformersBackend(model_dir(), model_id=TUNED_ID, device="cpu", dtype=DTYPE,
                               adapter=tuned_folder / "adapter")


@pytest.fixture
def reference(request):
    """The naive float32 reference of the model the case tests (base or tuned)."""
    name = request.node.callspec.params.get("backend", "") if hasattr(request.node, "callspec") else ""
    return request.getfixturevalue("tuned_reference" if name.endswith("-tuned") else "base_reference")


def _engine(folder: Path, model_id: str):
    require_vllm()
    from promptrec.ranker.backends.vllm_engine import VLLMEngineBackend

    backend = VLLMEngineBackend(folder, model_id=model_id, dtype=DTYPE)
    yield backend
    backend.close()


def _server(folder: Path, model_id: str, tmp_path_factory):
    require_vllm()
    from promptrec.llm_server import ServerOptions, start_server
    from promptrec.ranker.backends.vllm_server import VLLMServerBackend

    options = ServerOptions(folder, served_model_name=model_id, port=free_port(), dtype=DTYPE)
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with start_server(options, log_path=log, ready_timeout_s=600) as server:
        backend = VLLMServerBackend(server.url, folder, model_id=model_id)
        yield backend
        backend.close()


@pytest.fixture(scope="module")
def engine_backend():
    yield from _engine(model_dir(), MODEL_NAME)


@pytest.fixture(scope="module")
def server_backend(tmp_path_factory):
    yield from _server(model_dir(), MODEL_NAME, tmp_path_factory)


@pytest.fixture(scope="module")
def tuned_engine_backend(tuned_folder):
    yield from _engine(tuned_folder / "merged", TUNED_ID)


@pytest.fixture(scope="module")
def tuned_server_backend(tuned_folder, tmp_path_factory):
    yield from _server(tuned_folder / "merged", TUNED_ID, tmp_path_factory)


@pytest.fixture(params=BACKENDS)
def backend(request):
    fixture = {
        "transformers": "transformers_backend", "vllm-engine": "engine_backend", "vllm-server": "server_backend",
        "transformers-tuned": "tuned_transformers_backend", "vllm-engine-tuned": "tuned_engine_backend",
        "vllm-server-tuned": "tuned_server_backend",
    }[request.param]
    return request.getfixturevalue(fixture)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- inputs

HISTORY = [
    Item(item_id="1", title="Toy Story", year=1995, genres=("Animation", "Children's", "Comedy")),
    Item(item_id="50", title="Star Wars", year=1977, genres=("Action", "Adventure", "Sci-Fi", "War")),
    Item(item_id="181", title="Return of the Jedi", year=1983, genres=("Action", "Adventure", "Sci-Fi")),
    Item(item_id="174", title="Raiders of the Lost Ark", year=1981, genres=("Action", "Adventure")),
    Item(item_id="82", title="Jurassic Park", year=1993, genres=("Action", "Adventure", "Sci-Fi")),
    Item(item_id="96", title="Terminator 2: Judgment Day", year=1991, genres=("Action", "Sci-Fi", "Thriller")),
]
CANDIDATES = [
    ("222", "Star Trek: First Contact", 1996, ("Action", "Adventure", "Sci-Fi")),
    ("89", "Blade Runner", 1982, ("Film-Noir", "Sci-Fi")),
    ("405", "Mission: Impossible", 1996, ("Action", "Adventure", "Mystery")),
    ("100", "Fargo", 1996, ("Crime", "Drama", "Thriller")),
    ("127", "Godfather, The", 1972, ("Action", "Crime", "Drama")),
    ("7", "Twelve Monkeys", 1995, ("Drama", "Sci-Fi")),
    ("69", "Forrest Gump", 1994, ("Comedy", "Romance", "War")),
    ("143", "Sound of Music, The", 1965, ("Musical",)),
    ("71", "Lion King, The", 1994, ("Animation", "Children's", "Musical")),
    ("204", "Back to the Future", 1985, ("Comedy", "Sci-Fi")),
    ("423", "E.T. the Extra-Terrestrial", 1982, ("Children's", "Drama", "Fantasy", "Sci-Fi")),
    ("313", "Titanic", 1997, ("Action", "Drama", "Romance")),
]


def candidate_list() -> CandidateList:
    cands = []
    for rank, (item_id, title, year, genres) in enumerate(CANDIDATES, start=1):
        item = Item(item_id=item_id, title=title, year=year, genres=genres)
        cands.append(Candidate(item_id=item_id, title=item.display_title(), text=item.text(),
                               fused_score=1.0 / (rank + 10), rank=rank, popularity=300 - 10 * rank))
    return CandidateList(user_id="contract", candidates=cands, history=[h.item_id for h in HISTORY])


MESSAGES = [
    {"role": "system", "content": "You are a movie recommender."},
    {"role": "user", "content": "I liked Star Wars and Toy Story. Name one movie for me, in one sentence."},
]

_reference_cache: dict[str, object] = {}


def cached(key: str, compute, model_id: str = MODEL_NAME):
    key = f"{model_id}:{key}"
    if key not in _reference_cache:
        _reference_cache[key] = compute()
    return _reference_cache[key]


def prompt_pair(backend: LLMBackend) -> list[str]:
    """Two chat prompts sharing a long prefix (>128 tokens: a full vLLM CPU block), different ends."""
    history = "\n".join(f"- {h.text()}" for h in HISTORY * 3)
    base = [{"role": "system", "content": "You answer with a single letter."},
            {"role": "user", "content": f"The user watched:\n{history}\n\nWhich candidate next? "}]
    first = [dict(m) for m in base]
    first[1]["content"] += "A. Fargo  B. Heat  C. Casino"
    second = [dict(m) for m in base]
    second[1]["content"] += "A. Titanic  B. Clerks  C. Seven"
    return [backend.render_chat(first) + "Answer:", backend.render_chat(second) + "Answer:"]


# ----------------------------------------------------------------------------- tokens


def test_implements_protocol(backend, reference):
    assert isinstance(backend, LLMBackend)
    assert backend.model_id == reference.model_id


def test_tuned_model_is_not_the_base_model(base_reference, tuned_reference):
    prompts = prompt_pair(base_reference)
    ids = base_reference.label_token_ids([" A", " B", " C"])
    gap = np.abs(tuned_reference.next_token_logprobs(prompts, ids) - base_reference.next_token_logprobs(prompts, ids))
    assert gap.max() > 10 * LOGPROB_TOL


def test_tokens_and_chat_rendering_match_reference(backend, reference):
    text = "Toy Story (1995) is a film. <|im_start|>user\nYes"
    assert backend.count_tokens(text) == reference.count_tokens(text)
    assert backend.encode(text) == [int(i) for i in reference.tokenizer(text, add_special_tokens=False)["input_ids"]]
    labels = [" A", " B", "A", "Yes", " No"]
    assert backend.label_token_ids(labels) == reference.label_token_ids(labels)
    assert backend.render_chat(MESSAGES) == reference.render_chat(MESSAGES)
    with pytest.raises(ValueError):
        backend.label_token_ids([" Toy Story"])  # several tokens
    with pytest.raises(ValueError):
        backend.label_token_ids(["A", "A"])


# ----------------------------------------------------------------------------- log-probs


def test_next_token_logprobs_match_reference(backend, reference):
    prompts = prompt_pair(reference)
    labels = [" " + chr(ord("A") + i) for i in range(20)] + [" Yes", " No"]
    ids = reference.label_token_ids(labels) + [0, 12345]  # two ids far outside any top-k
    ref = cached("next", lambda: reference.next_token_logprobs(prompts, ids, reuse_prefix=False), reference.model_id)
    got = backend.next_token_logprobs(prompts, ids)
    assert got.shape == (2, len(ids))
    assert np.all(np.isfinite(got)) and np.all(got <= 0)
    assert np.abs(got - ref).max() < LOGPROB_TOL
    assert ref.min() < -15  # the far ids really are far down the distribution
    # Same ids in another order, and repeated: columns follow the ids given.
    again = backend.next_token_logprobs(prompts[:1], [ids[3], ids[0], ids[3]])
    np.testing.assert_allclose(again[0], got[0, [3, 0, 3]], atol=LOGPROB_TOL)


def test_next_token_logprobs_do_not_depend_on_prefix_reuse(backend):
    prompts = prompt_pair(backend)
    ids = backend.label_token_ids([" A", " B", " C"])
    with_reuse = backend.next_token_logprobs(prompts, ids, reuse_prefix=True)
    without = backend.next_token_logprobs(prompts, ids, reuse_prefix=False)
    assert np.abs(with_reuse - without).max() < LOGPROB_TOL


def test_continuation_logprobs_match_reference(backend, reference):
    prefix = prompt_pair(reference)[0][: -len("Answer:")] + "Movie:"
    conts = [" Fargo (1996)", " Heat", " Star Trek: First Contact (1996)", "Casino"]  # the last merges at the boundary
    ref = cached("cont", lambda: reference.continuation_logprobs(prefix, conts, reuse_prefix=False), reference.model_id)
    got = backend.continuation_logprobs(prefix, conts)
    tol = logprob_tol(DTYPE, max_tokens(reference, conts))
    assert len(got) == len(conts)
    assert all(np.isfinite(g) and g < 0 for g in got)
    assert np.abs(np.asarray(got) - np.asarray(ref)).max() < tol
    assert backend.continuation_logprobs(prefix, []) == []
    assert np.abs(np.asarray(backend.continuation_logprobs(prefix, conts, reuse_prefix=False)) - ref).max() < tol


@pytest.mark.vllm
def test_continuation_recomputed_when_its_cache_hit_reaches_into_it(engine_backend):
    """A continuation whose prefix-cache hit reaches into its own tokens is run again without
    cache reads, so its sum equals the sum computed with no reuse at all (in float32, where the
    two kernel paths agree to rounding; bf16 paths differ by more than any one bug would show)."""
    engine = engine_backend
    prefix = prompt_pair(engine)[0]
    shared_start = " " + " ".join(f"Movie number {i}," for i in range(60))  # > one block of tokens
    conts = [shared_start + " the end", shared_start + " the last one"]
    assert engine.count_tokens(shared_start) > engine.block_size
    engine.llm.reset_prefix_cache()
    before = engine.cache_stats["recomputed"]
    with_reuse = engine.continuation_logprobs(prefix, conts, reuse_prefix=True)
    assert engine.cache_stats["recomputed"] - before == 1  # the second continuation
    without = engine.continuation_logprobs(prefix, conts, reuse_prefix=False)
    tol = logprob_tol(DTYPE, max_tokens(engine, conts))
    assert np.abs(np.asarray(with_reuse) - np.asarray(without)).max() < tol


def test_empty_inputs(backend):
    assert backend.next_token_logprobs([], [1, 2]).shape == (0, 2)


# ----------------------------------------------------------------------------- strategies


@pytest.mark.parametrize("template", ["letters", "likelihood", "yesno"])
def test_strategy_scores_and_ranking_match_reference(backend, reference, template):
    cands = candidate_list()
    ref_result = cached(f"strategy-{template}", lambda: LLMReranker(reference, template, timeout_s=None).run(HISTORY, cands),
                        reference.model_id)
    result = LLMReranker(backend, template, timeout_s=None).run(HISTORY, cands)
    assert not result.degraded, result.degraded_reason
    got, ref = np.asarray(result.scores_in_input_order()), np.asarray(ref_result.scores_in_input_order())
    assert np.abs(got - ref).max() < SCORE_TOL
    assert result.ranked_item_ids() == ref_result.ranked_item_ids()
    assert result.prompt_tokens == ref_result.prompt_tokens and result.model_id == reference.model_id


# ----------------------------------------------------------------------------- generation


def test_greedy_chat_matches_reference(backend, reference):
    ref = cached("chat", lambda: reference.chat(MESSAGES, max_new_tokens=16), reference.model_id)
    got = backend.chat(MESSAGES, max_new_tokens=16)
    assert isinstance(got, str) and got
    assert got == ref


def test_a_chat_ending_in_an_assistant_message_is_continued(backend, reference):
    """An explanation's lead: the answer continues the open assistant message (the chat
    template's continue_final_message) and returns only the continuation."""
    opened = [*MESSAGES, {"role": "assistant", "content": "The answer is"}]
    assert backend.render_chat(opened).endswith("The answer is")
    ref = cached("chat-continued", lambda: reference.chat(opened, max_new_tokens=12), reference.model_id)
    got = backend.chat(opened, max_new_tokens=12)
    assert got == ref and not got.startswith("The answer is")
    assert "".join(backend.chat_stream(opened, max_new_tokens=12)).strip() == got


def test_quoted_text_is_one_of_the_choices(backend):
    """Grounded decoding: with ``quoted``, whatever the model writes inside double quotes is one
    of the given strings (transformers: a logits processor; vLLM: structured outputs)."""
    choices = ["Heat (1995)", "Fargo (1996)"]
    opened = [{"role": "user", "content": "What is the best movie of all time?"},
              {"role": "assistant", "content": 'The best movie of all time is "'}]
    assert backend.constrains_quotes
    free = backend.chat(opened, max_new_tokens=24)
    held = backend.chat(opened, max_new_tokens=24, quoted=choices)
    assert free.split('"')[0] not in choices, free  # unconstrained, it names another film
    assert held.split('"')[0] in choices, held
    assert all(q in choices for q in re.findall(r'"([^"]*)"', '"' + held)), held
    assert "".join(backend.chat_stream(opened, max_new_tokens=24, quoted=choices)).strip() == held


def test_chat_stream_joins_to_chat_and_can_be_closed(backend):
    full = backend.chat(MESSAGES, max_new_tokens=12)
    pieces = list(backend.chat_stream(MESSAGES, max_new_tokens=12))
    assert len(pieces) > 1 and "".join(pieces).strip() == full
    stream = backend.chat_stream(MESSAGES, max_new_tokens=64)
    first = next(iter(stream))
    assert first
    stream.close()  # aborts the generation; the backend stays usable
    assert backend.chat(MESSAGES, max_new_tokens=12) == full


def test_model_folder_is_the_converted_smollm2():
    folder = Path(model_dir())
    assert (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


# ----------------------------------------------------------------------------- bfloat16


@pytest.fixture(scope="module")
def transformers_bf16():
    from promptrec.ranker.backends.transformers_backend import TransformersBackend

    return TransformersBackend(model_dir(), model_id=MODEL_NAME, device="cpu", dtype="bfloat16")


def test_bf16_label_logprobs_close_to_fp32_reference(transformers_bf16, base_reference):
    assert transformers_bf16.hardware.dtype == "bfloat16"
    prompts = prompt_pair(base_reference)
    ids = base_reference.label_token_ids([" " + chr(ord("A") + i) for i in range(20)] + [" Yes", " No"])
    got = transformers_bf16.next_token_logprobs(prompts, ids)
    diff = np.abs(got - base_reference.next_token_logprobs(prompts, ids))
    assert diff.max() < BF16_LOGPROB_TOL


@pytest.mark.parametrize("template", ["letters", "likelihood", "yesno"])
def test_bf16_strategy_scores_close_to_fp32_reference(transformers_bf16, base_reference, template):
    assert_bf16_scores_close(transformers_bf16, base_reference, template)


def assert_bf16_scores_close(backend: LLMBackend, reference: LLMBackend, template: str) -> None:
    """A bf16 backend's strategy scores and order against the fp32 reference (BF16_*, logprob_tol)."""
    from scipy.stats import kendalltau

    got = LLMReranker(backend, template, timeout_s=None).run(HISTORY, candidate_list())
    ref = cached(f"strategy-{template}", lambda: LLMReranker(reference, template, timeout_s=None).run(HISTORY, candidate_list()),
                 reference.model_id)
    assert not got.degraded, got.degraded_reason
    a, b = np.asarray(got.scores_in_input_order()), np.asarray(ref.scores_in_input_order())
    if template == "likelihood":  # a difference of two sums over the title's tokens
        tol = logprob_tol("bfloat16", 2 * max_tokens(reference, [c.title for c in candidate_list().candidates]))
    else:
        tol = BF16_SCORE_TOL[template]
    assert np.abs(a - b).max() < tol
    if template in BF16_MIN_TAU:
        assert kendalltau(a, b)[0] >= BF16_MIN_TAU[template]
