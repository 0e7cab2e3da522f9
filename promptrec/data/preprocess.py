"""Preprocessing: pure functions over an interaction frame (columns INTERACTION_COLUMNS).

The one ordering rule, used by every function here and by everyone downstream
(`sort_histories`): each user's interactions are sorted by timestamp, and interactions of the
same user at the same timestamp are ordered by the tie rule (`promptrec.config.TieRule`):

* ``"id"`` (the default; LlamaRec's order): by item id, where an item id made only of the
  digits 0-9 compares numerically and comes before any other id, and other ids compare as
  strings; that is the key (0, int(id)) for digit ids and (1, id) otherwise ("9" before "10"
  before "a").
* ``"hash"``: by a seeded hash of (timestamp, user, item) (`tie_hash`: blake2b, stable across
  processes and machines), a fixed pseudo-random order that no id numbering can bias; the id
  key breaks the (astronomically rare) hash collisions.

Rows without a timestamp come first within their user (an unknown time counts as older than
any known one). Rows equal under the rule keep their order in the input. Users are ordered by
the same id key.

Every function returns new frames (with a fresh index) and leaves its input untouched; all of them are vectorised
(MovieLens-1M, a million rows, takes about a second).
"""

from __future__ import annotations

import hashlib
from typing import Literal

import logging

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from promptrec.config import TieRule
from promptrec.data.schema import TemporalSplit
from promptrec.errors import DataError

__all__ = [
    "DedupResult",
    "apply_threshold",
    "drop_duplicates",
    "has_time_order",
    "history_order",
    "id_rank",
    "is_order_free",
    "k_core",
    "prepare_interactions",
    "seeded_sample",
    "sort_histories",
    "temporal_split",
    "tie_hash",
]


