"""Choose the fusion weights on the validation split (history: train; target: each user's
second-to-last item), never on test: build an index from the train part (the sequential model
trains on it, stopping early on each user's last train item), rank once per source, then score
every weight combination of a small grid by NDCG@10. The defaults in `RetrievalSettings.weights`
come from this run on MovieLens-100K (the README lists the table).

Run: python benchmarks/fusion_weights.py [--dataset movielens-100k] [--users N] [--top 10]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch

from promptrec.config import Settings
from promptrec.data.named import load_named_dataset
from promptrec.data.preprocess import temporal_split
from promptrec.recommender import Recommender
from promptrec.train.fusion import all_source_rankings, grid_search

from _common import print_epochs

GRID = {
    "sequential": [0.0, 0.5, 1.0, 2.0, 3.0],
    "transitions": [0.0, 0.25, 0.5, 1.0],
    "behaviour": [0.0, 0.25, 0.5],
    "text": [0.0, 0.1, 0.2],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--users", type=int, default=0, help="a seeded sample of N validation users (0: all)")
    parser.add_argument("--top", type=int, default=10, help="print the best N settings")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    base = Settings(dataset=args.dataset)
    dataset = load_named_dataset(args.dataset, base)
    split = temporal_split(dataset.interactions)
    targets = split.validation_items()
    users = sorted(targets)
    if args.users and args.users < len(users):
        users = sorted(random.Random(0).sample(users, args.users))
    workdir = Path(tempfile.mkdtemp(prefix="promptrec-fusion-"))
    try:
        settings = base.model_copy(update={"index_dir": workdir / "index"})
        started = time.perf_counter()
        rec = Recommender.from_interactions(
            dataset.items, split.history_for_validation(), settings, namespace=f"fusion-{args.dataset}",
            progress=print_epochs,
        )
        build_s = time.perf_counter() - started
        histories = {u: rec.history(u) for u in users}
        rankings = all_source_rankings(rec.retriever, histories, users)
        scored = grid_search(rec.retriever, rankings, histories, targets, GRID)
        print(f"# {args.dataset}, validation split, {len(users)} users; index build {build_s:.0f} s; "
              f"{len(scored)} weight settings, best NDCG@10 first\n")
        print("| sequential | transitions | behaviour | text | NDCG@10 | Recall@10 | Recall@20 | Recall@50 |")
        print("|---|---|---|---|---|---|---|---|")
        current = rec.settings.retrieval.weights
        shown = scored[: args.top] + [s for s in scored if all(s.weights[k] == current.get(k, 0.0) for k in GRID)]
        for s in shown:
            w = s.weights
            print(f"| {w['sequential']} | {w['transitions']} | {w['behaviour']} | {w['text']} | "
                  f"{s.ndcg10:.4f} | {s.recall10:.4f} | {s.recall20:.4f} | {s.recall50:.4f} |")
        print(f"\n(the last row is the current default, {current})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
