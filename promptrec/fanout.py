"""Work fanned out to a Ray cluster: joining (or starting) the cluster, and mapping work items
over a Ray Data actor pool whose actors each set up once (open an index, load a model) and
then take item after item. The batch jobs (`promptrec.batch`) and the evaluation runner
(`promptrec.eval`) both use it; what an actor computes lives with them."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

from promptrec.errors import PromptrecError
from promptrec.extras import require

log = logging.getLogger(__name__)


class ClusterError(PromptrecError):
    """The Ray cluster cannot be reached or cannot run the job."""


def require_ray() -> None:
    """Raise MissingExtraError naming `promptrec[ray]` when Ray (with Ray Data) is not installed."""
    require("ray", "ray", "the Ray engine")
    require("ray.data", "ray", "the Ray engine")


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


@contextlib.contextmanager
def ray_cluster(address: str | None, timeout_s: float = 10.0) -> Iterator[Any]:
    """The `ray` module, connected: to the cluster at ``address``, or a local cluster (no
    dashboard) started for the block when None. A session already open is used as it is."""
    require_ray()
    import ray

    if ray.is_initialized():
        yield ray
        return
    if address is None:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    else:
        check_reachable(address, timeout_s)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            raise ClusterError(f"cannot join the Ray cluster at {address}: {exc}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def actor_cpus(actors: int, cluster_cpus: float) -> float:
    """CPUs each actor asks for: one, unless the actors and Ray Data's own read task would not
    all fit (a 2-CPU cluster with 2 one-CPU actors deadlocks: the read task never gets a CPU)."""
    return max(0.1, min(1.0, (cluster_cpus - 1.0) / actors)) if cluster_cpus > 1.0 else 0.5 / actors


def map_actor_pool(
    items: Sequence[dict[str, Any]],
    actor: type,
    constructor_kwargs: dict[str, Any],
    *,
    actors: int,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float = 0.0,
) -> tuple[Iterator[dict[str, Any]], dict[str, Any]]:
    """Map ``items`` (one at a time) over a pool of ``actors`` instances of ``actor`` on the
    connected cluster; yields each item's output row as it is done, in no particular order.
    ``actor(**constructor_kwargs)`` is built once per actor; its ``__call__`` takes a batch of
    one item (columns of numpy arrays) and returns a dict of output columns. Ray Data restarts an
    actor that dies and retries the item it held. Also returns what the pool was (for reports)."""
    import ray

    cluster = float(ray.cluster_resources().get("CPU", 1.0))
    cpus = cpus_per_actor or actor_cpus(actors, cluster)
    pool = {"actors": actors, "cpus_per_actor": cpus, "gpus_per_actor": gpus_per_actor, "cluster_cpus": cluster,
            "nodes": len(ray.nodes()), "ray": ray.__version__}
    if not items:
        return iter(()), pool
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    mapped = ray.data.from_items(list(items), override_num_blocks=len(items)).map_batches(
        actor, fn_constructor_kwargs=constructor_kwargs, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus,
        **({"num_gpus": gpus_per_actor} if gpus_per_actor else {}),
    )
    return mapped.iter_rows(), pool
