"""Preprocessing over hand-made interaction frames: the ordering rule, the split, the filters."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from promptrec.data import (
    DedupResult,
    TemporalSplit,
    apply_threshold,
    drop_duplicates,
    id_rank,
    interactions_frame,
    k_core,
    sort_histories,
    temporal_split,
    tie_hash,
)


def frame(rows: list[tuple]) -> pd.DataFrame:
    """(user, item, rating, timestamp) tuples -> an interaction frame."""
    return interactions_frame(
        pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    )


def pairs(f: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(f["user_id"], f["item_id"]))


# ------------------------------------------------------------------ the ordering rule


def test_id_rank_digits_numeric_then_strings():
    ids = pd.Series(["10", "9", "a", "B", "100", "09", "9", "x1"])
    ranks = id_rank(ids)
    ordered = [ids[i] for i in np.argsort(ranks, kind="stable")]
    # digit ids by value ("09" == 9 in value, then by string), then other ids as strings
    assert ordered == ["09", "9", "9", "10", "100", "B", "a", "x1"]
    assert ranks[1] == ranks[6]  # equal ids, equal ranks


def test_id_rank_handles_digit_ids_beyond_int64():
    ids = pd.Series(["99999999999999999999999", "100000000000000000000000", "5"])
    assert list(np.argsort(id_rank(ids))) == [2, 0, 1]


def test_sort_histories_breaks_timestamp_ties_by_numeric_item_id():
    f = frame(
        [
            ("u1", "10", 4, 100.0),
            ("u1", "9", 3, 100.0),
            ("u1", "b", 5, 100.0),
            ("u1", "a", 5, 100.0),
            ("u1", "7", 2, 50.0),
            ("u10", "1", 1, 1.0),
            ("u2", "3", 1, 5.0),
        ]
    )
    out = sort_histories(f)
    assert pairs(out) == [
        ("u1", "7"),
        ("u1", "9"),  # "9" before "10": numeric, not string order
        ("u1", "10"),
        ("u1", "a"),
        ("u1", "b"),
        ("u10", "1"),
        ("u2", "3"),
    ]
    assert list(out.index) == list(range(len(out)))


def test_sort_histories_orders_users_by_the_same_key_and_keeps_input_unchanged():
    f = frame([("10", "1", 1, 1.0), ("9", "1", 1, 1.0), ("x", "1", 1, 1.0)])
    before = f.copy()
    assert list(sort_histories(f)["user_id"]) == ["9", "10", "x"]
    pd.testing.assert_frame_equal(f, before)


def test_sort_histories_puts_unknown_times_first_and_is_stable():
    f = frame(
        [
            ("u", "5", 1, 20.0),
            ("u", "4", 1, np.nan),
            ("u", "3", 1, 10.0),
            ("u", "3", 2, 10.0),  # same (time, item) as the row above: input order kept
        ]
    )
    out = sort_histories(f)
    assert list(out["item_id"]) == ["4", "3", "3", "5"]
    assert list(out["rating"]) == [1.0, 1.0, 2.0, 1.0]


# ------------------------------------------------------------------ temporal split


def test_temporal_split_leave_one_out_with_ties():
    f = frame(
        [
            # u1: 4 interactions, last two in the same second: "9" before "10"
            ("u1", "10", 5, 300.0),
            ("u1", "9", 4, 300.0),
            ("u1", "1", 3, 100.0),
            ("u1", "2", 3, 200.0),
            # u2: exactly three
            ("u2", "5", 1, 3.0),
            ("u2", "6", 1, 1.0),
            ("u2", "7", 1, 2.0),
            # u3: two interactions -> all train
            ("u3", "1", 1, 1.0),
            ("u3", "2", 1, 2.0),
        ]
    )
    split = temporal_split(f)
    assert isinstance(split, TemporalSplit)
    assert split.test_items() == {"u1": "10", "u2": "5"}
    assert split.validation_items() == {"u1": "9", "u2": "7"}
    assert pairs(split.train) == [("u1", "1"), ("u1", "2"), ("u2", "6"), ("u3", "1"), ("u3", "2")]
    assert len(split.train) + len(split.validation) + len(split.test) == len(f)
    assert list(split.test.columns) == list(f.columns)
    assert len(split.history_for_test()) == len(split.train) + len(split.validation)


def test_temporal_split_empty_frame():
    split = temporal_split(frame([]))
    assert len(split.train) == len(split.validation) == len(split.test) == 0


def _naive_split(f: pd.DataFrame) -> tuple[dict, dict]:
    def key(item: str):
        return (0, int(item)) if item.isdigit() else (1, item)

    histories: dict[str, list] = {}
    for i, (u, it, t) in enumerate(zip(f["user_id"], f["item_id"], f["timestamp"])):
        histories.setdefault(u, []).append((t, key(it), i, it))
    test, validation = {}, {}
    for u, h in histories.items():
        if len(h) >= 3:
            h.sort()
            test[u], validation[u] = h[-1][3], h[-2][3]
    return test, validation


def test_temporal_split_matches_a_naive_implementation():
    rng = np.random.default_rng(0)
    n = 5000
    f = frame(
        list(
            zip(
                rng.integers(0, 300, n).astype(str),
                rng.integers(0, 200, n).astype(str),
                rng.integers(1, 6, n).astype(float),
                rng.integers(0, 30, n).astype(float),  # many ties
            )
        )
    )
    f = drop_duplicates(f).frame  # a naive sort cannot order equal (time, item) rows stably
    test, validation = _naive_split(f)
    split = temporal_split(f)
    assert split.test_items() == test
    assert split.validation_items() == validation


def test_sort_falls_back_to_lexsort_when_keys_would_overflow(monkeypatch):
    import promptrec.data.preprocess as preprocess

    rng = np.random.default_rng(2)
    n = 2000
    f = frame(
        list(
            zip(
                rng.integers(0, 50, n).astype(str),
                rng.choice(["a", "b", "7", "10", "9"], n),
                rng.integers(1, 6, n).astype(float),
                rng.choice([np.nan, 1.0, 2.0, 3.0], n),
            )
        )
    )
    fast = preprocess.history_order(f)
    monkeypatch.setattr(preprocess, "_KEY_LIMIT", 0)
    assert (preprocess.history_order(f) == fast).all()


def test_temporal_split_is_vectorised():
    rng = np.random.default_rng(1)
    n = 1_000_000
    f = pd.DataFrame(
        {
            "user_id": rng.integers(0, 6000, n).astype(str),
            "item_id": rng.integers(0, 4000, n).astype(str),
            "rating": rng.integers(1, 6, n).astype(float),
            "timestamp": rng.integers(0, 10**9, n).astype(float),
            "behaviour": None,
        }
    )
    split = temporal_split(f)  # vectorised: about a second (see benchmarks for timings)
    assert len(split.test) == 6000


# ------------------------------------------------------------------ the tie rule


def _tied_log(n_users: int = 60, n_items: int = 8) -> pd.DataFrame:
    """Every user rated ``n_items`` items in one second, then one more later."""
    rows = []
    for u in range(n_users):
        rows += [(f"u{u}", str(i), 4, 100.0) for i in range(n_items)]
        rows.append((f"u{u}", "99", 4, 200.0))
    return frame(rows)


def test_hash_tie_rule_orders_same_timestamp_rows_deterministically():
    f = _tied_log()
    by_id = sort_histories(f)
    a, again = sort_histories(f, "hash", seed=0), sort_histories(f, "hash", seed=0)
    other = sort_histories(f, "hash", seed=1)
    pd.testing.assert_frame_equal(a, again)  # same seed, same order
    first = lambda out: out.groupby("user_id", sort=False)["item_id"].apply(list).to_dict()  # noqa: E731
    assert first(by_id)["u0"] == [str(i) for i in range(8)] + ["99"]
    assert first(a) != first(by_id) and first(other) != first(a)  # the seed changes the order
    for out in (a, other):  # only same-timestamp rows move: times stay sorted, "99" stays last
        assert all(h[-1] == "99" and sorted(h[:-1], key=int) == [str(i) for i in range(8)] for h in first(out).values())
        assert list(out["user_id"]) == list(by_id["user_id"])
    # the input order does not matter, only (timestamp, user, item) and the seed
    shuffled = f.sample(frac=1.0, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(sort_histories(shuffled, "hash", seed=0), a)


def test_tie_hash_is_a_stable_blake2b_of_timestamp_user_item_and_seed():
    import hashlib

    f = frame([("u1", "7", 4, 100.0), ("u1", "7", 2, 100.0), ("u2", "7", 4, 100.0)])
    h = tie_hash(f, seed=5)
    expected = int.from_bytes(hashlib.blake2b(b"100.0\x1fu1\x1f7", digest_size=8, key=b"5").digest(), "little")
    assert h.dtype == np.uint64 and int(h[0]) == expected  # the same key in any process
    assert h[0] == h[1] and h[0] != h[2] and (tie_hash(f, seed=6) != h).all()


def test_temporal_split_applies_and_records_the_tie_rule():
    f = _tied_log(n_users=40)
    by_id, hashed = temporal_split(f), temporal_split(f, "hash", seed=0)
    assert (by_id.tie_rule, hashed.tie_rule, hashed.tie_seed) == ("id", "hash", 0)
    assert set(by_id.test_items().values()) == set(hashed.test_items().values()) == {"99"}
    assert set(by_id.validation_items().values()) == {"7"}  # the largest id of the tied second
    assert len(set(hashed.validation_items().values())) > 1  # the hash picks among the tied items
    assert temporal_split(f, "hash", seed=0).validation_items() == hashed.validation_items()
    with pytest.raises(ValueError, match="tie_rule must be one of"):
        temporal_split(f, "random")


# ------------------------------------------------------------------ filters


def test_drop_duplicates_keeps_the_latest():
    f = frame(
        [
            ("u", "1", 2, 300.0),
            ("u", "1", 5, 100.0),  # earlier rating of the same item
            ("u", "2", 3, 50.0),
            ("v", "1", 1, 10.0),
            ("u", "1", 4, 200.0),
        ]
    )
    before = f.copy()
    result = drop_duplicates(f)
    assert isinstance(result, DedupResult)
    assert result.removed == 2
    # the kept rows stay in input order
    assert list(zip(result.frame["user_id"], result.frame["item_id"], result.frame["rating"])) == [
        ("u", "1", 2.0),
        ("u", "2", 3.0),
        ("v", "1", 1.0),
    ]
    pd.testing.assert_frame_equal(f, before)

    first = drop_duplicates(f, keep="first")
    assert first.removed == 2
    assert first.frame.loc[first.frame["item_id"].eq("1") & first.frame["user_id"].eq("u"), "rating"].item() == 5.0


def test_drop_duplicates_same_second_keeps_the_later_row():
    f = frame([("u", "1", 2, 100.0), ("u", "1", 4, 100.0)])
    assert drop_duplicates(f).frame["rating"].tolist() == [4.0]
    assert drop_duplicates(f, keep="first").frame["rating"].tolist() == [2.0]
    with pytest.raises(ValueError):
        drop_duplicates(f, keep="middle")  # type: ignore[arg-type]


def test_apply_threshold_keeps_unrated_rows_by_default():
    f = frame([("u", "1", 5, 1.0), ("u", "2", 3, 2.0), ("u", "3", 4, 3.0), ("u", "4", None, 4.0)])
    assert list(apply_threshold(f, 4)["item_id"]) == ["1", "3", "4"]
    assert list(apply_threshold(f, 4, keep_unrated=False)["item_id"]) == ["1", "3"]
    assert list(apply_threshold(f, 4).index) == [0, 1, 2]


def test_k_core_iterates_until_stable():
    # Round 1 drops user "z" and item "d" (one interaction each); that leaves user "y" and
    # item "c" with one each, so round 2 drops them too.
    f = frame(
        [
            ("x", "a", 1, 1.0),
            ("x", "b", 1, 2.0),
            ("w", "a", 1, 1.0),
            ("w", "b", 1, 2.0),
            ("y", "c", 1, 1.0),
            ("y", "d", 1, 2.0),
            ("z", "c", 1, 3.0),
        ]
    )
    out = k_core(f, 2, 2)
    assert sorted(pairs(out)) == [("w", "a"), ("w", "b"), ("x", "a"), ("x", "b")]
    assert k_core(f, 2).equals(out)  # item_k defaults to user_k
    assert len(k_core(f, 3, 1)) == 0
    assert len(k_core(f, 1, 1)) == len(f)
