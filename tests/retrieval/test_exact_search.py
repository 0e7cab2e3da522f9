"""Exact search over item vectors (`ExactSearch`): every similarity computed, ties in item-id
order, the same list from any order of the rows; and a Chroma collection that searches
exactly gives what a brute-force scan of its vectors gives."""

from __future__ import annotations

import numpy as np
import pytest

from promptrec.retrieval.store import ExactSearch, ItemVectorCollection, chroma_client, unit_rows


def _brute(ids, vectors, query, space, n, exclude=frozenset()):
    matrix = unit_rows(vectors) if space == "cosine" else vectors
    q = query / np.linalg.norm(query) if space == "cosine" else query
    scores = matrix.astype(np.float32) @ q.astype(np.float32)
    ranked = sorted(zip(ids, scores.tolist()), key=lambda p: (-p[1], p[0]))
    return [(i, s) for i, s in ranked if i not in exclude][:n]


@pytest.mark.parametrize("space", ["cosine", "ip"])
def test_top_is_the_brute_force_order_with_ties_by_id(space):
    rng = np.random.default_rng(0)
    ids = [f"i{n:03d}" for n in range(300)]
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors[[7, 150, 299]] = vectors[42]  # four items of equal similarity to any query
    query = vectors[42] + 0.01 * rng.normal(size=16).astype(np.float32)
    search = ExactSearch(ids, vectors, space)
    got = search.top(query, 20, exclude={"i010"})
    want = _brute(ids, vectors, query, space, 20, exclude={"i010"})
    assert [i for i, _ in got] == [i for i, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    assert [i for i, _ in got[:4]] == ["i007", "i042", "i150", "i299"]
    # the rows' order does not matter: the same list from shuffled rows
    perm = rng.permutation(300)
    shuffled = ExactSearch([ids[p] for p in perm], vectors[perm], space)
    assert [i for i, _ in shuffled.top(query, 20, exclude={"i010"})] == [i for i, _ in got]


def test_a_tie_at_the_cut_is_broken_by_id_not_by_row_order():
    ids = ["d", "c", "b", "a", "e"]
    vectors = np.array([[1.0, 0], [1.0, 0], [1.0, 0], [1.0, 0], [0, 1.0]], dtype=np.float32)
    assert [i for i, _ in ExactSearch(ids, vectors, "ip").top(np.array([1.0, 0]), 2)] == ["a", "b"]


def test_allowed_exclude_and_more_than_there_are():
    ids = ["a", "b", "c"]
    vectors = np.eye(3, dtype=np.float32)
    search = ExactSearch(ids, vectors, "ip")
    assert [i for i, _ in search.top(np.array([1.0, 0.5, 0.2]), 10, allowed={"b", "c"})] == ["b", "c"]
    assert [i for i, _ in search.top(np.array([1.0, 0.5, 0.2]), 10, exclude={"a"})] == ["b", "c"]
    assert search.top(np.array([1.0, 0, 0]), 0) == []
    assert ExactSearch([], np.zeros((0, 3)), "cosine").top(np.ones(3), 5) == []


def test_with_rows_replaces_and_adds():
    search = ExactSearch(["a", "b"], np.array([[1.0, 0], [0, 1.0]]), "cosine")
    changed = search.with_rows(["b", "z"], np.array([[2.0, 0.1], [0, 3.0]]))
    assert changed.ids == ["a", "b", "z"] and len(search) == 2
    ids, vectors = changed.vectors(["z", "b", "z", "missing"])
    assert ids == ["z", "b"]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)  # cosine rows are unit length
    assert [i for i, _ in changed.top(np.array([1.0, 0]), 3)] == ["a", "b", "z"]


@pytest.mark.integration
def test_a_collection_searched_exactly_equals_a_brute_force_scan(tmp_path, asset_settings):
    rng = np.random.default_rng(1)
    ids = [f"item-{n}" for n in range(400)]
    vectors = rng.normal(size=(400, 8)).astype(np.float32)
    vectors[5] = vectors[6]
    client = chroma_client(asset_settings.chroma, tmp_path / "chroma")
    exact = ItemVectorCollection(client, "exact-probe", "cosine", {"dimension": 8}, exact_max_items=1000)
    exact.sync(ids, ["h"] * 400, [{"odd": n % 2 == 1} for n in range(400)], lambda rows: vectors[rows])
    query = vectors[5]
    want = _brute(ids, vectors, query, "cosine", 50, exclude={"item-7"})
    got = exact.query(query, 50, exclude={"item-7"})
    assert [i for i, _ in got] == [i for i, _ in want]
    odd = exact.query(query, 10, where={"odd": True})
    assert odd and all(int(i.split("-")[1]) % 2 == 1 for i, _ in odd)
    # a write through this collection is seen by its exact search at once
    exact.sync_some(["item-new"], ["h"], [{"odd": False}], query[None, :])
    assert "item-new" in [i for i, _ in exact.query(query, 3)]
    # above the limit: Chroma's HNSW answers, in the same (similarity, id) order
    approximate = ItemVectorCollection(client, "exact-probe", "cosine", {"dimension": 8}, exact_max_items=0)
    assert approximate.exact_search() is None
    top = approximate.query(query, 10)
    assert top == sorted(top, key=lambda p: (-p[1], p[0]))
