"""Evaluation metrics as pure functions (no I/O, no state).

Ranking metrics take one ranked list of item ids (best first) and the relevant item ids (a
single id or a collection; temporal leave-one-out has exactly one). Relevance is binary. An
item repeated in the list counts once, at its first position; a later repeat is a miss at its
own position (so a ranker cannot gain by repeating the target). A list shorter than ``k`` is
padded with misses.

* ``ndcg_at_k``: DCG@k / ideal DCG@k with gains 1/log2(rank + 1); the ideal list puts
  min(|relevant|, k) relevant items first.
* ``recall_at_k``: relevant items in the top k / |relevant|. With one relevant item this is
  the hit rate (HR@k), ``hit_rate_at_k``.
* ``precision_at_k``: relevant items in the top k / k (k, not the list length).
* ``f1_at_k``: harmonic mean of precision@k and recall@k (0 when both are 0).
* ``ndcg_of_ranks``: the same NDCG for one relevant item, from its rank in each list.
* ``reciprocal_rank``: 1 / rank of the first relevant item within the top k (``k=None``: the
  whole list); 0 when none is there. Its mean over users is MRR.

Probability metrics take 0/1 labels and predicted probabilities of the label being 1:
``roc_auc`` (Mann-Whitney, ties count one half, NaN when only one class is present),
``log_loss`` (natural log, probabilities clipped to [eps, 1 - eps]), ``brier_score``,
``expected_calibration_error`` (equal-width bins, the same bin edges as scikit-learn's
``calibration_curve``) and ``reliability_curve``.

Output health and cost: ``list_health`` (invented, repeated, history items in a returned
list), ``percentile`` and ``latency_summary``.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Sequence

import numpy as np
from pydantic import BaseModel
from scipy.stats import rankdata

__all__ = [
    "brier_score",
    "dcg_at_k",
    "expected_calibration_error",
    "f1_at_k",
    "gains_at_k",
    "hit_rate_at_k",
    "latency_summary",
    "list_health",
    "log_loss",
    "ndcg_at_k",
    "percentile",
    "precision_at_k",
    "recall_at_k",
    "reciprocal_rank",
    "reliability_curve",
    "roc_auc",
    "score_ranks",
    "softmax",
    "sigmoid",
    "ValidationScore",
]

VALIDATION_RECALL_KS = (10, 20, 50)


class ValidationScore(BaseModel):
    """Means over users of one relevant (held-out) item each: NDCG@10, Recall@10/20/50."""

    users: int
    ndcg10: float
    recall10: float
    recall20: float
    recall50: float


def _relevant_set(relevant: str | Collection[str]) -> set[str]:
    return {relevant} if isinstance(relevant, str) else set(relevant)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def gains_at_k(ranked: Sequence[str], relevant: str | Collection[str], k: int) -> np.ndarray:
    """0/1 gain at each of the first k positions (padded with 0; repeats gain 0)."""
    _check_k(k)
    rel = _relevant_set(relevant)
    gains = np.zeros(k)
    seen: set[str] = set()
    for pos, item in enumerate(ranked[:k]):
        if item in rel and item not in seen:
            gains[pos] = 1.0
        seen.add(item)
    return gains


def dcg_at_k(gains: Sequence[float], k: int) -> float:
    """Discounted cumulative gain of the first k gains: sum g_i / log2(i + 1), i 1-based."""
    _check_k(k)
    g = np.asarray(gains, dtype=np.float64)[:k]
    return float((g / np.log2(np.arange(2, len(g) + 2))).sum())


def ndcg_at_k(ranked: Sequence[str], relevant: str | Collection[str], k: int) -> float:
    rel = _relevant_set(relevant)
    if not rel:
        return 0.0
    ideal = dcg_at_k(np.ones(min(len(rel), k)), k)
    return dcg_at_k(gains_at_k(ranked, rel, k), k) / ideal


def ndcg_of_ranks(ranks: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """NDCG@k of lists that each hold one relevant item, given its 0-based rank in each list
    (vectorised: full-ranking evaluation ranks every item and needs only the target's rank)."""
    _check_k(k)
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)


