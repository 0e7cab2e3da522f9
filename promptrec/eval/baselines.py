"""Trained baselines: popularity, implicit ALS (`implicit`) and LightFM WARP (`lightfm-next`).

Each is fitted on the history known before the test item (`split.history_for_test()`:
train plus the validation row) and ranks every catalog item, the user's history excluded,
ties broken by item id order. Fits are seeded and single-threaded, so a run is deterministic.

`implicit` is a dependency of promptrec; LightFM is the optional extra ``baselines``
(``pip install "promptrec[baselines]"``, i.e. ``lightfm-next``): when it is missing the
ranker raises `BaselineUnavailable`, which the runner reports as skipped (an error under
``CI=true``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from promptrec.extras import MissingExtraError, require
from promptrec.errors import PromptrecError
from promptrec.eval.rankers import EvalData, OneAtATime, RankOutput, top_items
from promptrec.eval.suite import ALSParams, LightFMParams

__all__ = ["ALSRanker", "BaselineUnavailable", "LightFMRanker", "PopularityRanker", "user_item_matrix"]


class BaselineUnavailable(PromptrecError):
    """An optional baseline's package is not installed."""


def user_item_matrix(data: EvalData) -> tuple[sp.csr_matrix, dict[str, int]]:
    """Binary users x items matrix of the test-time history (items in `data.item_ids` order)."""
    users = sorted(data.test_histories)
    row_of = {u: n for n, u in enumerate(users)}
    rows, cols = [], []
    for user, history in data.test_histories.items():
        for item in history:
            rows.append(row_of[user])
            cols.append(data.item_position[item])
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
        shape=(len(users), len(data.item_ids)),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix, row_of


class _MatrixRanker(OneAtATime):
    """Shared rank(): score all items for the user, exclude the history, take the top."""

    kind = "baseline"
    name = "?"

    def _scores(self, user_id: str) -> np.ndarray:
        raise NotImplementedError

    def rank(self, user_id: str, history: Sequence[str], length: int) -> RankOutput:
        exclude = [self._data.item_position[i] for i in history if i in self._data.item_position]
        return RankOutput(ranked=top_items(self._scores(user_id), exclude, length, self._data.item_ids),
                          cold_start=not history)

    def close(self) -> None:
        pass


class PopularityRanker(_MatrixRanker):
    """Items by the number of users who interacted with them."""

    name = "popularity"

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def prepare(self, data: EvalData) -> None:
        self._data = data
        matrix, _ = user_item_matrix(data)
        self._popularity = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float64)

    def _scores(self, user_id: str) -> np.ndarray:
        return self._popularity


class ALSRanker(_MatrixRanker):
    """Implicit-feedback ALS (`implicit.cpu.als.AlternatingLeastSquares`), one thread, seeded."""

    name = "als"

    def __init__(self, params: ALSParams, seed: int = 0):
        self.params = params
        self.seed = seed

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params.model_dump(), "seed": self.seed}

    def prepare(self, data: EvalData) -> None:
        from promptrec.retrieval.sources import fit_als

        self._data = data
        matrix, self._row = user_item_matrix(data)
        p = self.params
        users, items = fit_als(matrix, factors=p.factors, regularization=p.regularization, alpha=p.alpha,
                               iterations=p.iterations, seed=self.seed, num_threads=1)
        self._users = np.asarray(users, dtype=np.float64)
        self._items = np.asarray(items, dtype=np.float64)

    def _scores(self, user_id: str) -> np.ndarray:
        return self._items @ self._users[self._row[user_id]]


class LightFMRanker(_MatrixRanker):
    """LightFM with the WARP loss (`lightfm-next`), one thread, seeded; no side features."""

    name = "lightfm"

    def __init__(self, params: LightFMParams, seed: int = 0):
        self.params = params
        self.seed = seed

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "loss": "warp", **self.params.model_dump(), "seed": self.seed}

    def prepare(self, data: EvalData) -> None:
        try:
            LightFM = require("lightfm", "baselines", "the LightFM baseline").LightFM
        except MissingExtraError as exc:
            raise BaselineUnavailable(f"{exc} (lightfm-next)") from None
        self._data = data
        matrix, self._row = user_item_matrix(data)
        p = self.params
        model = LightFM(
            no_components=p.no_components, loss="warp", learning_rate=p.learning_rate,
            item_alpha=p.item_alpha, user_alpha=p.user_alpha, max_sampled=p.max_sampled,
            random_state=np.random.RandomState(self.seed),
        )
        model.fit(matrix.tocoo(), epochs=p.epochs, num_threads=1)
        _, self._users = model.get_user_representations()
        self._item_bias, self._items = model.get_item_representations()
        self._users = np.asarray(self._users, dtype=np.float64)
        self._items = np.asarray(self._items, dtype=np.float64)
        self._item_bias = np.asarray(self._item_bias, dtype=np.float64)

    def _scores(self, user_id: str) -> np.ndarray:
        return self._items @ self._users[self._row[user_id]] + self._item_bias
