"""The rows a batch job writes: one per (user, rank), as an Arrow table with a fixed schema."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from promptrec.schema import RecommendationList

ROW_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("rank", pa.int32()),
    ("item_id", pa.string()),
    ("title", pa.string()),
    ("probability", pa.float64()),  # null without a matching calibration
    ("llm_score", pa.float64()),  # null when the LLM was not used
    ("retrieval_score", pa.float64()),
    ("retrieval_rank", pa.int32()),
    ("mode", pa.string()),  # "llm" or "retrieval" (ranker.mode)
    ("degraded", pa.bool_()),  # the LLM failed or timed out: the order is retrieval's
    ("degraded_reason", pa.string()),
    ("cold_start", pa.bool_()),
    ("strategy", pa.string()),
    ("model_id", pa.string()),
    ("template", pa.string()),
    ("template_hash", pa.string()),
    ("calibrated", pa.bool_()),
    ("index_version", pa.string()),
])


def recommendation_rows(lists: Sequence[RecommendationList], index_version: str) -> pa.Table:
    """The lists as rows (`ROW_SCHEMA`), in the order given; a list's latency is not a row field,
    so two runs of the same job write equal rows."""
    columns: dict[str, list] = {name: [] for name in ROW_SCHEMA.names}
    for listed in lists:
        for rec in listed.recommendations:
            for name, value in (
                ("user_id", listed.user_id), ("rank", rec.rank), ("item_id", rec.item_id), ("title", rec.title),
                ("probability", rec.probability), ("llm_score", rec.llm_score),
                ("retrieval_score", rec.retrieval_score), ("retrieval_rank", rec.retrieval_rank),
                ("mode", listed.mode), ("degraded", listed.degraded), ("degraded_reason", listed.degraded_reason),
                ("cold_start", listed.cold_start), ("strategy", listed.strategy), ("model_id", listed.model_id),
                ("template", listed.template), ("template_hash", listed.template_hash),
                ("calibrated", listed.calibrated), ("index_version", index_version),
            ):
                columns[name].append(value)
    return pa.table(columns, schema=ROW_SCHEMA)