def score_ranks(ranks: Sequence[float] | np.ndarray) -> ValidationScore:
    """`ValidationScore` from each user's 0-based rank of the held-out item (`inf`: not ranked)."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        return ValidationScore(users=0, ndcg10=0.0, recall10=0.0, recall20=0.0, recall50=0.0)
    return ValidationScore(users=int(r.size), ndcg10=float(ndcg_of_ranks(r, 10).mean()),
                           **{f"recall{k}": float((r < k).mean()) for k in VALIDATION_RECALL_KS})


def recall_at_k(ranked: Sequence[str], relevant: str | Collection[str], k: int) -> float:
    rel = _relevant_set(relevant)
    if not rel:
        return 0.0
    return float(gains_at_k(ranked, rel, k).sum()) / len(rel)


def hit_rate_at_k(ranked: Sequence[str], relevant: str | Collection[str], k: int) -> float:
    """1 if any relevant item is in the top k, else 0."""
    return float(gains_at_k(ranked, relevant, k).any())


def precision_at_k(ranked: Sequence[str], relevant: str | Collection[str], k: int) -> float:
    return float(gains_at_k(ranked, relevant, k).sum()) / k


def f1_at_k(ranked: Sequence[str], relevant: str | Collection[str], k: int) -> float:
    p = precision_at_k(ranked, relevant, k)
    r = recall_at_k(ranked, relevant, k)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def reciprocal_rank(ranked: Sequence[str], relevant: str | Collection[str], k: int | None = None) -> float:
    rel = _relevant_set(relevant)
    limit = len(ranked) if k is None else k
    if limit < 1:
        return 0.0
    for pos, item in enumerate(ranked[:limit], start=1):
        if item in rel:
            return 1.0 / pos
    return 0.0


RANKING_METRICS = {
    "ndcg": ndcg_at_k,
    "recall": recall_at_k,
    "hr": hit_rate_at_k,
    "precision": precision_at_k,
    "f1": f1_at_k,
    "mrr": reciprocal_rank,
}


# --------------------------------------------------------------------------- probabilities


def _labels_probs(y_true: Sequence[float], y_prob: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if len(y) and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    return y, p


def roc_auc(y_true: Sequence[float], y_score: Sequence[float]) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative),
    ties counting one half. NaN when the labels hold only one class."""
    y, s = _labels_probs(y_true, y_score)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y_true: Sequence[float], y_prob: Sequence[float], eps: float = 1e-15) -> float:
    """Mean negative log-likelihood (natural log) of the labels."""
    y, p = _labels_probs(y_true, y_prob)
    if len(y) == 0:
        return float("nan")
    p = np.clip(p, eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def brier_score(y_true: Sequence[float], y_prob: Sequence[float]) -> float:
    """Mean squared difference between probability and label."""
    y, p = _labels_probs(y_true, y_prob)
    if len(y) == 0:
        return float("nan")
    return float(((p - y) ** 2).mean())


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if len(p) and (p.min() < 0 or p.max() > 1):
        raise ValueError("probabilities must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # scikit-learn's calibration_curve rule: bin i holds edges[i] <= p < edges[i+1]; 1.0 in the last.
    return np.searchsorted(edges[1:-1], p, side="right")


def reliability_curve(y_true: Sequence[float], y_prob: Sequence[float], n_bins: int = 10) -> dict[str, list]:
    """Per equal-width bin: edges, mean predicted probability, observed frequency, count.
    Empty bins have count 0 and NaN means."""
    y, p = _labels_probs(y_true, y_prob)
    idx = _bin_index(p, n_bins)
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(counts > 0, sum_p / counts, np.nan)
        freq = np.where(counts > 0, sum_y / counts, np.nan)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {
        "lower": edges[:-1].tolist(),
        "upper": edges[1:].tolist(),
        "mean_predicted": mean_p.tolist(),
        "observed": freq.tolist(),
        "count": counts.astype(int).tolist(),
    }


def expected_calibration_error(y_true: Sequence[float], y_prob: Sequence[float], n_bins: int = 10) -> float:
    """sum over bins of (bin count / N) * |observed frequency - mean predicted probability|."""
    y, p = _labels_probs(y_true, y_prob)
    if len(y) == 0:
        return float("nan")
    idx = _bin_index(p, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    gap = np.abs(np.bincount(idx, weights=y, minlength=n_bins) - np.bincount(idx, weights=p, minlength=n_bins))
    return float(gap.sum() / len(y)) if counts.sum() else float("nan")


def softmax(scores: Sequence[float]) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return s
    e = np.exp(s - s.max())
    return e / e.sum()


def sigmoid(scores: Sequence[float]) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * s))


# --------------------------------------------------------------------------- health and cost


def list_health(
    ranked: Sequence[str],
    allowed: Container[str] | None = None,
    history: Container[str] | None = None,
) -> dict[str, int]:
    """Problems in one returned list: ``invented`` (items outside ``allowed``: the candidates
    a reranker was given, or the catalog), ``repeated`` (entries beyond each item's first
    occurrence) and ``history`` (items the user already has)."""
    seen: set[str] = set()
    invented = repeated = in_history = 0
    for item in ranked:
        if item in seen:
            repeated += 1
            continue
        seen.add(item)
        if allowed is not None and item not in allowed:
            invented += 1
        if history is not None and item in history:
            in_history += 1
    return {"invented": invented, "repeated": repeated, "history": in_history}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation (numpy's default); NaN when empty."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.percentile(v, q)) if len(v) else float("nan")


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50 and p95 latency in seconds, and users per second = users / total seconds."""
    v = np.asarray(latencies_s, dtype=np.float64)
    total = float(v.sum())
    return {
        "latency_p50_s": percentile(v, 50),
        "latency_p95_s": percentile(v, 95),
        "users_per_s": (len(v) / total) if total > 0 else float("nan"),
        "total_s": total,
    }

