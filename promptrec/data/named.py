"""Named data sets (see `promptrec.assets`) loaded into a Dataset."""

from __future__ import annotations

import logging

from promptrec.config import Settings
from promptrec.data.schema import Dataset

log = logging.getLogger(__name__)


def load_named_dataset(name: str, settings: Settings | None = None) -> Dataset:
    """Fetch a registered data set (once) and load it, applying the configured preprocessing.

    ``name`` may also be a folder of MovieLens-layout files (RecBole atomic ``<stem>.inter`` +
    ``<stem>.item``, or GroupLens ``u.data`` / ``ratings.dat``), e.g. a slice of a data set:
    ``PROMPTREC_DATASET=/data/my-slice``."""
    from pathlib import Path

    from promptrec.assets import ASSETS, fetch_dataset
    from promptrec.data.loaders import load_movielens
    from promptrec.data.preprocess import prepare_interactions

    settings = settings or Settings()
    folder = Path(name).expanduser()
    if name.lower() not in ASSETS and folder.is_dir():
        dataset = load_movielens(folder)
    else:
        dataset = load_movielens(fetch_dataset(name, settings))
    frame = prepare_interactions(dataset.interactions, settings.min_rating, name)
    return dataset.model_copy(update={"name": name, "interactions": frame})
