"""How related two items are by each retrieval signal: text-vector cosine, behaviour-factor
cosine and co-occurrence in the transitions, read from a `RetrievalIndex` (explanations use it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from promptrec.retrieval.store import unit_rows

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.retrieval.index import RetrievalIndex


def text_similarities(index: RetrievalIndex, item_id: str, others: Sequence[str]) -> np.ndarray:
    ids, vectors = index.text_vectors([item_id, *others])
    row = {i: n for n, i in enumerate(ids)}
    if item_id not in row:
        return np.zeros(len(others))
    vectors = unit_rows(np.asarray(vectors, dtype=np.float64))
    target = vectors[row[item_id]]
    return np.array([float(vectors[row[o]] @ target) if o in row else 0.0 for o in others])


def behaviour_similarities(index: RetrievalIndex, item_id: str, others: Sequence[str]) -> np.ndarray:
    position = index.position
    out = np.zeros(len(others))
    if item_id not in position:
        return out
    factors = index.behaviour_model.item_factors
    target = factors[position[item_id]]
    tnorm = float(np.linalg.norm(target))
    if tnorm == 0:
        return out
    for n, other in enumerate(others):
        if other in position:
            vec = factors[position[other]]
            norm = float(np.linalg.norm(vec))
            if norm > 0:
                out[n] = float(vec @ target) / (norm * tnorm)
    return out


def co_occurrence(index: RetrievalIndex, item_id: str, others: Sequence[str]) -> np.ndarray:
    """transitions[h, item] + transitions[item, h] (damped counts) for each h in ``others``."""
    position = index.position
    out = np.zeros(len(others))
    if item_id not in position:
        return out
    matrix = index.transitions.transitions
    target = position[item_id]
    rows = [position.get(o) for o in others]
    valid = [n for n, r in enumerate(rows) if r is not None]
    if not valid:
        return out
    idx = np.array([rows[n] for n in valid])
    forward = np.asarray(matrix[idx, target].todense()).ravel()  # h, then the item
    backward = np.asarray(matrix[target, idx].todense()).ravel()  # the item, then h
    out[valid] = forward + backward
    return out


def relatedness(index: RetrievalIndex, item_id: str, others: Sequence[str]) -> dict[str, np.ndarray]:
    """{"text", "behaviour", "co_occurrence"} → one value per item of ``others``."""
    return {
        "text": text_similarities(index, item_id, others),
        "behaviour": behaviour_similarities(index, item_id, others),
        "co_occurrence": co_occurrence(index, item_id, others),
    }
