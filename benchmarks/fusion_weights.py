"""The fusion weights an index build fits for itself (`retrieval.fit_weights`, on by default),
and what the fit costs the build. The index is built the way evaluation builds it, from the
train+validation part of the temporal split, so the events the build holds out are exactly the
validation items, never test. It prints the fit's best settings, the `retrieval.weights`
defaults on the same held-out events, and the build time with the fit and with it off.

Run: python benchmarks/fusion_weights.py [--dataset movielens-100k] [--users N] [--threads 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from promptrec.config import Settings
from promptrec.data.named import load_named_dataset
from promptrec.data.preprocess import temporal_split
from promptrec.recommender import Recommender

from _common import print_epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--users", type=int, default=0, help="retrieval.fit_weights_users (0: the default)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    base = Settings(dataset=args.dataset)
    if args.users:
        base = base.model_copy(update={"retrieval": base.retrieval.model_copy(update={"fit_weights_users": args.users})})
    dataset = load_named_dataset(args.dataset, base)
    split = temporal_split(dataset.interactions, base.split.tie_rule, base.split.tie_seed)
    log = split.history_for_test()
    workdir = Path(tempfile.mkdtemp(prefix="promptrec-fusion-"))
    try:
        timings = {}
        for fit in (False, True):  # the sequential model trains in the first build and is reused by the second
            rs = base.retrieval.model_copy(update={"fit_weights": fit})
            settings = base.model_copy(update={"index_dir": workdir / "index", "retrieval": rs})
            started = time.perf_counter()
            rec = Recommender.from_interactions(dataset.items, log, settings, namespace=f"fusion-{args.dataset}",
                                                progress=print_epochs if not fit else None)
            timings[fit] = time.perf_counter() - started
        fusion = rec.index.manifest.fusion
        print(f"\n# {args.dataset}: fusion weights fitted by the index build (train+validation log; "
              f"the held-out events are the validation items)\n")
        if fusion is None or fusion.weights is None:
            print(f"not fitted: {fusion.skipped if fusion else 'no fit recorded'}")
            return
        print(f"{fusion.users} held-out users, {fusion.settings_tried} settings; the fit took {fusion.seconds:.1f} s; "
              f"a build with the sequential model already trained: {timings[True]:.1f} s with the fit, "
              f"{timings[False]:.1f} s without it (that one trained the model)\n")
        print("| sequential | transitions | behaviour | text | NDCG@10 | Recall@10 | Recall@20 | Recall@50 |")
        print("|---|---|---|---|---|---|---|---|")
        for s in [*fusion.top, fusion.settings_weights]:
            w = s.weights
            print(f"| {w['sequential']} | {w['transitions']} | {w['behaviour']} | {w['text']} | "
                  f"{s.ndcg10:.4f} | {s.recall10:.4f} | {s.recall20:.4f} | {s.recall50:.4f} |")
        print(f"\n(the last row is retrieval.weights, the defaults: {base.retrieval.weights}); served: {fusion.weights}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
