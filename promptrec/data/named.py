"""Named data sets (see `promptrec.assets`) loaded into a Dataset."""

from __future__ import annotations

import logging

from promptrec.config import Settings
from promptrec.data.schema import Dataset

log = logging.getLogger(__name__)


def load_named_dataset(name: str, settings: Settings | None = None) -> Dataset:
    """Fetch a registered data set (once) and load it, applying the configured preprocessing."""
    from promptrec.assets import fetch_dataset
    from promptrec.data.loaders import load_movielens
    from promptrec.data.preprocess import apply_threshold, drop_duplicates

    settings = settings or Settings()
    dataset = load_movielens(fetch_dataset(name, settings))
    deduped = drop_duplicates(dataset.interactions)
    frame = deduped.frame
    if deduped.removed:
        log.info("%s: %d repeated (user, item) rows removed, the latest kept", name, deduped.removed)
    if settings.min_rating is not None:
        before = len(frame)
        frame = apply_threshold(frame, settings.min_rating)
        log.info("%s: %d rows below rating %s removed", name, before - len(frame), settings.min_rating)
    return dataset.model_copy(update={"name": name, "interactions": frame})
