"""Behaviour learned from the interaction log: matrix-factorisation item vectors (stored in
Chroma), item-to-item transitions over time-ordered histories, and popularity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from promptrec.config import RetrievalSettings


def user_item_matrix(histories: Mapping[str, Sequence[int]], n_items: int) -> sp.csr_matrix:
    """Binary users x items matrix (users in the mapping's order)."""
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories.values()])
    cols = np.fromiter((i for h in histories.values() for i in h), dtype=np.int64, count=len(rows))
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(histories), n_items)
    )
    matrix.data[:] = 1.0  # an item seen twice is still one positive
    return matrix


def popularity(histories: Mapping[str, Sequence[int]], n_items: int) -> np.ndarray:
    """Number of users who interacted with each item."""
    return np.asarray(user_item_matrix(histories, n_items).sum(axis=0)).ravel().astype(np.int64)


def fit_als(
    matrix: sp.csr_matrix, *, factors: int, regularization: float, alpha: float, iterations: int, seed: int,
    num_threads: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The one ALS fit (`implicit`'s AlternatingLeastSquares on a users x items matrix), for the
    behaviour vectors and the eval baseline alike: (user factors, item factors)."""
    import threadpoolctl
    from implicit.cpu.als import AlternatingLeastSquares

    # implicit runs its own threads; a multi-threaded BLAS underneath only slows it down.
    with threadpoolctl.threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors, regularization=regularization, alpha=alpha, iterations=iterations,
            random_state=seed, num_threads=num_threads,
        )
        model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)


class BehaviourModel:
    """Implicit-feedback ALS (the `implicit` package). Its item factors are the behaviour
    vectors stored in Chroma; a user's vector is solved from their history in closed form,
    so any history (a known user, a new one, an evaluation split) gets a vector."""

    def __init__(self, item_factors: np.ndarray, regularization: float, alpha: float):
        self.item_factors = np.asarray(item_factors, dtype=np.float64)
        self.regularization = regularization
        self.alpha = alpha
        self._gram = self.item_factors.T @ self.item_factors

    @classmethod
    def fit(
        cls, histories: Mapping[str, Sequence[int]], n_items: int, settings: RetrievalSettings
    ) -> BehaviourModel:
        _, item_factors = fit_als(
            user_item_matrix(histories, n_items), factors=settings.als_factors,
            regularization=settings.als_regularization, alpha=settings.als_alpha,
            iterations=settings.als_iterations, seed=settings.seed,
        )
        return cls(item_factors, settings.als_regularization, settings.als_alpha)

    def user_vector(self, history: Sequence[int]) -> np.ndarray:
        """argmin_u sum_i c_ui (p_ui - u.y_i)^2 + reg |u|^2 with c = alpha on the history."""
        dim = self.item_factors.shape[1]
        if len(history) == 0:
            return np.zeros(dim)
        seen = self.item_factors[np.unique(np.asarray(history))]
        a = self._gram + self.regularization * np.eye(dim) + (self.alpha - 1.0) * seen.T @ seen
        return np.linalg.solve(a, self.alpha * seen.sum(axis=0))


class TransitionModel:
    """Item-to-item transitions in time-ordered histories: T[a, b] counts how often b follows
    a within `window` steps, damped by b's popularity. A user's scores sum the rows of their
    last few items, the most recent weighted highest."""

    def __init__(self, transitions: sp.csr_matrix):
        self.transitions = transitions.tocsr()

    @classmethod
    def fit(
        cls, histories: Mapping[str, Sequence[int]], n_items: int, settings: RetrievalSettings
    ) -> TransitionModel:
        src: list[np.ndarray] = []
        dst: list[np.ndarray] = []
        for history in histories.values():
            seq = np.asarray(history, dtype=np.int64)
            for step in range(1, settings.transition_window + 1):
                if len(seq) > step:
                    src.append(seq[:-step])
                    dst.append(seq[step:])
        if src:
            rows, cols = np.concatenate(src), np.concatenate(dst)
        else:
            rows = cols = np.zeros(0, dtype=np.int64)
        counts = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(n_items, n_items)
        )
        counts.sum_duplicates()
        damping = 1.0 / (popularity(histories, n_items) + 1.0) ** settings.transition_popularity_damping
        return cls(sp.csr_matrix(counts @ sp.diags(damping)))

    def scores(self, history: Sequence[int], last_items: int, recency_decay: float) -> np.ndarray:
        recent = np.asarray(history[-last_items:], dtype=np.int64)
        if len(recent) == 0:
            return np.zeros(self.transitions.shape[1])
        weights = recency_decay ** np.arange(len(recent))[::-1]
        return np.asarray(self.transitions[recent].T @ weights).ravel()


def recency_weighted_mean(vectors: np.ndarray, half_life: float) -> np.ndarray:
    """Mean of row vectors (oldest first), each row's weight halving every `half_life` rows back;
    returned at unit norm (zero when there are no rows)."""
    if len(vectors) == 0:
        return np.zeros(vectors.shape[1] if vectors.ndim == 2 else 0)
    weights = 0.5 ** (np.arange(len(vectors))[::-1] / half_life)
    mean = weights @ vectors
    norm = np.linalg.norm(mean)
    return mean / norm if norm > 0 else mean
