"""Logistic calibration: P(relevant | LLM score, retrieval features) per (user, candidate).

Features (``FEATURE_NAMES``), computed within one user's candidate list:

* ``llm_z``: the strategy's raw score, z-scored within the list (0 when all equal);
* ``llm_rank_frac``: rank by LLM score as a fraction, 0 = best, 1 = worst;
* ``fused_z``: the retrieval fused score, z-scored within the list;
* ``retrieval_rank_frac``: retrieval rank as a fraction, 0 = best;
* ``log_popularity``: log(1 + interactions with the item);
* ``sequential_rr``, ``transitions_rr``, ``behaviour_rr``, ``text_rr``: 1 / the item's rank in that retrieval
  source (0 when the source did not return it), so the layer learns its own fusion;
* ``log_transitions``: log(1 + the transitions score).

On MovieLens-100K (test split, 20 candidates, fitted on validation users) the retrieval
features alone lift NDCG@10 from .091 (reciprocal-rank fusion) to .101: the logistic layer is
a learned fusion, and the LLM features add to it only what they carry.

Raw scores of different users are not comparable (a letters log-prob depends on the list),
hence the within-list normalisation. When the LLM was degraded (no scores), the LLM features
take their neutral values (z 0, rank fraction 0.5), so a calibrator still yields
probabilities from the retrieval features. Features are standardised with the training means
and scales, then P(r=1) = sigmoid(w . x + b) is fitted by scikit-learn's `LogisticRegression`
(lbfgs) with a small L2 penalty on w; whether it converged is kept in ``fit.converged``.

The fitted model is saved as JSON (atomic write) with a key: everything that changes the
features or the scores (model id, template hash, encoder, strategy, n_candidates, the retrieval
settings, permutations, history_items). Loading with an expected key that differs raises
`CalibrationMismatchError` naming the field and how to refit (``promptrec calibrate``); a file
with non-finite numbers or a zero scale is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from promptrec.config import RETRIEVAL_SOURCES
from promptrec.errors import IndexMismatchError, PromptrecError
from promptrec.keys import ArtifactKey
from promptrec.retrieval.schema import CandidateList

FORMAT = "promptrec.calibration/1"
CALIBRATION_SALT = 3  # `seeded_sample` salt of the calibration users (eval and `promptrec calibrate` alike)
#: Each retrieval source's reciprocal rank is a feature; popularity has its own (log_popularity).
SOURCE_FEATURES: tuple[str, ...] = tuple(s for s in RETRIEVAL_SOURCES if s != "popularity")
FEATURE_NAMES: tuple[str, ...] = (
    "llm_z", "llm_rank_frac", "fused_z", "retrieval_rank_frac", "log_popularity",
    *(f"{source}_rr" for source in SOURCE_FEATURES), "log_transitions",
)


class CalibrationMismatchError(IndexMismatchError):
    """A saved calibration was fitted for another model, template, encoder or strategy."""


class CalibrationKey(ArtifactKey):
    """What a calibration is valid for; any difference means refit."""

    model_id: str
    template_hash: str
    encoder: str
    strategy: str
    # None in files written before these were part of the key: such a file is refitted.
    n_candidates: int | None = None
    retrieval: str | None = None  # `retrieval_signature`: fusion weights and a hash of every retrieval setting
    permutations: int | None = None  # letters only
    history_items: int | None = None


# How the fusion weights are chosen, not which: the served weights are in the signature already.
_WEIGHT_FIT_FIELDS = {"fit_weights", "weight_grid", "fit_weights_users", "fit_weights_min_users"}


def retrieval_signature(retrieval: Any) -> str:
    """Readable identity of the retrieval settings: the fusion weights served, then a hash of all
    of them (except how the weights were fitted)."""
    dumped = retrieval.model_dump(mode="json", exclude=_WEIGHT_FIT_FIELDS)
    weights = " ".join(f"{name}={weight:g}" for name, weight in sorted(dumped["weights"].items()))
    digest = hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:8]
    return f"{weights} #{digest}"


def calibration_key(reranker: Any, settings: Any, n_candidates: int | None = None) -> CalibrationKey:
    """The key of a calibration for this reranker (model, template, strategy and its options)
    under these settings (encoder, retrieval) and list length (default ``settings.n_candidates``)."""
    return CalibrationKey(
        model_id=reranker.backend.model_id,
        template_hash=reranker.template.hash,
        encoder=settings.encoder,
        strategy=reranker.strategy.name,
        n_candidates=n_candidates or settings.n_candidates,
        retrieval=retrieval_signature(settings.retrieval),
        permutations=getattr(reranker.strategy, "permutations", None),
        history_items=reranker.max_history,
    )


RETRIEVAL_MODE = "retrieval"  # the strategy name of a calibration without the LLM (`ranker.mode = "retrieval"`)


def retrieval_calibration_key(settings: Any, n_candidates: int | None = None) -> CalibrationKey:
    """The key of a calibration of the retrieval features alone (no model, no template): what
    `ranker.mode = "retrieval"` orders by."""
    return CalibrationKey(model_id="none", template_hash="none", encoder=settings.encoder, strategy=RETRIEVAL_MODE,
                          n_candidates=n_candidates or settings.n_candidates,
                          retrieval=retrieval_signature(settings.retrieval))


def fit_retrieval_calibration(candidate_lists: Iterable[tuple[CandidateList, str | None]], key: CalibrationKey,
                              *, l2: float = 1e-4) -> Calibrator:
    """Fit on (candidates, held-out item) pairs with the LLM features at their neutral values:
    the logistic layer is then a learned fusion of the retrieval features alone."""
    xs, ys = [], []
    for candidates, relevant in candidate_lists:
        if candidates.candidates:
            xs.append(candidate_features(candidates, None))
            ys.append(np.array([float(c.item_id == relevant) for c in candidates.candidates]))
    if not xs:
        raise PromptrecError("no calibration rows: no user had retrieval candidates")
    return fit_features(np.vstack(xs), np.concatenate(ys), key, l2=l2, users=len(xs))


def calibration_users(users: Iterable[str], count: int | str | None, seed: int) -> list[str]:
    """The seeded sample of ``count`` users a calibration is fitted on (`seeded_sample` with
    `CALIBRATION_SALT`, ids in the project's order): `promptrec calibrate`, eval and benchmarks alike."""
    from promptrec.data.preprocess import ordered_ids, seeded_sample

    return seeded_sample(ordered_ids(users), count, seed, CALIBRATION_SALT)


class CalibrationRecord(BaseModel):
    """One user's list for fitting: candidates, their LLM scores (input order) and the held-out item."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    candidates: CandidateList
    scores: list[float] | None  # None: the LLM was degraded for this user
    relevant_item_id: str | None
    # letters over several candidate orders: the scores of the first order alone (input order)
    first_order_scores: list[float] | None = None


class FitStats(BaseModel):
    n: int
    positives: int
    users: int
    skipped_users: int = 0  # records without LLM scores
    logloss: float  # on the training rows
    base_logloss: float  # of the constant base rate, for comparison
    l2: float
    iterations: int
    converged: bool = True
    fitted_at: float = Field(default_factory=time.time)


# --------------------------------------------------------------------------- features


def _zscore(values: np.ndarray) -> np.ndarray:
    std = values.std()
    if not np.isfinite(std) or std < 1e-12:
        return np.zeros_like(values)
    return (values - values.mean()) / std


def _rank_fraction(values: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    n = len(values)
    if n <= 1:
        return np.zeros(n)
    keys = -values if higher_is_better else values
    order = np.argsort(keys, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n)
    return ranks / (n - 1)


def candidate_features(candidates: CandidateList, scores: Sequence[float] | None) -> np.ndarray:
    """The (n_candidates, len(FEATURE_NAMES)) raw feature matrix of one user's list."""
    items = candidates.candidates
    n = len(items)
    if scores is not None and len(scores) != n:
        raise ValueError(f"{len(scores)} scores for {n} candidates")
    x = np.zeros((n, len(FEATURE_NAMES)))
    if n == 0:
        return x
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64)
        x[:, 0] = _zscore(s)
        x[:, 1] = _rank_fraction(s)
    else:
        x[:, 1] = 0.5
    fused = np.array([c.fused_score for c in items], dtype=np.float64)
    x[:, 2] = _zscore(fused)
    rank = np.array([c.rank for c in items], dtype=np.float64)
    x[:, 3] = (rank - rank.min()) / max(rank.max() - rank.min(), 1.0) if n > 1 else 0.0
    x[:, 4] = np.log1p(np.maximum([c.popularity for c in items], 0))
    for col, source in enumerate(SOURCE_FEATURES, start=5):
        x[:, col] = [1.0 / c.source_ranks[source] if source in c.source_ranks else 0.0 for c in items]
    x[:, 5 + len(SOURCE_FEATURES)] = np.log1p(np.maximum([c.source_scores.get("transitions", 0.0) for c in items], 0))
    return x


