"""`batch_recommend`: top-k for every user (or a list of them) into Parquet shards, on the local
or the Ray engine, resumable, with progress; what `promptrec batch recommend` runs."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel

from promptrec.batch import engines
from promptrec.batch.output import BatchIdentity, BatchOutput, ShardInfo
from promptrec.batch.worker import ShardSpec, ShardWorker, index_version
from promptrec.config import Settings
from promptrec.errors import InputError
from promptrec.fanout import check_reachable, ray_cluster, require_ray
from promptrec.progress import ProgressFn
from promptrec.recommender import Recommender

Engine = Literal["local", "ray"]


class BatchSummary(BaseModel):
    """What a batch job did (also written to the output folder's ``_summary.json``)."""

    output: str
    engine: Engine
    complete: bool
    users: int  # users asked for
    users_done: int  # ranked (their rows are in the shards)
    unknown_users: int  # asked for but not known to the index (listed in _unknown_users.txt)
    degraded_users: int  # the LLM failed for them: retrieval order, flagged in their rows
    rows: int
    shards: int
    shards_this_run: int  # computed now (the rest were there from an interrupted run)
    seconds: float  # this run's wall time
    users_per_second: float  # users of the shards computed now, per second of wall time
    index_version: str
    workers: dict[str, int]  # process (host:pid) -> its peak resident memory in bytes
    cluster: dict[str, object] | None = None  # the Ray engine: actors, CPUs per actor, cluster size


def settings_digest(settings: Settings) -> str:
    """A digest of everything that shapes the rows (machine paths and the service's settings left out)."""
    public = settings.model_dump(mode="json", exclude={"cache_dir", "index_dir", "serve", "ray"})
    return hashlib.blake2b(json.dumps(public, sort_keys=True).encode(), digest_size=8).hexdigest()


def _users_digest(users: Sequence[str]) -> str:
    return hashlib.blake2b("\n".join(users).encode(), digest_size=8).hexdigest()


def job_users(rec: Recommender, users: Sequence[str] | None) -> list[str]:
    """The users to rank: those given (in their order, repeats dropped), else every user the
    index knows (the built log's and the live store's), sorted."""
    if users is not None:
        listed = [str(u).strip() for u in users]
        if not all(listed):
            raise InputError("the user list holds an empty user id")
        return list(dict.fromkeys(listed))
    known = set(rec.histories)
    store = rec.live_store()
    if store is not None:
        known = (known | store.users()) - store.erased_users()
    return sorted(known, key=lambda u: (not u.isdigit(), int(u) if u.isdigit() else 0, u))


def read_user_list(path: str | Path) -> list[str]:
    """User ids from a file, one per line (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the user list {path}: {exc.strerror or exc}") from exc
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def batch_recommend(
    output: str | Path,
    *,
    settings: Settings | None = None,
    recommender: Recommender | None = None,
    users: Sequence[str] | None = None,
    k: int = 10,
    template: str | None = None,
    engine: Engine = "local",
    address: str | None = None,
    actors: int = 2,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float = 0.0,
    threads: int | None = None,
    shard_users: int = 256,
    batch_users: int = 8,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> BatchSummary:
    """Top-k recommendations for ``users`` (default: every known user) written to Parquet shards
    in ``output``, computed by `Recommender.recommend_many`, the path `recommend()` serves.

    A rerun with the same job resumes (only missing shards are computed); another job's folder is
    refused unless ``overwrite``. ``engine="ray"`` fans the shards out to a pool of ``actors`` on
    the Ray cluster at ``address`` (None: a local one is started). ``threads``: compute threads
    (torch and BLAS) of each worker (this process, or each actor); other counts sum floats in
    another order, so scores may differ in their last digits (and near-ties swap). Unknown
    users are counted in the summary and listed in ``_unknown_users.txt``.
    """
    if engine not in ("local", "ray"):
        raise InputError(f"engine must be 'local' or 'ray', got {engine!r}")
    for name, value in (("k", k), ("shard_users", shard_users), ("batch_users", batch_users), ("actors", actors)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if gpus_per_actor < 0 or (cpus_per_actor is not None and cpus_per_actor <= 0):
        raise InputError("cpus_per_actor must be positive and gpus_per_actor not negative")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads <= 0):
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    if engine == "ray":
        require_ray()
        if address is not None:  # fail fast, before the index is opened
            check_reachable(address)
    owned = recommender is None
    rec = recommender or Recommender.from_settings(settings, build=False)
    settings = rec.settings
    try:
        todo_users = job_users(rec, users)
        version = index_version(rec)
        spec = ShardSpec(k=k, template=template, index_version=version, batch_users=batch_users)
        identity = BatchIdentity(index_version=version, settings_digest=settings_digest(rec.served_settings),
                                 k=k, users_digest=_users_digest(todo_users), users=len(todo_users),
                                 shard_users=shard_users, template=template)
        out = BatchOutput(output, identity)
        out.open(overwrite=overwrite)
        shards = [(i, todo_users[start:start + shard_users])
                  for i, start in enumerate(range(0, len(todo_users), shard_users))]
        written = out.done()
        todo = [(i, chunk) for i, chunk in shards if i not in written]
        started = time.perf_counter()
        computed: list[ShardInfo] = []
        if progress and todo_users:
            progress("users", sum(written[i].users for i in written), len(todo_users))

        def done(info: ShardInfo, table: pa.Table) -> None:
            out.write_shard(info, table)
            computed.append(info)
            if progress:
                rate = sum(c.users for c in computed) / max(time.perf_counter() - started, 1e-9)
                progress(f"users | {rate:.2f} users/s", info.users, len(todo_users))

        cluster = None
        if engine == "local":
            engines.run_local(ShardWorker(spec, rec), todo, done, threads)
        else:
            with ray_cluster(address):
                cluster = engines.run_ray(settings, spec, todo, done, actors=actors, cpus_per_actor=cpus_per_actor,
                                          gpus_per_actor=gpus_per_actor, threads=threads)
        seconds = time.perf_counter() - started
        infos = out.done()
        unknown = [u for i in sorted(infos) for u in infos[i].unknown]
        summary = BatchSummary(
            output=str(out.folder), engine=engine, complete=len(infos) == len(shards), users=len(todo_users),
            users_done=sum(infos[i].users - len(infos[i].unknown) for i in infos), unknown_users=len(unknown),
            degraded_users=sum(infos[i].degraded_users for i in infos), rows=out.row_count(), shards=len(shards),
            shards_this_run=len(computed), seconds=seconds,
            users_per_second=sum(c.users for c in computed) / seconds if computed and seconds > 0 else 0.0,
            index_version=version, workers=_peaks(computed), cluster=cluster,
        )
        out.finish(summary.model_dump(mode="json"), unknown)
        return summary
    finally:
        if owned:
            rec.close()


def _peaks(infos: Sequence[ShardInfo]) -> dict[str, int]:
    peaks: dict[str, int] = {}
    for info in infos:
        peaks[info.worker] = max(peaks.get(info.worker, 0), info.peak_rss_bytes)
    return peaks
