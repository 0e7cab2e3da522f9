"""Batch recommendations: the local engine against the Ray engine (1 and 2 actors), side by side
in one run on the same machine, LLM on, MovieLens-100K (the cached index and the default
generator).

Each engine ranks the same ``--users`` users (a seeded sample) into its own output folder. The
Ray engine runs on a local cluster started once (its start-up is printed, not counted: a
cluster outlives a job); each Ray run's time includes its actors opening the index and loading
the generator, as the local run's includes loading it. Every worker gets the machine's cores
shared out (local: all; Ray: cores / actors threads per actor). Printed: users per second, the
ratio to local, the peak resident memory of each worker process, whether the Ray engines list
the same items at the same ranks as the local one and by how much their scores differ (other
thread counts add floats in another order), and whether the local rows equal `recommend()`'s.

    python benchmarks/batch.py [--users 64] [--shard-users 8] [--seed 0]

Target (issue #30): Ray throughput >= 0.85x the local engine's.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path


def _rows(folder: Path):
    import pyarrow.parquet as pq

    return pq.read_table(folder).replace_schema_metadata(None).sort_by([("user_id", "ascending"),
                                                                        ("rank", "ascending")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--shard-users", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import ray

    from promptrec.batch import batch_recommend
    from promptrec.config import Settings
    from promptrec.hardware import hardware_info, set_compute_threads
    from promptrec.recommender import Recommender

    settings = Settings()
    cores = os.cpu_count() or 1
    with Recommender.from_settings(settings, build=False) as rec:
        users = random.Random(args.seed).sample(sorted(rec.histories), args.users)
    work = Path(tempfile.mkdtemp(prefix="promptrec-batch-"))
    common = dict(settings=settings, users=users, k=10, shard_users=args.shard_users)
    results = {}
    local = batch_recommend(work / "local", engine="local", threads=cores, **common)
    results["local"] = (local, cores)
    t0 = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    ray_start = time.perf_counter() - t0
    for actors in (1, 2):
        threads = max(1, cores // actors)
        summary = batch_recommend(work / f"ray{actors}", engine="ray", actors=actors, threads=threads, **common)
        results[f"ray, {actors} actor{'s' if actors > 1 else ''}"] = (summary, threads)
    ray.shutdown()

    # recommend() in this process, with the local run's threads, for a few of the users
    set_compute_threads(cores)
    local_rows = _rows(work / "local").to_pylist()
    with Recommender.from_settings(settings, build=False) as rec:
        same_as_recommend = all(
            [(r["item_id"], r["llm_score"], r["probability"]) for r in local_rows if r["user_id"] == user]
            == [(x.item_id, x.llm_score, x.probability) for x in rec.recommend(user, k=10).recommendations]
            for user in users[:5])

    info = hardware_info("cpu", "float32")
    print(f"MovieLens-100K, {args.users} users, k=10, LLM on ({local.rows // max(local.users_done, 1)} rows a user); "
          f"CPU capability {info.cpu_capability}, {cores} cores; Ray {ray.__version__}, local cluster start "
          f"{ray_start:.1f} s (not counted)")
    print("| engine | threads per worker | users/s | x local | seconds | peak RSS per worker (GiB) | same items and ranks as local | max score difference |")
    print("|---|---|---|---|---|---|---|---|")
    base = local.users_per_second
    reference = _rows(work / "local").to_pandas()
    for name, (summary, threads) in results.items():
        peaks = ", ".join(f"{v / 2**30:.2f}" for v in summary.workers.values())
        same, diff = "-", "-"
        if name != "local":
            rows = _rows(Path(summary.output)).to_pandas()
            same = "yes" if (rows[["user_id", "rank", "item_id"]].equals(reference[["user_id", "rank", "item_id"]])) else "no"
            diff = f"{max(float((rows[c] - reference[c]).abs().max()) for c in ('llm_score', 'retrieval_score')):.1e}"
        print(f"| {name} | {threads} | {summary.users_per_second:.3f} | {summary.users_per_second / base:.2f} | "
              f"{summary.seconds:.1f} | {peaks} | {same} | {diff} |")
    print(f"local rows equal recommend() for 5 users (same threads): {same_as_recommend}")
    print("target: Ray >= 0.85x local")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
