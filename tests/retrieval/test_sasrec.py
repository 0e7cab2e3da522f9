"""The trained sequential retriever: real training runs of a few seconds on planted data, its
vectors in a real Chroma collection, checkpoints keyed to data and hyperparameters."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch

from promptrec.config import SequentialSettings, Settings
from promptrec.data.preprocess import has_time_order
from promptrec.data.schema import Item
from promptrec.retrieval.sasrec import CheckpointMismatchError, SequentialModel, checkpoint_key, training_windows
from promptrec.retrieval.store import ItemVectorCollection, chroma_client

A, B, C = "A", "B", "C"
FILLER = [f"f{n}" for n in range(27)]
TINY = SequentialSettings(max_len=12, hidden=32, layers=1, heads=1, dropout=0.1, lr=5e-3,
                          batch_size=64, max_epochs=40, eval_every=10, patience=100)


def planted_histories(users: int = 150, seed: int = 0) -> dict[str, list[str]]:
    """Random filler histories, each with A then B then C planted at a random place."""
    rng = random.Random(seed)
    out = {}
    for u in range(users):
        seq = rng.sample(FILLER, rng.randint(6, 10))
        at = rng.randint(0, len(seq) - 2)
        out[f"u{u}"] = seq[:at] + [A, B, C] + seq[at:]
    return out


@pytest.fixture(scope="module")
def trained() -> SequentialModel:
    return SequentialModel.fit(planted_histories(), TINY, seed=0, interactions_fingerprint="planted", device="cpu")


@pytest.mark.integration
def test_learns_the_planted_sequence_and_chroma_retrieves_it(trained, tmp_path):
    assert trained.stats.epochs_run == TINY.max_epochs
    assert trained.stats.history[-1].loss < trained.stats.history[0].loss
    client = chroma_client(Settings().chroma, tmp_path)
    coll = ItemVectorCollection(client, "planted-sequential", "ip", {"kind": "sequential", "dimension": TINY.hidden})
    vectors = trained.item_vectors()
    coll.sync(trained.item_ids, [str(n) for n in range(len(vectors))], [{"n": n} for n in range(len(vectors))],
              lambda batch: vectors[batch])
    # An unseen session: filler, then A, B. The model must put C first; after A alone, B.
    session = ["f3", "f17", "f8", A, B]
    assert coll.query(trained.encode(session), 3, exclude=set(session))[0][0] == C
    assert coll.query(trained.encode(["f5", "f11", A]), 3, exclude={"f5", "f11", A})[0][0] == B
    # What comes next depends on the last item: after A it is B, not C.
    after_a = [i for i, _ in coll.query(trained.encode(["f3", "f9", A]), 5, exclude={"f3", "f9", A})]
    assert after_a[0] == B and after_a.index(C) > 0
    assert trained.encode(["not-an-item"]) is None


def test_same_seed_same_vectors_other_seed_other_vectors(trained):
    again = SequentialModel.fit(planted_histories(), TINY, seed=0, interactions_fingerprint="planted", device="cpu")
    assert np.array_equal(again.item_vectors(), trained.item_vectors())
    assert np.array_equal(again.encode(["f1", A]), trained.encode(["f1", A]))
    other = SequentialModel.fit(planted_histories(), TINY.model_copy(update={"max_epochs": 2}), seed=1,
                                interactions_fingerprint="planted", device="cpu")
    assert not np.allclose(other.item_vectors(), trained.item_vectors())


def test_checkpoint_round_trip_and_mismatch_refused(trained, tmp_path):
    path = trained.save(tmp_path / "sequential_model.pt")
    loaded = SequentialModel.load(path, trained.key, device="cpu")
    assert np.array_equal(loaded.item_vectors(), trained.item_vectors())
    assert np.array_equal(loaded.encode(["f2", A, B]), trained.encode(["f2", A, B]))
    assert loaded.stats.best_epoch == trained.stats.best_epoch
    other_hp = checkpoint_key("planted", trained.item_ids, TINY.model_copy(update={"hidden": 16}), seed=0)
    other_data = checkpoint_key("changed-log", trained.item_ids, TINY, seed=0)
    for key, what in ((other_hp, r"hyperparameters\.hidden: trained for 32, now 16"),
                      (other_data, "interactions_fingerprint: trained for 'planted', now 'changed-log'")):
        with pytest.raises(CheckpointMismatchError, match=f"{what}.*promptrec train retriever"):
            SequentialModel.load(path, key, device="cpu")
    with pytest.raises(CheckpointMismatchError, match="no sequential model.*promptrec train retriever"):
        SequentialModel.load(tmp_path / "absent.pt", trained.key, device="cpu")

    payload = torch.load(path, weights_only=True)
    payload["format"] = "promptrec.sequential/1"  # trained on the last window only
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(CheckpointMismatchError, match="not a promptrec.sequential/2 checkpoint.*promptrec train retriever"):
        SequentialModel.load(tmp_path / "old.pt", trained.key, device="cpu")


def test_training_windows_make_every_item_after_the_first_a_target_once():
    seq = list(range(1, 12))  # 11 items, windows of 4 inputs + 1
    windows = training_windows([seq, [7], [8, 9]], 4)
    assert windows == [[7, 8, 9, 10, 11], [3, 4, 5, 6, 7], [1, 2, 3], [8, 9]]
    targets = [t for w in windows[:3] for t in w[1:]]
    assert sorted(targets) == seq[1:]
    assert training_windows([list(range(1, 6))], 4) == [[1, 2, 3, 4, 5]]


def test_time_order_detection():
    frame = pd.DataFrame({"user_id": ["1", "1", "2"], "item_id": ["a", "b", "a"], "timestamp": [5.0, 5.0, 7.0]})
    assert not has_time_order(frame)
    assert not has_time_order(frame.assign(timestamp=np.nan))
    assert has_time_order(frame.assign(timestamp=[5.0, 6.0, 7.0]))


# --------------------------------------------------------------------------- through the index


def planted_catalog() -> list[Item]:
    return [Item(item_id=i, title=f"Film {i}", year=2000, genres=("Drama",)) for i in [A, B, C, *FILLER]] + [
        Item(item_id="new", title="A Film Nobody Rated", year=2024, genres=("Drama",))
    ]


def planted_frame(timestamps: bool = True) -> pd.DataFrame:
    rows = [
        {"user_id": u, "item_id": i, "timestamp": float(t) if timestamps else None}
        for u, h in planted_histories().items() for t, i in enumerate(h)
    ]
    return pd.DataFrame(rows)


@pytest.mark.integration
def test_index_trains_once_refuses_mismatch_and_skips_untimed_data(asset_settings, tmp_path):
    from promptrec.recommender import Recommender

    rs = asset_settings.retrieval.model_copy(update={"sequential": TINY})
    settings = asset_settings.model_copy(update={"index_dir": tmp_path / "index", "device": "cpu", "retrieval": rs})
    items, frame = planted_catalog(), planted_frame()
    rec = Recommender.from_interactions(items, frame, settings, namespace="planted")
    assert rec.index.manifest.sequential_trained and rec.index.manifest.sequential_sync.added == 30
    found = rec.candidates("someone", 5, history=["f4", A, B])
    assert found.candidates[0].item_id == C and "sequential" in found.candidates[0].source_ranks
    # The item nobody rated is not in the model but still reachable through its text vector.
    assert rec.index.sequential.count() == 30 and rec.index.text.count() == 31
    # On held-out planted items (history ends A, B; C follows) the grid picks the sequential source.
    from promptrec.retrieval.weights import all_source_rankings, choose_weights

    histories = {f"s{n}": [FILLER[n], FILLER[n + 1], A, B] for n in range(6)}
    every = rec.retriever.with_every_source()
    rankings = all_source_rankings(every.source_rankings, histories, list(histories), rs.pool_size)
    grid = rs.model_copy(update={"weights": {"text": 1.0}, "weight_grid": {"sequential": [0.0, 1.0], "text": [0.0, 1.0]}})
    best, text_only, _, tried = choose_weights(rankings, dict.fromkeys(histories, C), grid)
    assert tried == 3 and best.weights["sequential"] == 1.0 and best.weights["text"] == 0.0 and best.recall10 == 1.0
    assert text_only.ndcg10 < best.ndcg10
    again = Recommender.from_interactions(items, frame, settings, namespace="planted")
    assert not again.index.manifest.sequential_trained
    assert again.index.manifest.sequential_sync.unchanged == 30
    changed = rs.model_copy(update={"sequential": TINY.model_copy(update={"dropout": 0.3})})
    with pytest.raises(CheckpointMismatchError, match="promptrec train retriever"):
        Recommender.from_interactions(items, frame, settings.model_copy(update={"retrieval": changed}), namespace="planted")
    with pytest.raises(CheckpointMismatchError, match="promptrec train retriever"):
        Recommender.open(items, frame, settings.model_copy(update={"retrieval": changed}), "planted")
    # Retraining with the changed settings (here another hidden size) replaces model and vectors.
    wider = rs.model_copy(update={"sequential": TINY.model_copy(update={"hidden": 16})})
    retrained = Recommender.from_interactions(
        items, frame, settings.model_copy(update={"retrieval": wider}), namespace="planted", retrain=True
    )
    assert retrained.index.manifest.sequential_trained and retrained.index.sequential_model.item_vectors().shape == (30, 16)
    # Data without timestamps: no sequence, no model, and the manifest says why.
    untimed = settings.model_copy(update={"index_dir": tmp_path / "untimed"})
    flat = Recommender.from_interactions(items, planted_frame(timestamps=False), untimed, namespace="untimed")
    assert flat.index.sequential_model is None and "no time order" in flat.index.manifest.sequential_skipped
    assert "sequential" not in flat.retriever.source_rankings(["f4", A, B], 10)


@pytest.mark.integration
def test_build_fits_fusion_weights_per_index_reuses_them_and_pinned_weights_win(asset_settings, tmp_path):
    """Each build fits its own fusion weights on the held-out last events and serves them;
    an unchanged rebuild reuses the fit; explicit `retrieval.weights` pin what is served; too
    few users or an untimed log skip the fit and say why."""
    from promptrec.config import RetrievalSettings
    from promptrec.recommender import Recommender

    grid = {"sequential": [0.0, 1.0], "transitions": [0.0, 1.0], "text": [0.0, 0.5]}
    rs = asset_settings.retrieval.model_copy(
        update={"sequential": TINY, "fit_weights_min_users": 100, "weight_grid": grid})
    settings = asset_settings.model_copy(update={"index_dir": tmp_path / "index", "device": "cpu", "retrieval": rs})
    items, frame = planted_catalog(), planted_frame()
    rec = Recommender.from_interactions(items, frame, settings, namespace="planted")
    fit = rec.index.manifest.fusion
    assert fit.weights is not None and fit.users == 150 and fit.settings_tried == 9
    assert fit.best.ndcg10 >= fit.settings_weights.ndcg10 and fit.top[0] == fit.best
    assert rec.retriever.settings.weights == fit.weights
    assert "behaviour-holdout" not in {c.name for c in rec.index.text._client.list_collections()}
    again = Recommender.from_interactions(items, frame, settings, namespace="planted")
    assert again.index.manifest.fusion == fit  # nothing changed: the fit is reused, not redone
    pinned = {"sequential": 0.0, "transitions": 1.0, "behaviour": 0.0, "text": 0.0, "popularity": 0.0}
    own = settings.model_copy(update={"retrieval": RetrievalSettings(**{**rs.model_dump(), "weights": pinned})})
    assert own.retrieval.weights_pinned
    assert Recommender.from_interactions(items, frame, own, namespace="planted").retriever.settings.weights == pinned
    few = settings.model_copy(update={"retrieval": rs.model_copy(update={"fit_weights_min_users": 1000})})
    skipped = Recommender.from_interactions(items, frame, few, namespace="planted")
    assert "fewer than retrieval.fit_weights_min_users = 1000" in skipped.index.manifest.fusion.skipped
    assert skipped.retriever.settings.weights == rs.weights


@pytest.mark.integration
def test_new_item_slots_bring_items_nobody_interacted_with_into_the_list(asset_settings, tmp_path):
    """`retrieval.new_item_slots`: the last places of a list go to the best text matches among
    items with no interaction; the fused items above them keep their places."""
    from promptrec.recommender import Recommender

    rs = asset_settings.retrieval.model_copy(update={"weights": {"transitions": 1.0, "text": 0.2}})
    settings = asset_settings.model_copy(update={"index_dir": tmp_path / "index", "device": "cpu", "retrieval": rs})
    rec = Recommender.from_interactions(planted_catalog(), planted_frame(), settings, namespace="planted-new")
    history = ["f4", A, B]
    plain = [c.item_id for c in rec.candidates("someone", 6, history=history).candidates]
    assert "new" not in plain
    slotted = Recommender(rec.items, rec.histories, rec.index, settings.model_copy(
        update={"retrieval": rs.model_copy(update={"new_item_slots": 2})}))
    found = slotted.candidates("someone", 6, history=history).candidates
    # 2 slots, one item nobody rated: it takes place 5, the plain list's 5th follows it
    assert [c.item_id for c in found] == plain[:4] + ["new", plain[4]]
    assert found[4].popularity == 0 and "text" in found[4].source_ranks and found[4].rank == 5
