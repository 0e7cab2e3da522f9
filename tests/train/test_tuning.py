"""LoRA tuning of the ranker (`promptrec.train.ranker`, `promptrec.ranker.adapters`): a real fine-tune of SmolLM2-135M on a
handful of MovieLens examples (short prompts: 3 history items, 5 candidates), its save/load round
trip through the serving factory, resuming, and refusal of a mismatched adapter."""

from __future__ import annotations

import random

import numpy as np
import pytest

from promptrec.config import RankerSettings, RetrievalSettings
from promptrec.data.preprocess import temporal_split
from promptrec.ranker.adapters import (
    AdapterMismatchError,
    TuningConfig,
    adapter_dir,
    expected_key,
    load_tuned,
    resolve_tuned,
    tuning_template,
)
from promptrec.recommender import Recommender
from promptrec.train.ranker import build_example, example_positions, rerank_loss, train_ranker

pytestmark = pytest.mark.integration

CONFIG = TuningConfig(
    template="letters", examples=6, epochs=2, n_candidates=5, history_items=3, lr=2e-3, warmup_examples=1,
    batch_size=1, accumulation=1, eval_every=6, eval_users=3, patience=None, dtype="float32", device="cpu",
    lora_dropout=0.0,
)


@pytest.fixture(scope="module")
def setup(ml_slice, asset_settings, tmp_path_factory):
    items, frame = ml_slice
    split = temporal_split(frame)
    root = tmp_path_factory.mktemp("tuning")
    settings = asset_settings.model_copy(update={
        "index_dir": root / "index", "n_candidates": 5, "device": "cpu",
        "ranker": RankerSettings(permutations=1, history_items=3),
    })
    main = Recommender.from_interactions(items, split.history_for_test(), settings, namespace="tune-main")
    train = Recommender.from_interactions(items, split.history_for_validation(),
                                          settings.model_copy(update={"index_dir": root / "train-index"}),
                                          namespace="tune-train")
    template = tuning_template(settings, "letters")
    key = expected_key(settings, template, main.index.manifest)
    examples = [build_example(train, u, t, 5, 0) for u, t in example_positions(train.histories, 0)[:6]]
    history = [train.catalog[i] for i in train.histories["1"][-3:]]
    probe = train.candidates("1", 5)
    seen: dict[int, dict] = {}

    def on_eval(trainer, examples_seen):
        seen[examples_seen] = {
            "loss": rerank_loss(trainer, examples, train.catalog),
            "scores": trainer.reranker.score(history, probe).scores,
        }

    result = train_ranker(train, split.validation_items(), settings, CONFIG, adapter_dir(settings), key=key,
                          on_eval=on_eval)
    return {"settings": settings, "main": main, "train": train, "split": split, "key": key, "result": result,
            "seen": seen, "history": history, "probe": probe, "examples": examples}


def test_fine_tune_lowers_the_training_loss_and_changes_the_scores(setup):
    seen = setup["seen"]
    assert sorted(seen) == [0, 6, 12]
    # the best evaluation after training (the one early stopping keeps) is below the zero-shot loss
    best = min(seen[6]["loss"], seen[12]["loss"])
    assert best < seen[0]["loss"] - 0.05, {k: v["loss"] for k, v in seen.items()}
    assert np.abs(np.subtract(seen[12]["scores"], seen[0]["scores"])).max() > 1e-3
    stats = setup["result"].manifest.stats
    assert stats.examples_seen == 12 and stats.optimizer_steps == 12 and stats.built == 12
    assert 0.0 <= stats.inserted_rate <= 1.0 and stats.mean_prompt_tokens > 50
    assert [e.examples for e in stats.evals] == [0, 6, 12] and stats.zero_shot_ndcg is not None
    assert stats.evals[0].loss is None and stats.evals[-1].loss is not None


def test_examples_come_from_training_prefixes(setup):
    train, split = setup["train"], setup["split"]
    validation, test = split.validation_items(), split.test_items()
    for example in setup["examples"]:
        history = train.histories[example.user_id]
        t = len(example.prefix)
        assert history[:t] == example.prefix and history[t] == example.target
        assert example.target in example.candidates and len(example.candidates) == 5
        assert example.target not in (validation.get(example.user_id), test.get(example.user_id))


def test_candidate_order_served_trains_on_the_retrieval_order(setup):
    """``candidate_order="served"`` (the default) shows the candidates under A, B, ... in the
    retriever's order, as one-permutation serving does; ``"shuffled"`` moves the true item's letter."""
    from ranker_support import model_dir

    from promptrec.train.ranker import RankerTrainer

    train, examples = setup["train"], setup["examples"]
    trainers = {order: RankerTrainer(model_dir(), "smollm2", CONFIG.model_copy(update={"candidate_order": order}))
                for order in ("served", "shuffled")}
    moved = 0
    for n, example in enumerate(examples):
        truth = example.candidates.index(example.target)
        (row,) = trainers["served"].rows(example, train.catalog, random.Random(n))
        assert row.label == truth
        text, at = trainers["served"].backend.tokenizer.decode(row.ids), 0
        for item_id in example.candidates:  # the titles appear in retrieval order
            at = text.index(train.catalog[item_id].title, at)
        (shuffled,) = trainers["shuffled"].rows(example, train.catalog, random.Random(n))
        moved += shuffled.label != truth
    assert moved > 0
    assert TuningConfig().candidate_order == "served"
    with pytest.raises(ValueError, match="candidate_order"):
        TuningConfig(candidate_order="retrieval")


