"""Retrieval quality on a temporal leave-one-out split: the share of users whose test item
is in the top 20 / top 50 (all items ranked, history excluded), per source and fused; plus
index build time and size, and query latency. Run: python benchmarks/retrieval.py [--dataset movielens-100k]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from promptrec.config import RetrievalSettings, Settings
from promptrec.data.named import load_named_dataset
from promptrec.data.preprocess import temporal_split
from promptrec.recommender import Recommender
from promptrec.retrieval.retriever import Retriever

ROWS = [
    ("text embeddings (recency-weighted mean)", {"text": 1.0}),
    ("popularity", {"popularity": 1.0}),
    ("behaviour vectors (implicit ALS, in Chroma)", {"behaviour": 1.0}),
    ("item-to-item transitions", {"transitions": 1.0}),
    ("promptrec fused (default weights)", None),
]


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--users", type=int, default=0, help="evaluate the first N users (0: all)")
    parser.add_argument("--split", choices=["test", "validation"], default="test")
    args = parser.parse_args()

    base = Settings(dataset=args.dataset)
    dataset = load_named_dataset(args.dataset, base)
    split = temporal_split(dataset.interactions, base.split.tie_rule, base.split.tie_seed)  # PROMPTREC_SPLIT__TIE_RULE=hash
    history = split.history_for_test() if args.split == "test" else split.history_for_validation()
    targets = split.test_items() if args.split == "test" else split.validation_items()
    users = sorted(targets, key=lambda u: (len(u), u))
    if args.users:
        users = users[: args.users]

    workdir = Path(tempfile.mkdtemp(prefix="promptrec-bench-"))
    try:
        settings = base.model_copy(update={"index_dir": workdir / "index"})
        started = time.perf_counter()
        rec = Recommender.from_interactions(dataset.items, history, settings, namespace=f"bench-{args.dataset}")
        build_s = time.perf_counter() - started
        size_mb = dir_size(workdir / "index") / 1e6
        started = time.perf_counter()
        Recommender.from_interactions(dataset.items, history, settings, namespace=f"bench-{args.dataset}")
        rebuild_s = time.perf_counter() - started

        print(f"# {args.dataset}, {args.split} split, {len(users)} users, temporal leave-one-out "
              "(sorted by timestamp, then item id), all items ranked, history excluded\n")
        print("| retriever | top-20 | top-50 |\n|---|---|---|")
        latencies: list[float] = []
        for label, weights in ROWS:
            rs = base.retrieval if weights is None else RetrievalSettings(
                **{**base.retrieval.model_dump(), "weights": weights}
            )
            retriever = Retriever(rec.index, rec.catalog, rs)
            hit20 = hit50 = 0
            for user in users:
                t0 = time.perf_counter()
                found = [c.item_id for c in retriever.candidates(rec.history(user), 50)]
                if weights is None:
                    latencies.append(time.perf_counter() - t0)
                hit20 += targets[user] in found[:20]
                hit50 += targets[user] in found
            print(f"| {label} | {hit20 / len(users):.3f} | {hit50 / len(users):.3f} |", flush=True)
        print(f"\nindex build (cold, encoder load included): {build_s:.1f} s; "
              f"unchanged re-index: {rebuild_s:.1f} s; size on disk: {size_mb:.1f} MB "
              f"({len(dataset.items)} items, {len(history)} interactions)")
        print(f"fused top-50 query latency per user: p50 {statistics.median(latencies) * 1e3:.1f} ms, "
              f"p95 {sorted(latencies)[int(0.95 * (len(latencies) - 1))] * 1e3:.1f} ms")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