class DedupResult(BaseModel):
    """`drop_duplicates`' answer: the frame with one row per (user, item), and how many rows
    were removed."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    frame: pd.DataFrame
    removed: int


def id_rank(ids: pd.Series | np.ndarray) -> np.ndarray:
    """For each id its rank under the id key (0, int) for digit ids, (1, str) otherwise.

    Equal ids get equal ranks. Digit ids of any length compare exactly (no int64 overflow):
    by their value, then by the string (so "007" and "7" are equal in value but distinct).
    Only the distinct ids are sorted, so this is fast on long logs.
    """
    codes, uniques = pd.factorize(np.asarray(ids, dtype=object), use_na_sentinel=False)
    values = [str(u) for u in uniques]

    def key(value: str) -> tuple:
        if value.isascii() and value.isdigit():
            digits = value.lstrip("0")
            return (0, len(digits), digits, value)
        return (1, 0, value, value)

    order = sorted(range(len(values)), key=lambda i: key(values[i]))
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[np.asarray(order, dtype=np.int64)] = np.arange(len(values), dtype=np.int64)
    return ranks[codes] if len(codes) else np.zeros(0, dtype=np.int64)


_KEY_LIMIT = 2**63  # combined sort keys must stay below this to fit int64
TIE_RULES = ("id", "hash")


def tie_hash(frame: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """Per row, a seeded 64-bit hash of (timestamp, user id, item id): the "hash" tie rule's key.

    blake2b (8-byte digest, the seed as its key) of ``repr(float(timestamp))``, the user id and
    the item id joined by a unit separator, so the same row gets the same key in every process
    and on every machine (unlike Python's salted ``hash()``). An unknown timestamp hashes as "nan".
    Equal (timestamp, user, item) rows get equal keys. Returns uint64.
    """
    if len(frame) == 0:
        return np.zeros(0, dtype=np.uint64)
    key = str(int(seed)).encode()
    times = pd.to_numeric(frame["timestamp"], errors="raise").to_numpy(dtype=float, na_value=np.nan)
    out = np.empty(len(frame), dtype=np.uint64)
    blake2b = hashlib.blake2b
    for n, (t, user, item) in enumerate(zip(times.tolist(), frame["user_id"].tolist(), frame["item_id"].tolist())):
        text = f"{t!r}\x1f{user}\x1f{item}".encode()
        out[n] = int.from_bytes(blake2b(text, digest_size=8, key=key).digest(), "little")
    return out


def _check_rule(tie_rule: str) -> None:
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {list(TIE_RULES)}, not {tie_rule!r} (setting split.tie_rule)")


def _history_order(frame: pd.DataFrame, tie_rule: TieRule = "id", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(positions sorting `frame` by the ordering rule, each row's user rank)."""
    _check_rule(tie_rule)
    if len(frame) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    users = id_rank(frame["user_id"])
    items = id_rank(frame["item_id"])
    times = pd.to_numeric(frame["timestamp"], errors="raise").to_numpy(dtype=float, na_value=np.nan)
    times = np.where(np.isnan(times), -np.inf, times)  # unknown times first
    _, time_rank = np.unique(times, return_inverse=True)
    time_rank = time_rank.reshape(-1)
    if tie_rule == "hash":
        # only rows sharing (user, timestamp) with another row need a hash: elsewhere it orders nothing
        tied = pd.DataFrame({"u": users, "t": time_rank}).duplicated(keep=False).to_numpy()
        hashes = np.zeros(len(frame), dtype=np.uint64)
        hashes[tied] = tie_hash(frame.iloc[np.flatnonzero(tied)], seed)
        # the last key is the primary one; stable; the item key only breaks hash collisions
        return np.lexsort((items, hashes, time_rank, users)), users
    n_times, n_items = int(time_rank.max()) + 1, int(items.max()) + 1
    if (int(users.max()) + 1) * n_times * n_items < _KEY_LIMIT:  # one int64 key: faster than lexsort
        order = np.argsort((users * n_times + time_rank) * n_items + items, kind="stable")
    else:
        order = np.lexsort((items, time_rank, users))  # the last key is the primary one; stable
    return order, users


def has_time_order(frame: pd.DataFrame) -> bool:
    """True when some user has two interactions with different known timestamps: only then
    is a history a sequence (without timestamps the ordering rule falls back to item ids)."""
    times = pd.to_numeric(frame["timestamp"], errors="raise")
    known = frame.loc[times.notna(), ["user_id"]].assign(t=times[times.notna()])
    return bool(len(known)) and bool((known.groupby("user_id")["t"].nunique() > 1).any())


def history_order(frame: pd.DataFrame, tie_rule: TieRule = "id", seed: int = 0) -> np.ndarray:
    """Positions that sort `frame` by (user, timestamp, tie rule); stable."""
    return _history_order(frame, tie_rule, seed)[0]


def sort_histories(frame: pd.DataFrame, tie_rule: TieRule = "id", seed: int = 0) -> pd.DataFrame:
    """The frame sorted by (user, timestamp, tie rule) with a fresh index: every user's
    history oldest first, under the module's one ordering rule."""
    return frame.iloc[history_order(frame, tie_rule, seed)].reset_index(drop=True)


def drop_duplicates(frame: pd.DataFrame, keep: Literal["last", "first"] = "last") -> DedupResult:
    """Keep one row per (user, item): the latest under the ordering rule ("last"; equal
    timestamps: the later row in the input) or the earliest ("first"). Kept rows stay in
    their input order."""
    if keep not in ("last", "first"):
        raise ValueError(f"keep must be 'last' or 'first', not {keep!r}")
    order = history_order(frame)
    pairs = frame[["user_id", "item_id"]].iloc[order]
    duplicated = pairs.duplicated(keep=keep).to_numpy()
    drop = np.zeros(len(frame), dtype=bool)
    drop[order[duplicated]] = True
    return DedupResult(frame=frame[~drop].reset_index(drop=True), removed=int(drop.sum()))


def apply_threshold(frame: pd.DataFrame, min_rating: float, *, keep_unrated: bool = True) -> pd.DataFrame:
    """Implicit feedback: keep the rows rated at least `min_rating`.

    Rows without a rating (NaN: a click, a purchase, a play) are kept by default: the event
    itself is the positive signal and there is no rating to hold against the threshold. Pass
    `keep_unrated=False` to drop them too.
    """
    ratings = pd.to_numeric(frame["rating"], errors="raise").to_numpy(dtype=float, na_value=np.nan)
    unrated = np.isnan(ratings)
    keep = np.where(unrated, keep_unrated, ratings >= min_rating)
    return frame[keep].reset_index(drop=True)


def k_core(frame: pd.DataFrame, user_k: int, item_k: int | None = None) -> pd.DataFrame:
    """Drop users with fewer than `user_k` interactions and items with fewer than `item_k`
    (default: `user_k`), repeatedly, until every remaining user and item qualifies. Rows
    count as they are (call `drop_duplicates` first to count distinct items). Kept rows stay
    in their input order."""
    item_k = user_k if item_k is None else item_k
    users, _ = pd.factorize(frame["user_id"].to_numpy(dtype=object))
    items, _ = pd.factorize(frame["item_id"].to_numpy(dtype=object))
    alive = np.ones(len(frame), dtype=bool)
    while True:
        user_counts = np.bincount(users[alive], minlength=users.max() + 1 if len(users) else 0)
        item_counts = np.bincount(items[alive], minlength=items.max() + 1 if len(items) else 0)
        ok = alive & (user_counts[users] >= user_k) & (item_counts[items] >= item_k)
        if (ok == alive).all():
            break
        alive = ok
    return frame[alive].reset_index(drop=True)


def is_order_free(frame: pd.DataFrame) -> bool:
    """True when the log has no time order: no user has two interactions at different known
    timestamps (no timestamps at all, all equal, or one time per user)."""
    return not has_time_order(frame)


def random_holdout_rule(seed: int) -> str:
    return f"random-holdout seed={seed}"


def _random_holdout(frame: pd.DataFrame, seed: int) -> TemporalSplit:
    """Order-free data: per user (3+ rows), one seeded random row is the test row and another
    the validation row; the rest train. The draw for a user depends only on the seed and the
    user's rows (not on other users), so a sample of users splits as the whole log does."""
    order, user_rank = _history_order(frame)
    ordered = frame.iloc[order].reset_index(drop=True)
    n = len(ordered)
    rule = random_holdout_rule(seed)
    if n == 0:
        return TemporalSplit(train=ordered.copy(), validation=ordered.copy(), test=ordered.copy(), rule=rule)
    users = user_rank[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, n])
    role = np.zeros(n, dtype=np.int8)  # 0 train, 1 validation, 2 test
    user_ids = ordered["user_id"].to_numpy(dtype=object)
    for start, size in zip(starts.tolist(), sizes.tolist()):
        if size < 3:
            continue
        digest = hashlib.sha256(f"{seed}\x1f{user_ids[start]}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        test, validation = rng.choice(size, size=2, replace=False)
        role[start + test], role[start + validation] = 2, 1
    return TemporalSplit(
        train=ordered[role == 0].reset_index(drop=True),
        validation=ordered[role == 1].reset_index(drop=True),
        test=ordered[role == 2].reset_index(drop=True),
        rule=rule,
    )


def temporal_split(frame: pd.DataFrame, tie_rule: TieRule = "id", seed: int = 0) -> TemporalSplit:
    """Temporal leave-one-out, the one split function. Each user's interactions are sorted by
    timestamp, same-timestamp ties by the tie rule (module docstring: "id", the item id key,
    LlamaRec's order; or "hash", a hash of (timestamp, user, item) seeded by ``seed``); ties
    that remain keep input order. The last interaction is the user's test row, the
    second-to-last the validation row and the rest train. Users with fewer than three
    interactions keep all of them in train. Every frame comes back in history order with a
    fresh index; the split records the rule.

    Order-free data (`is_order_free`: no timestamps, or all equal) has no last interaction:
    there each user's test and validation rows are a seeded random hold-out (``seed``), and the
    split's ``rule`` says so."""
    if is_order_free(frame):
        return _random_holdout(frame, seed)
    order, user_rank = _history_order(frame, tie_rule, seed)
    ordered = frame.iloc[order].reset_index(drop=True)
    n = len(ordered)
    if n == 0:
        return TemporalSplit(train=ordered.copy(), validation=ordered.copy(), test=ordered.copy(),
                             tie_rule=tie_rule, tie_seed=seed)
    users = user_rank[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, n])
    size = np.repeat(sizes, sizes)
    from_end = np.repeat(starts + sizes, sizes) - np.arange(n) - 1  # 0 for each user's last row
    evaluated = size >= 3
    test = evaluated & (from_end == 0)
    validation = evaluated & (from_end == 1)
    train = ~(test | validation)
    return TemporalSplit(
        train=ordered[train].reset_index(drop=True),
        validation=ordered[validation].reset_index(drop=True),
        test=ordered[test].reset_index(drop=True),
        tie_rule=tie_rule,
        tie_seed=seed,
    )