def test_saved_adapter_round_trips_through_the_factory(setup):
    from promptrec.ranker.backends.transformers_backend import TransformersBackend
    from promptrec.ranker.calibration import calibration_key
    from promptrec.ranker.factory import make_backend, make_reranker
    from ranker_support import model_dir

    result, settings = setup["result"], setup["settings"]
    tuned = resolve_tuned(settings)  # "auto": the adapter beside the index
    assert tuned is not None and tuned.folder == result.folder
    assert tuned.model_id == result.manifest.model_id and tuned.model_id.startswith("smollm2-135m-instruct+lora-")
    assert (tuned.merged_path / "config.json").is_file() and (tuned.merged_path / "tokenizer.json").is_file()
    best = setup["seen"][result.manifest.stats.best_examples]["scores"]
    exact = TransformersBackend(model_dir(), device="cpu", dtype="float32", adapter=tuned.adapter_path)
    reranker = make_reranker(settings, exact)
    np.testing.assert_allclose(reranker.score(setup["history"], setup["probe"]).scores, best, atol=1e-4)
    served = make_backend(settings)
    assert served.model_id == tuned.model_id and served.adapter.adapter_hash == tuned.manifest.adapter_hash
    key = calibration_key(make_reranker(settings, served), settings)
    assert tuned.manifest.adapter_hash[:8] in key.model_id  # a calibration for the base model does not match
    with pytest.raises(AdapterMismatchError, match="train ranker --template yesno"):
        make_reranker(settings, served, "yesno")  # tuned for letters only
    none = settings.model_copy(update={"ranker": settings.ranker.model_copy(update={"adapter": "none"})})
    assert resolve_tuned(none) is None


def test_mismatched_adapter_is_refused_with_the_retrain_command(setup):
    settings = setup["settings"]
    other = settings.model_copy(update={"retrieval": RetrievalSettings(transition_window=3)})
    path = settings.ranker.model_copy(update={"adapter": str(setup["result"].folder)})
    for changed in (other, other.model_copy(update={"ranker": path})):
        with pytest.raises(AdapterMismatchError, match=r"retriever_fingerprint.*promptrec train ranker --template letters"):
            resolve_tuned(changed)
    with pytest.raises(AdapterMismatchError, match="base_model"):
        load_tuned(setup["result"].folder, setup["key"].model_copy(update={"base_model": "other-model"}))


def test_resume_continues_from_the_checkpoint(setup):
    settings = setup["settings"]
    again = train_ranker(setup["train"], setup["split"].validation_items(), settings, CONFIG,
                         adapter_dir(settings), key=setup["key"])
    assert again.resumed_from == 12
    assert again.manifest.stats.evals == setup["result"].manifest.stats.evals
    assert again.manifest.adapter_hash == setup["result"].manifest.adapter_hash
    with pytest.raises(Exception, match="--fresh"):
        train_ranker(setup["train"], setup["split"].validation_items(), settings,
                     CONFIG.model_copy(update={"lr": 1e-3}), adapter_dir(settings), key=setup["key"])


@pytest.mark.vllm
def test_vllm_engine_serves_the_tuned_model_from_settings(setup):
    """`ranker.backend = "vllm-engine"` with the adapter beside the index: the factory starts the
    engine on the merged folder, under the tuned model id, with the tuned model's scores."""
    from test_backend_contract import SCORE_TOL, require_vllm

    require_vllm()
    from promptrec.ranker.backends.transformers_backend import TransformersBackend
    from promptrec.ranker.factory import make_backend, make_reranker
    from ranker_support import model_dir

    settings, tuned = setup["settings"], resolve_tuned(setup["settings"])
    ranker = settings.ranker.model_copy(update={"backend": "vllm-engine", "dtype": "float32"})
    engine = make_backend(settings.model_copy(update={"ranker": ranker}))
    try:
        assert engine.model_id == tuned.model_id and engine.model_path == tuned.merged_path
        exact = TransformersBackend(model_dir(), device="cpu", dtype="float32", adapter=tuned.adapter_path)
        got = make_reranker(settings, engine).score(setup["history"], setup["probe"]).scores
        want = make_reranker(settings, exact).score(setup["history"], setup["probe"]).scores
        assert np.abs(np.subtract(got, want)).max() < SCORE_TOL
    finally:
        engine.close()
