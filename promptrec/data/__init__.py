"""The data layer: typed records, loaders (MovieLens, CSV/JSONL) and preprocessing."""

from promptrec.data.bookcrossing import load_bookcrossing
from promptrec.data.loaders import load_catalog, load_interactions
from promptrec.data.movielens import ML100K_GENRES, load_atomic, load_ml1m, load_ml100k, load_movielens
from promptrec.data.preprocess import (
    DedupResult,
    apply_threshold,
    drop_duplicates,
    history_order,
    id_rank,
    k_core,
    sort_histories,
    temporal_split,
    tie_hash,
)
from promptrec.data.records import split_title_year
from promptrec.data.schema import (
    INTERACTION_COLUMNS,
    Dataset,
    Interaction,
    Item,
    LoadReport,
    SkippedRow,
    TemporalSplit,
    interactions_frame,
)

__all__ = [
    "INTERACTION_COLUMNS",
    "ML100K_GENRES",
    "Dataset",
    "DedupResult",
    "Interaction",
    "Item",
    "LoadReport",
    "SkippedRow",
    "TemporalSplit",
    "apply_threshold",
    "drop_duplicates",
    "history_order",
    "id_rank",
    "interactions_frame",
    "k_core",
    "load_atomic",
    "load_bookcrossing",
    "load_catalog",
    "load_interactions",
    "load_ml100k",
    "load_ml1m",
    "load_movielens",
    "sort_histories",
    "split_title_year",
    "temporal_split",
    "tie_hash",
]
