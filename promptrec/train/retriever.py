"""Training the sequential retriever (`promptrec train retriever`): the configured data set's
index is brought up to date with the sequential model trained again, its item vectors stored.

The training loop itself is `SequentialModel.fit` (`promptrec.retrieval.sasrec`), in the
retrieval layer: building an index trains the model when it has none, and an index build may
not call up into this wing. Its early stopping scores validation NDCG@10 with
`promptrec.metrics.ndcg_of_ranks`, the definition `promptrec.train.validation` uses."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from promptrec.config import Settings
from promptrec.progress import ProgressFn
from promptrec.recommender import Recommender
from promptrec.retrieval.sasrec import TrainStats
from promptrec.retrieval.store import SyncReport


class RetrieverTraining(BaseModel):
    """What one training run did: its statistics, or why there is no sequential model."""

    namespace: str
    index_dir: Path
    stats: TrainStats | None = None
    skipped: str | None = None  # why no sequential model was trained
    vectors: SyncReport | None = None  # how its item vectors were stored


def train_retriever(settings: Settings, progress: ProgressFn | None = None) -> RetrieverTraining:
    """Train the sequential model again on the settings' data (early stopping on each user's
    held-out last item) and store its item vectors in the index."""
    rec = Recommender.from_settings(settings, build=True, progress=progress, retrain=True)
    manifest, model = rec.index.manifest, rec.index.sequential_model
    return RetrieverTraining(
        namespace=manifest.namespace, index_dir=rec.settings.resolved_index_dir(),
        stats=model.stats if model is not None else None, skipped=manifest.sequential_skipped,
        vectors=manifest.sequential_sync,
    )
