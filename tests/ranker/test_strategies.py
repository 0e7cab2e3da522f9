"""Scoring strategies and the transformers backend on the real SmolLM2-135M-Instruct."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from promptrec.ranker.prompts import load_template
from promptrec.ranker.strategies import (
    ItemView,
    LettersStrategy,
    LikelihoodStrategy,
    _permutations,
    label_form,
    make_strategy,
)
from ranker_support import backend as load_backend

pytestmark = pytest.mark.integration

HISTORY = [
    ItemView("Star Wars (1977)", "Star Wars (1977) — Action, Adventure, Sci-Fi"),
    ItemView("Terminator, The (1984)", "Terminator, The (1984) — Action, Sci-Fi, Thriller"),
]
CANDIDATES = [
    ItemView("Blade Runner (1982)", "Blade Runner (1982) — Film-Noir, Sci-Fi"),
    ItemView("Sound of Music, The (1965)", "Sound of Music, The (1965) — Musical"),
    ItemView("Aliens (1986)", "Aliens (1986) — Action, Sci-Fi, Thriller, War"),
    ItemView("Sense and Sensibility (1995)", "Sense and Sensibility (1995) — Drama, Romance"),
]


@pytest.fixture(scope="module")
def bf16():
    return load_backend("bfloat16")


@pytest.fixture(scope="module")
def fp32():
    return load_backend("float32")


# ----------------------------------------------------------------------------- backend contract


def test_label_tokens(bf16):
    bare, spaced = bf16.label_token_ids(["A"]), bf16.label_token_ids([" A"])
    assert bare != spaced
    ids = bf16.label_token_ids([" A", " B", " C"])
    assert len(set(ids)) == 3
    with pytest.raises(ValueError, match="single tokens"):
        bf16.label_token_ids(["Toy Story"])
    # the label form matches how the tokenizer splits the text it follows
    for prompt in ("Answer:", "assistant\n"):
        label = label_form(prompt, "B")
        whole = bf16.encode(prompt + label)
        assert whole[-1] == bf16.label_token_ids([label])[0]
    assert bf16.count_tokens("Toy Story") > 0


def test_chat_template_and_generation(bf16):
    text = bf16.render_chat([{"role": "user", "content": "Say hello."}])
    assert text.rstrip().endswith("assistant")
    reply = bf16.chat([{"role": "user", "content": "Say hello."}], max_new_tokens=6)
    assert isinstance(reply, str) and reply
    pieces = list(bf16.chat_stream([{"role": "user", "content": "Say hello."}], max_new_tokens=6))
    assert "".join(pieces).strip() == reply  # greedy: the stream equals the one-shot reply
    stream = bf16.chat_stream([{"role": "user", "content": "Count to fifty."}], max_new_tokens=200)
    next(stream)
    stream.close()  # stops the generation thread and releases the lock
    assert bf16.count_tokens("ok") == 1 and bf16._lock.acquire(timeout=30)
    bf16._lock.release()


def _yesno_prompts(backend):
    template = load_template("yesno")
    hist = [{"title": h.title, "text": h.text} for h in HISTORY]
    prompts = []
    for i, c in enumerate(CANDIDATES):
        rendered = template.render(history=hist, candidate={"title": c.title, "text": c.text, "index": i + 1,
                                                            "label": ""})
        prompts.append(backend.render_chat(rendered.messages()))
    return prompts


def test_kv_reuse_equals_full_passes_fp32(fp32):
    """Prefix KV-cache reuse gives the scores of separate full passes (float32, within 1e-4)."""
    # yesno: next-token log-probs after prompts sharing the history prefix
    prompts = _yesno_prompts(fp32)
    ids = fp32.label_token_ids(["Yes", "No"])
    reused = fp32.next_token_logprobs(prompts, ids, reuse_prefix=True)
    separate = np.vstack([fp32.next_token_logprobs([p], ids, reuse_prefix=False) for p in prompts])
    assert reused.shape == (len(CANDIDATES), 2)
    np.testing.assert_allclose(reused, separate, atol=1e-4, rtol=0)
    # likelihood: continuation log-probs after one shared prefix (with and without history)
    strategy = LikelihoodStrategy()
    template = load_template("likelihood")
    full = {}
    for label, history in (("with", HISTORY), ("without", [])):
        prefix, conts = strategy._prefix_and_continuations(fp32, template, history, CANDIDATES)
        reused = np.array(fp32.continuation_logprobs(prefix, conts, reuse_prefix=True))
        full[label] = np.array([fp32.continuation_logprobs(prefix, [c], reuse_prefix=False)[0] for c in conts])
        assert np.all(reused < 0)
        np.testing.assert_allclose(reused, full[label], atol=1e-4, rtol=0)
    # the strategy (prefix reuse on) scores log P(c | history) - log P(c | no history)
    scores = strategy.score(fp32, template, HISTORY, CANDIDATES).scores
    np.testing.assert_allclose(scores, full["with"] - full["without"], atol=2e-4, rtol=0)


def test_continuation_logprob_is_the_sum_over_tokens(fp32):
    prefix = fp32.render_chat([{"role": "user", "content": "Name a movie."}]) + "Movie:"
    two = fp32.continuation_logprobs(prefix, [" Star Wars"])[0]
    first = fp32.continuation_logprobs(prefix, [" Star"])[0]
    second = fp32.continuation_logprobs(prefix + " Star", [" Wars"])[0]
    assert two == pytest.approx(first + second, abs=1e-4)


def test_backend_is_thread_safe(bf16):
    prompts = _yesno_prompts(bf16)[:2]
    ids = bf16.label_token_ids(["Yes", "No"])
    expected = bf16.next_token_logprobs(prompts, ids)
    results, errors = [], []

    def work():
        try:
            results.append(bf16.next_token_logprobs(prompts, ids))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_allclose(r, expected, atol=1e-6)


# ----------------------------------------------------------------------------- strategies


def test_letters_one_score_per_candidate(bf16):
    template = load_template("letters")
    single = LettersStrategy(permutations=1).score(bf16, template, HISTORY, CANDIDATES)
    assert len(single.scores) == len(CANDIDATES) and np.all(np.isfinite(single.scores))
    # with one order the scores are the letters' log-probs renormalised over the letters shown
    assert np.exp(single.scores).sum() == pytest.approx(1.0, abs=1e-6)
    assert single.n_prompts == 1 and single.prompt_tokens > 50
    assert 0.0 < single.health.label_mass <= 1.0

    averaged = LettersStrategy(permutations=3).score(bf16, template, HISTORY, CANDIDATES)
    assert len(averaged.scores) == len(CANDIDATES) and np.all(np.isfinite(averaged.scores))
    assert averaged.n_prompts == 3
    assert averaged.details["permutations"][0] == list(range(len(CANDIDATES)))
    assert not np.allclose(averaged.scores, single.scores)  # the other orders move the scores


def test_permutations():
    cyclic = _permutations(5, 3, "cyclic", 0)
    assert len(cyclic) == 3 and cyclic[0] == [0, 1, 2, 3, 4]
    assert all(sorted(p) == list(range(5)) for p in cyclic)
    # cyclic shifts put every candidate in a different position in each order
    assert len({p.index(0) for p in cyclic}) == 3
    rand = _permutations(6, 4, "random", seed=7)
    assert rand == _permutations(6, 4, "random", seed=7) and len({tuple(p) for p in rand}) == 4
    assert _permutations(2, 5, "cyclic", 0) == [[0, 1], [1, 0]]
    assert _permutations(1, 3, "cyclic", 0) == [[0]]


def test_likelihood_and_yesno_scores_are_finite(bf16):
    lik = make_strategy("likelihood").score(bf16, load_template("likelihood"), HISTORY, CANDIDATES)
    assert len(lik.scores) == len(CANDIDATES) and np.all(np.isfinite(lik.scores))
    assert lik.n_prompts == 2
    # the history changes every candidate's log-prob (the two prompts really differ)
    assert not np.allclose(lik.details["logp_with_history"], lik.details["logp_without_history"], atol=1e-3)
    mean = make_strategy("likelihood", normalize="mean").score(bf16, load_template("likelihood"), HISTORY,
                                                                CANDIDATES)
    # "mean" divides by each candidate's own token count, counted here from the tokenizer itself
    counts = np.array([len(bf16.tokenizer(" " + c.title, add_special_tokens=False)["input_ids"]) for c in CANDIDATES])
    assert counts.max() > counts.min()  # titles of different lengths, so the check below can fail
    np.testing.assert_allclose(np.array(mean.scores) * counts, lik.scores, atol=5e-3, rtol=0)

    yn = make_strategy("yesno").score(bf16, load_template("yesno"), HISTORY, CANDIDATES)
    assert len(yn.scores) == len(CANDIDATES) and np.all(np.isfinite(yn.scores))
    assert yn.n_prompts == len(CANDIDATES) and 0 < yn.health.label_mass <= 1


def test_strategy_template_mismatch(bf16):
    with pytest.raises(ValueError, match="declares strategy 'yesno', not 'letters'"):
        LettersStrategy().score(bf16, load_template("yesno"), HISTORY, CANDIDATES)
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("pairwise")
    with pytest.raises(ValueError, match="26 candidates at most"):
        LettersStrategy(permutations=1).score(bf16, load_template("letters"), HISTORY, CANDIDATES * 7)