# --------------------------------------------------------------------------- logistic regression


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1e-4, max_iter: int = 500, tol: float = 1e-8
) -> tuple[np.ndarray, float, int, bool]:
    """L2-penalised logistic regression (no penalty on the intercept), scikit-learn's lbfgs.

    Minimises mean logloss + l2/2 * |w|^2 (sklearn's C = 1 / (l2 * n)). Returns
    (w, b, iterations, converged).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if n == 0:
        raise ValueError("no rows to fit")
    model = LogisticRegression(
        C=1.0 / (l2 * n) if l2 > 0 else np.inf, solver="lbfgs", max_iter=max_iter, tol=tol,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model.coef_[0].copy(), float(model.intercept_[0]), int(model.n_iter_[0]), converged


# --------------------------------------------------------------------------- calibrator


class Calibrator(BaseModel):
    """A fitted calibration: standardisation, weights and the key it is valid for."""

    format: str = FORMAT
    key: CalibrationKey
    feature_names: list[str] = Field(default_factory=lambda: list(FEATURE_NAMES))
    means: list[float]
    scales: list[float]
    weights: list[float]  # on standardised features
    intercept: float
    fit: FitStats

    @model_validator(mode="after")
    def _check_numbers(self) -> "Calibrator":
        d = len(self.feature_names)
        for name in ("means", "scales", "weights"):
            values = getattr(self, name)
            if len(values) != d:
                raise ValueError(f"{name} has {len(values)} values for {d} features")
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{name} holds a non-finite value (NaN or inf)")
        if not math.isfinite(self.intercept):
            raise ValueError("intercept is not finite")
        if not all(v > 0 for v in self.scales):
            raise ValueError("a feature scale is <= 0 (standardisation would divide by zero)")
        return self

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return (x - np.asarray(self.means)) / np.asarray(self.scales)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(self._standardise(x) @ np.asarray(self.weights) + self.intercept)

    def predict_proba(self, candidates: CandidateList, scores: Sequence[float] | None) -> np.ndarray:
        """P(relevant) for each candidate of one list (scores in input order, None if degraded)."""
        return self.predict_features(candidate_features(candidates, scores))

    def raw_coefficients(self) -> tuple[np.ndarray, float]:
        """Weights and intercept on the unstandardised features."""
        w = np.asarray(self.weights) / np.asarray(self.scales)
        b = self.intercept - float(np.dot(w, self.means))
        return w, b

    def check_key(self, expected: CalibrationKey, source: str | Path | None = None) -> None:
        what = self.key.describe_differences(expected, "fitted")
        if what:
            where = f" ({source})" if source else ""
            raise CalibrationMismatchError(
                f"the calibration{where} does not match the current setup: {what}. "
                "Refit it with `promptrec calibrate`, or run without calibration."
            )

    def save(self, path: str | Path) -> Path:
        """Write as JSON atomically (temporary file in the same folder, then rename)."""
        from promptrec.paths import atomic_write_text, ensure_dir

        path = Path(path)
        ensure_dir(path.parent, "calibration folder")
        return atomic_write_text(path, json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path, expected_key: CalibrationKey | None = None) -> "Calibrator":
        """Read a saved calibration; with ``expected_key``, refuse one fitted for another setup."""
        path = Path(path)
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise PromptrecError(f"{path}: not a readable calibration file: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PromptrecError(f"{path}: not a calibration file of format {FORMAT!r}")
        try:
            calibrator = cls.model_validate(data)
        except ValueError as exc:
            raise PromptrecError(
                f"{path}: malformed calibration file: {exc}. Delete it and refit with `promptrec calibrate`"
            ) from exc
        if list(calibrator.feature_names) != list(FEATURE_NAMES):
            raise CalibrationMismatchError(
                f"{path}: fitted on features {calibrator.feature_names}, this version uses {list(FEATURE_NAMES)}. "
                "Refit it with `promptrec calibrate`."
            )
        if expected_key is not None:
            calibrator.check_key(expected_key, path)
        return calibrator


def build_training_rows(records: Iterable[CalibrationRecord]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Stack features and 0/1 labels of every record that has LLM scores: (x, y, users, skipped)."""
    xs, ys = [], []
    users = skipped = 0
    for record in records:
        if record.scores is None:
            skipped += 1
            continue
        if not record.candidates.candidates:
            continue
        users += 1
        xs.append(candidate_features(record.candidates, record.scores))
        ys.append(np.array([float(c.item_id == record.relevant_item_id) for c in record.candidates.candidates]))
    if not xs:
        return np.zeros((0, len(FEATURE_NAMES))), np.zeros(0), users, skipped
    return np.vstack(xs), np.concatenate(ys), users, skipped


