"""Batch recommendations for many users: Parquet shards, resumable, on the local or Ray engine."""

from promptrec.batch.job import BatchSummary, batch_recommend, read_user_list
from promptrec.batch.output import BatchOutputError
from promptrec.batch.rows import ROW_SCHEMA

__all__ = ["ROW_SCHEMA", "BatchOutputError", "BatchSummary", "batch_recommend", "read_user_list"]
