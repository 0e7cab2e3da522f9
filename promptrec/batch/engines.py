"""Where a batch job's shards are computed: in this process (``local``), or on a Ray cluster
(``ray``: Ray Data over an actor pool, `promptrec.fanout`, each actor opening the index and
loading the generator once). Both call `ShardWorker.compute`, so they write the same rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from promptrec.batch.output import ShardInfo
from promptrec.batch.worker import ShardSpec, ShardWorker
from promptrec.config import Settings
from promptrec.fanout import map_actor_pool
from promptrec.hardware import compute_threads, set_compute_threads

Shard = tuple[int, list[str]]
ShardDone = Callable[[ShardInfo, pa.Table], None]


def run_local(worker: ShardWorker, shards: Sequence[Shard], done: ShardDone, threads: int | None = None) -> None:
    """Compute the shards in turn in this process (with ``threads`` compute threads for the job)."""
    with compute_threads(threads):
        for shard, users in shards:
            done(*worker.compute(shard, users))


class _RayShardActor:
    """A Ray Data actor: one `ShardWorker`, opened when the actor starts, for every shard it is given."""

    def __init__(self, settings: dict[str, Any], spec: dict[str, Any], threads: int | None):
        if threads:
            set_compute_threads(threads)
        self.worker = ShardWorker.from_settings(ShardSpec(**spec), Settings(**settings))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"info": [], "rows": []}
        for shard, users in zip(batch["shard"], batch["users"]):
            info, table = self.worker.compute(int(shard), [str(u) for u in users])
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            out["info"].append(info.model_dump_json())
            out["rows"].append(sink.getvalue().to_pybytes())
        return out


def run_ray(
    settings: Settings,
    spec: ShardSpec,
    shards: Sequence[Shard],
    done: ShardDone,
    *,
    actors: int,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float = 0.0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Compute the shards on the connected Ray cluster over a pool of ``actors``; Ray Data
    restarts a killed actor and retries its shard. ``threads``: torch and BLAS threads per actor
    (default: Ray's, one per CPU reserved, at least one). ``gpus_per_actor``: GPUs each actor reserves (with
    `ranker.backend = "vllm-engine"` each actor is then a vLLM replica on its GPU). Returns the
    pool (for the summary)."""
    rows, pool = map_actor_pool(
        [{"shard": shard, "users": list(users)} for shard, users in shards], _RayShardActor,
        {"settings": settings.model_dump(mode="json"), "spec": spec.model_dump(), "threads": threads},
        actors=actors, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor)
    for row in rows:
        done(ShardInfo.model_validate_json(row["info"]), pa.ipc.open_stream(row["rows"]).read_all())
    return pool