def fit_features(x: np.ndarray, y: np.ndarray, key: CalibrationKey, *, l2: float = 1e-4,
                 users: int = 0, skipped_users: int = 0) -> Calibrator:
    """Fit a `Calibrator` on a raw feature matrix (columns FEATURE_NAMES) and 0/1 labels."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(y) == 0:
        raise PromptrecError("no calibration rows: every record lacked LLM scores or candidates")
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise PromptrecError(
            f"calibration needs both relevant and non-relevant candidates; got {positives} of {len(y)} relevant "
            "(is the held-out item among the retrieved candidates?)"
        )
    means = x.mean(axis=0)
    scales = x.std(axis=0)
    scales = np.where(scales < 1e-12, 1.0, scales)
    z = (x - means) / scales
    w, b, iterations, converged = fit_logistic(z, y, l2=l2)
    if not converged:
        import logging

        logging.getLogger("promptrec").warning(
            "calibration fit did not converge in %d iterations (%d rows)", iterations, len(y)
        )
    p = _sigmoid(z @ w + b)
    base = np.full_like(y, y.mean())
    names = list(FEATURE_NAMES) if x.shape[1] == len(FEATURE_NAMES) else [f"x{i}" for i in range(x.shape[1])]
    return Calibrator(
        key=key,
        feature_names=names,
        means=means.tolist(),
        scales=scales.tolist(),
        weights=w.tolist(),
        intercept=b,
        fit=FitStats(
            n=len(y), positives=positives, users=users, skipped_users=skipped_users,
            logloss=_logloss(y, p), base_logloss=_logloss(y, base), l2=l2, iterations=iterations,
            converged=converged,
        ),
    )


def fit_calibration(records: Iterable[CalibrationRecord | dict[str, Any]], key: CalibrationKey,
                    *, l2: float = 1e-4) -> Calibrator:
    """Fit from per-user records (candidates, LLM scores in input order, relevant item id).

    Records without LLM scores (degraded runs) are skipped and counted in ``fit.skipped_users``.
    """
    parsed = [r if isinstance(r, CalibrationRecord) else CalibrationRecord.model_validate(r) for r in records]
    x, y, users, skipped = build_training_rows(parsed)
    return fit_features(x, y, key, l2=l2, users=users, skipped_users=skipped)


def final_order(n: int, probabilities: Sequence[float] | None, scores: Sequence[float] | None) -> list[int]:
    """Candidate positions (input order = retrieval order), best first: the one ordering rule that
    `recommend()` serves and the eval harness measures. By calibrated probability when given, ties
    by the LLM score; else by the LLM score; ties and missing scores keep the retrieval order."""
    llm = [-float(s) for s in scores] if scores is not None else [0.0] * n
    if probabilities is not None:
        return sorted(range(n), key=lambda i: (-float(probabilities[i]), llm[i], i))
    return sorted(range(n), key=lambda i: (llm[i], i))
