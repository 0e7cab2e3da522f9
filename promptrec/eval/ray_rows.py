"""A suite's LLM rows computed on a Ray cluster (`promptrec eval run --engine ray`): each actor of
the pool (`promptrec.fanout`) prepares the suite's data, builds the ranker and loads its model
once. A first pool computes the calibration's validation records; the runner fits the
calibration on them, and a second pool, each actor fitting the same calibration on the same
records, ranks group after group of test users with `rank_many`, as the local runner does. The
runner writes both kinds of rows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from promptrec.config import Settings
from promptrec.eval.rankers import RankOutput, prepare_data
from promptrec.eval.suite import Suite
from promptrec.fanout import map_actor_pool
from promptrec.hardware import set_compute_threads


class _RayRankActor:
    """A Ray Data actor computing one ranker's rows of a suite: its test rows (``task="rank"``)
    or its calibration's validation records (``task="validation"``)."""

    def __init__(self, suite: Suite, settings: Settings, ranker: str, validation: list[dict[str, Any]] | None,
                 length: int, threads: int | None, task: str = "rank"):
        if threads:
            set_compute_threads(threads)
        from promptrec.eval.runner import _BackendPool, build_rankers

        self.data = prepare_data(suite, settings)
        self.ranker = next(r for r in build_rankers(suite, _BackendPool(settings), settings.prompts_dir)
                           if r.name == ranker)
        self.ranker.prepare(self.data)
        if validation is not None:  # the runner's calibration, fitted again on the same records
            self.ranker.fit(validation, l2=suite.calibration.l2)
        self.length = length
        self.task = task

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"users": [], "outs": [], "latency": []}
        for users in batch["users"]:
            users = [str(u) for u in users]
            started = time.perf_counter()
            if self.task == "validation":
                data = self.data
                outs = self.ranker.validation_records(
                    [(u, data.validation_histories[u], data.validation_targets[u]) for u in users])
            else:
                ranked = self.ranker.rank_many([(u, self.data.test_histories.get(u, [])) for u in users], self.length)
                outs = [r.model_dump(mode="json") for r in ranked]
            out["users"].append(json.dumps(users))
            out["outs"].append(json.dumps(outs))
            out["latency"].append((time.perf_counter() - started) / len(users))
        return out


def validation_on_ray(
    suite: Suite,
    settings: Settings,
    ranker: str,
    groups: Sequence[list[str]],
    *,
    actors: int,
    cpus_per_actor: float | None = None,
    threads: int | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(user, calibration record) for every user of ``groups``, in the order the actors finish
    them; the cluster must be connected (`promptrec.fanout.ray_cluster`)."""
    rows, _ = map_actor_pool(
        [{"users": list(group)} for group in groups], _RayRankActor,
        {"suite": suite, "settings": settings, "ranker": ranker, "validation": None, "length": 0,
         "threads": threads, "task": "validation"},
        actors=actors, cpus_per_actor=cpus_per_actor)
    for row in rows:
        yield from zip(json.loads(row["users"]), json.loads(row["outs"]), strict=True)


def rank_on_ray(
    suite: Suite,
    settings: Settings,
    ranker: str,
    groups: Sequence[list[str]],
    validation: list[dict[str, Any]] | None,
    length: int,
    *,
    actors: int,
    cpus_per_actor: float | None = None,
    threads: int | None = None,
) -> Iterator[tuple[str, RankOutput, float]]:
    """(user, ranked output, latency per user) for every user of ``groups``, in the order the
    actors finish them; the cluster must be connected (`promptrec.fanout.ray_cluster`)."""
    rows, _ = map_actor_pool(
        [{"users": list(group)} for group in groups], _RayRankActor,
        {"suite": suite, "settings": settings, "ranker": ranker, "validation": validation, "length": length,
         "threads": threads},
        actors=actors, cpus_per_actor=cpus_per_actor)
    for row in rows:
        for user, ranked in zip(json.loads(row["users"]), json.loads(row["outs"]), strict=True):
            yield user, RankOutput.model_validate(ranked), float(row["latency"])
