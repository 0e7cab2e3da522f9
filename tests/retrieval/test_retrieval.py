"""Retrieval on real parts: MovieLens-100K slice, the real MiniLM encoder, a real Chroma store."""

from __future__ import annotations

import pytest

from promptrec.config import Settings
from promptrec.data.schema import Item
from promptrec.errors import IndexMismatchError, UnknownItemError, UnknownUserError
from promptrec.recommender import Recommender

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(ml_slice, asset_settings, tmp_path_factory):
    items, frame = ml_slice
    settings = asset_settings.model_copy(update={"index_dir": tmp_path_factory.mktemp("index")})
    return Recommender.from_interactions(items, frame, settings, namespace="slice")


def test_candidates_are_typed_fused_and_exclude_history(built):
    user = "1"
    found = built.candidates(user, 20)
    assert len(found.candidates) == 20 and not found.cold_start
    history = set(built.history(user))
    assert not history & {c.item_id for c in found.candidates}
    assert [c.rank for c in found.candidates] == list(range(1, 21))
    assert all(a.fused_score >= b.fused_score for a, b in zip(found.candidates, found.candidates[1:]))
    first = found.candidates[0]
    assert first.title == built.item(first.item_id).display_title()
    assert set(first.source_scores) <= {"sequential", "transitions", "behaviour", "text", "popularity"}
    assert first.source_scores  # at least one source put it there
    assert {s for c in found.candidates for s in c.source_scores} >= {"sequential", "transitions", "behaviour", "text"}


def test_metadata_filter_passes_through_every_source(built):
    found = built.candidates("1", 10, where={"genre_Comedy": True})
    assert len(found.candidates) == 10
    assert all("Comedy" in built.item(c.item_id).genres for c in found.candidates)


def test_cold_start_and_unknown_ids(built):
    cold = built.candidates("nobody", 5, history=[])
    assert cold.cold_start and len(cold.candidates) == 5
    assert cold.candidates[0].popularity >= cold.candidates[-1].popularity
    with pytest.raises(UnknownUserError, match="unknown user 'nobody'"):
        built.candidates("nobody")
    with pytest.raises(UnknownItemError, match="unknown item 'no-such-item'"):
        built.candidates("1", history=["no-such-item"])


def test_reindex_upserts_only_what_changed(ml_slice, index_settings):
    items, frame = ml_slice
    rec = Recommender.from_interactions(items, frame, index_settings, namespace="slice")
    assert rec.index.manifest.text_sync.added == len(items)
    again = Recommender.from_interactions(items, frame, index_settings, namespace="slice")
    assert again.index.manifest.text_sync.model_dump() == {
        "added": 0, "updated": 0, "removed": 0, "unchanged": len(items),
    }
    assert again.index.manifest.behaviour_sync.unchanged == len(items)
    changed = [items[0].model_copy(update={"title": items[0].title + " (Director's Cut)"}), *items[1:]]
    changed.append(Item(item_id="new-1", title="A Brand New Film", year=2024, genres=("Drama",)))
    third = Recommender.from_interactions(changed, frame, index_settings, namespace="slice")
    assert third.index.manifest.text_sync.model_dump() == {
        "added": 1, "updated": 1, "removed": 0, "unchanged": len(items) - 1,
    }
    # A new item with no interactions is still reachable through its text vector.
    assert third.index.text.count() == len(items) + 1


def test_stale_or_mismatched_index_is_refused(ml_slice, built):
    items, frame = ml_slice
    index_settings = built.settings
    fewer = frame.iloc[:-10]
    with pytest.raises(IndexMismatchError, match="interactions_fingerprint: built for .*promptrec index"):
        Recommender.open(items, fewer, index_settings, "slice")
    other_encoder = index_settings.model_copy(update={"encoder": "some-other-encoder"})
    with pytest.raises(IndexMismatchError, match="encoder"):
        Recommender.open(items, frame, other_encoder, "slice")
    assert Recommender.open(items, frame, index_settings, "slice").candidates("1", 3).candidates


def test_settings_from_env_and_toml(tmp_path, monkeypatch):
    toml = tmp_path / "promptrec.toml"
    toml.write_text('dataset = "movielens-1m"\nn_candidates = 30\n[chroma]\nmode = "http"\nport = 9001\n')
    monkeypatch.setenv("PROMPTREC_CONFIG", str(toml))
    monkeypatch.setenv("PROMPTREC_N_CANDIDATES", "40")
    settings = Settings()
    assert settings.dataset == "movielens-1m" and settings.chroma.port == 9001
    assert settings.n_candidates == 40  # environment beats the file


def test_the_tie_rule_orders_histories_and_is_recorded_in_the_index(ml_slice, built, tmp_path):
    import shutil

    items, frame = ml_slice
    assert built.index.manifest.split.tie_rule == "id"
    index_dir = tmp_path / "index"
    shutil.copytree(built.settings.index_dir, index_dir)  # the text vectors are reused, not re-encoded
    split = built.settings.split.model_copy(update={"tie_rule": "hash", "tie_seed": 3})
    settings = built.settings.model_copy(update={"index_dir": index_dir, "split": split})
    hashed = Recommender.from_interactions(items, frame, settings, namespace="slice", retrain=True)  # the log order changed: retrain
    assert hashed.index.manifest.split.model_dump() == {"tie_rule": "hash", "tie_seed": 3}
    assert hashed.index.manifest.text_sync.unchanged == len(items)
    moved = [u for u in built.histories if built.histories[u] != hashed.histories[u]]
    assert moved and all(sorted(built.histories[u]) == sorted(hashed.histories[u]) for u in moved)
    # the index of hash-ordered histories is not opened for id-ordered ones
    with pytest.raises(IndexMismatchError, match="interactions_fingerprint: built for"):
        Recommender.open(items, frame, settings.model_copy(update={"split": built.settings.split}), "slice")
    assert Recommender.open(items, frame, settings, "slice").history(moved[0]) == hashed.histories[moved[0]]
