"""A batch job's output folder: its identity (``batch.json``), one Parquet shard per block of
users (written whole, by rename), the unknown users and a summary.

    _batch.json           the job: index version, settings digest, k, users digest, shard size
    part-00000.parquet    the rows of shard 0 (`promptrec.batch.rows.ROW_SCHEMA`); its schema
                          metadata says which users it covers and which of them were unknown
    _unknown_users.txt    the listed users the index does not know, one per line
    _summary.json         users done, unknown, degraded, rows, seconds, users per second

`pandas.read_parquet(folder)` (or any Parquet reader of the folder) reads every row: the
underscored files are skipped by them.

A shard file exists whole or not at all, so a job killed at any point resumes by computing the
shards that are missing. A folder holding another job's shards is refused (nothing is deleted)
unless ``overwrite``, which removes exactly the files listed above and starts over.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from promptrec.errors import PromptrecError
from promptrec.paths import atomic_write_text

# "_" and "." names are skipped by Parquet readers: `pandas.read_parquet(folder)` reads the rows
JOB_FILE = "_batch.json"
SUMMARY_FILE = "_summary.json"
UNKNOWN_FILE = "_unknown_users.txt"
META_KEY = b"promptrec.batch"
_SHARD = re.compile(r"^part-(\d{5,})\.parquet$")
FORMAT = 1


class BatchOutputError(PromptrecError):
    """The output folder cannot take this job (another job's shards, files not ours)."""


class BatchIdentity(BaseModel):
    """What makes two runs the same job: equal identities write equal shards."""

    format: int = FORMAT
    index_version: str
    settings_digest: str
    k: int
    users_digest: str
    users: int
    shard_users: int
    template: str | None = None

    def differences(self, other: BatchIdentity) -> list[str]:
        mine, theirs = self.model_dump(), other.model_dump()
        return [f"{key}: {theirs[key]!r} there, {mine[key]!r} now" for key in mine if mine[key] != theirs[key]]


class ShardInfo(BaseModel):
    """A written shard's metadata (kept in the Parquet file's schema metadata)."""

    shard: int
    users: int  # users the shard covers (known and unknown)
    unknown: list[str]
    degraded_users: int
    seconds: float  # the worker's time computing the shard
    worker: str  # the process that computed it (host:pid)
    threads: int  # its torch threads
    peak_rss_bytes: int  # that process's peak resident memory so far


def _tmp(name: str) -> bool:
    return name.startswith(".part-") and name.endswith(".tmp")


def shard_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


class BatchOutput:
    """The output folder of one job (see the module docstring)."""

    def __init__(self, folder: str | Path, identity: BatchIdentity):
        self.folder = Path(folder)
        self.identity = identity

    def open(self, overwrite: bool = False) -> None:
        """Make the folder ready: new, or this job's (resumed), or another job's with ``overwrite``."""
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise BatchOutputError(f"batch output {folder} is a file; give a folder")
        folder.mkdir(parents=True, exist_ok=True)
        ours = {JOB_FILE, SUMMARY_FILE, UNKNOWN_FILE}
        present = [p for p in folder.iterdir()]
        foreign = sorted(p.name for p in present if p.name not in ours and not _SHARD.match(p.name)
                         and not _tmp(p.name))
        if foreign:
            raise BatchOutputError(
                f"batch output {folder} holds files a batch job did not write ({', '.join(foreign[:5])}); "
                "nothing was changed: give a new or empty folder")
        job_file = folder / JOB_FILE
        old = None
        if job_file.is_file():
            try:
                old = BatchIdentity.model_validate_json(job_file.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise BatchOutputError(f"{job_file} is damaged ({exc.__class__.__name__}); "
                                       "start over with --overwrite") from exc
        elif any(_SHARD.match(p.name) for p in present):
            raise BatchOutputError(f"batch output {folder} holds shards but no {JOB_FILE}: "
                                   "they are not this job's; start over with --overwrite")
        if old is not None and old != self.identity:
            if not overwrite:
                raise BatchOutputError(
                    f"batch output {folder} holds another job's shards ({'; '.join(self.identity.differences(old))}); "
                    "nothing was changed: give another folder, or --overwrite to replace them")
        if overwrite:  # start over, whoever's shards these were
            for path in present:
                if path.name in ours or _SHARD.match(path.name):
                    path.unlink()
        for path in folder.iterdir():  # a shard cut off by a kill
            if _tmp(path.name):
                path.unlink()
        atomic_write_text(job_file, self.identity.model_dump_json(indent=1) + "\n")

    def done(self) -> dict[int, ShardInfo]:
        """The shards written, by number (a file this job did not write raises)."""
        out = {}
        for path in sorted(self.folder.glob("part-*.parquet")):
            match = _SHARD.match(path.name)
            if match:
                out[int(match.group(1))] = self.shard_info(path)
        return out

    def shard_info(self, path: Path) -> ShardInfo:
        try:
            meta = pq.read_schema(path).metadata or {}
        except (OSError, pa.ArrowException) as exc:
            raise BatchOutputError(f"{path} is not a readable shard ({exc}); start over with --overwrite") from exc
        if META_KEY not in meta:
            raise BatchOutputError(f"{path} is not a promptrec batch shard; start over with --overwrite")
        return ShardInfo.model_validate_json(meta[META_KEY])

    def write_shard(self, info: ShardInfo, table: pa.Table) -> Path:
        """Write one shard whole: to a temporary name, then renamed into place."""
        path = self.folder / shard_name(info.shard)
        table = table.replace_schema_metadata({META_KEY: info.model_dump_json().encode()})
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    def row_count(self) -> int:
        """Rows in the written shards (from their footers: nothing is read)."""
        return sum(pq.read_metadata(p).num_rows for p in self.folder.glob("part-*.parquet"))

    def read(self) -> pa.Table:
        """Every written shard's rows, in shard order."""
        paths = sorted(self.folder.glob("part-*.parquet"))
        if not paths:
            from promptrec.batch.rows import ROW_SCHEMA

            return ROW_SCHEMA.empty_table()
        return pa.concat_tables([pq.read_table(p).replace_schema_metadata(None) for p in paths])

    def finish(self, summary: dict[str, Any], unknown: list[str]) -> None:
        atomic_write_text(self.folder / UNKNOWN_FILE, "".join(f"{u}\n" for u in unknown))
        atomic_write_text(self.folder / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