def prepare_interactions(frame: pd.DataFrame, min_rating: float | None = None, name: str = "interactions") -> pd.DataFrame:
    """The one preprocessing path every log goes through (named data sets and
    `Recommender.from_interactions` alike): one row per (user, item), the latest kept
    (`drop_duplicates`), then the implicit-feedback threshold when `min_rating` is set. A log
    with no interactions (or none left by the threshold) is a DataError: no index means nothing."""
    log = logging.getLogger("promptrec")
    if frame.empty:
        raise DataError(f"{name}: the interaction log has no rows; give a log with at least one interaction")
    deduped = drop_duplicates(frame)
    out = deduped.frame
    if deduped.removed:
        log.info("%s: %d repeated (user, item) rows removed, the latest kept", name, deduped.removed)
    if min_rating is not None:
        before = len(out)
        out = apply_threshold(out, min_rating)
        log.info("%s: %d rows below rating %s removed", name, before - len(out), min_rating)
        if out.empty:
            raise DataError(f"{name}: all {before} interactions are below min_rating = {min_rating}; "
                            "lower the threshold or unset it")
    return out


def seeded_sample(ids: "list[str] | np.ndarray", count: "int | str | None", seed: int, salt: int = 0) -> list[str]:
    """``count`` ids drawn without replacement (seeded by (seed, salt)), in the input order;
    "all" or None or a count >= len(ids): all of them. The one user sampler (eval and calibrate)."""
    ids = list(ids)
    if count is None or count == "all" or int(count) >= len(ids):
        return ids
    rng = np.random.default_rng([seed, salt])
    keep = set(rng.choice(len(ids), size=int(count), replace=False).tolist())
    return [u for n, u in enumerate(ids) if n in keep]


def ordered_ids(ids) -> list[str]:
    """Ids sorted by the module's id key (digit ids numerically)."""
    arr = np.array(list(ids), dtype=object)
    return arr[np.argsort(id_rank(arr), kind="stable")].tolist() if len(arr) else []
