"""The one place a batch shard is computed, by either engine: `recommend_many` over the shard's
users, in groups, turned into rows. The local engine calls it in-process; the Ray engine in
each actor of its pool (`promptrec.batch.engines`)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence

import pyarrow as pa
from pydantic import BaseModel, Field

from promptrec.batch.output import ShardInfo
from promptrec.batch.rows import recommendation_rows
from promptrec.config import Settings
from promptrec.errors import IndexMismatchError, UnknownUserError
from promptrec.hardware import peak_rss_bytes
from promptrec.recommender import Recommender


class ShardSpec(BaseModel):
    """What every shard of a job is computed with."""

    k: int = Field(gt=0)
    template: str | None = None
    index_version: str
    batch_users: int = Field(8, gt=0)  # users per grouped LLM call (speed only: the rows are equal)


def index_version(rec: Recommender) -> str:
    """The name of the index version a recommender serves ("" for an unversioned index)."""
    version = getattr(rec.index, "version", None)
    return version.name if version is not None else ""


class ShardWorker:
    """Computes shards with one open recommender (its generator loaded once, on first use)."""

    def __init__(self, spec: ShardSpec, recommender: Recommender):
        self.spec = spec
        self.rec = recommender
        served = index_version(recommender)
        if served != spec.index_version:
            raise IndexMismatchError(
                f"the index version served changed during the batch job ({spec.index_version!r} when it "
                f"started, {served!r} now): run the job again (a new output folder, or --overwrite)")

    @classmethod
    def from_settings(cls, spec: ShardSpec, settings: Settings) -> ShardWorker:
        """A worker over the index version served from the settings (as `promptrec serve` opens it)."""
        return cls(spec, Recommender.from_settings(settings, build=False))

    def compute(self, shard: int, users: Sequence[str]) -> tuple[ShardInfo, pa.Table]:
        """The rows of one shard; users the index does not know are listed, not ranked."""
        started = time.perf_counter()
        known, unknown = [], []
        for user in users:
            try:
                self.rec.history(user)
                known.append(user)
            except UnknownUserError:
                unknown.append(user)
        lists = []
        step = self.spec.batch_users
        for start in range(0, len(known), step):
            lists += self.rec.recommend_many(known[start:start + step], self.spec.k, template=self.spec.template)
        table = recommendation_rows(lists, self.spec.index_version)
        import torch

        info = ShardInfo(shard=shard, users=len(users), unknown=unknown,
                         degraded_users=sum(listed.degraded for listed in lists),
                         seconds=time.perf_counter() - started, worker=f"{socket.gethostname()}:{os.getpid()}",
                         threads=torch.get_num_threads(),
                         peak_rss_bytes=peak_rss_bytes())
        return info, table

    def close(self) -> None:
        self.rec.close()
