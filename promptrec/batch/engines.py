"""Where a batch job's shards are computed: in this process (``local``), or on a Ray cluster
(``ray``: Ray Data over an actor pool, each actor opening the index and loading the generator
once). Both call `ShardWorker.compute`, so they write the same rows."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

from promptrec.batch.output import ShardInfo
from promptrec.batch.worker import ShardSpec, ShardWorker
from promptrec.config import Settings
from promptrec.errors import PromptrecError
from promptrec.extras import require

log = logging.getLogger(__name__)

Shard = tuple[int, list[str]]
ShardDone = Callable[[ShardInfo, pa.Table], None]


class ClusterError(PromptrecError):
    """The Ray cluster cannot be reached or cannot run the job."""


def run_local(worker: ShardWorker, shards: Sequence[Shard], done: ShardDone, threads: int | None = None) -> None:
    """Compute the shards in turn in this process (with ``threads`` torch threads for the job)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for shard, users in shards:
            done(*worker.compute(shard, users))
    finally:
        torch.set_num_threads(before)


class _RayShardActor:
    """A Ray Data actor: one `ShardWorker`, opened when the actor starts, for every shard it is given."""

    def __init__(self, settings: dict[str, Any], spec: dict[str, Any], threads: int | None):
        if threads:
            import torch

            torch.set_num_threads(threads)
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


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail within ``timeout_s`` naming the address when nothing answers there (``ray.init``
    itself may wait minutes for an unreachable head node)."""
    if address == "auto":
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        raise ClusterError(f"Ray cluster address {address!r} is not host:port (or ray://host:port, or auto)")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address} within {timeout_s:g} s ({exc}); "
                           "check --address (the head node's GCS port, 6379 by default, or ray://host:10001)") from exc


def require_ray() -> None:
    """Raise MissingExtraError naming `promptrec[ray]` when Ray is not installed."""
    require("ray", "ray", "the Ray batch engine")
    require("ray.data", "ray", "the Ray batch engine")


def connect(address: str | None, timeout_s: float = 10.0) -> bool:
    """Join the cluster at ``address``, or start a local one (no dashboard) when None; returns
    whether this call connected (and so should disconnect). A session already open is used."""
    ray = require("ray", "ray", "the Ray batch engine")
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        return True
    check_reachable(address, timeout_s)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address}: {exc}") from exc
    return True


def actor_cpus(actors: int, cluster_cpus: float) -> float:
    """CPUs each actor asks for: one, unless the actors and Ray Data's own read task would not
    all fit (a 2-CPU cluster with 2 one-CPU actors deadlocks: the read task never gets a CPU)."""
    return max(0.1, min(1.0, (cluster_cpus - 1.0) / actors)) if cluster_cpus > 1.0 else 0.5 / actors


def run_ray(
    settings: Settings,
    spec: ShardSpec,
    shards: Sequence[Shard],
    done: ShardDone,
    *,
    actors: int,
    cpus_per_actor: float | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Compute the shards on the connected Ray cluster over a pool of ``actors``; Ray Data
    restarts a killed actor and retries its shard. ``threads``: torch threads per actor (default:
    Ray's, one per CPU reserved, at least one). Returns what ran (for the summary)."""
    import ray

    if not shards:
        return {"actors": actors}
    cpus = cpus_per_actor or actor_cpus(actors, float(ray.cluster_resources().get("CPU", 1.0)))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    items = [{"shard": shard, "users": list(users)} for shard, users in shards]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    results = dataset.map_batches(
        _RayShardActor,
        fn_constructor_kwargs={"settings": settings.model_dump(mode="json"), "spec": spec.model_dump(),
                               "threads": threads},
        batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus,
    )
    for row in results.iter_rows():
        table = pa.ipc.open_stream(row["rows"]).read_all()
        done(ShardInfo.model_validate_json(row["info"]), table)
    return {"actors": actors, "cpus_per_actor": cpus, "cluster_cpus": ray.cluster_resources().get("CPU"),
            "nodes": len(ray.nodes()), "ray": ray.__version__}


def disconnect() -> None:
    import ray

    ray.shutdown()
