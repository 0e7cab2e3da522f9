"""Retrieval quality on a temporal leave-one-out split (sorted by timestamp, then item id; all
items ranked, history excluded): NDCG@10 and Recall@10/20/50 per source and fused; index
build time (including the sequential model's training), its peak memory and size, and query
latency. Each source ranks once per user; every row fuses those rankings with its weights,
exactly as `Retriever.candidates` does.

Run: python benchmarks/retrieval.py [--dataset movielens-1m] [--users N] [--split validation]
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from promptrec.config import Settings
from promptrec.data.named import load_named_dataset
from promptrec.data.preprocess import temporal_split
from promptrec.hardware import peak_rss_bytes
from promptrec.recommender import Recommender
from promptrec.retrieval.weights import all_source_rankings, score_settings

from _common import percentile, print_epochs

PREVIOUS_DEFAULT = {"transitions": 1.0, "behaviour": 0.5, "text": 0.1}
ROWS = [
    ("text embeddings (recency-weighted mean)", {"text": 1.0}),
    ("popularity", {"popularity": 1.0}),
    ("behaviour vectors (implicit ALS, in Chroma)", {"behaviour": 1.0}),
    ("item-to-item transitions", {"transitions": 1.0}),
    ("sequential model (SASRec, in Chroma)", {"sequential": 1.0}),
    ("fused without the sequential model (previous default)", PREVIOUS_DEFAULT),
    ("fused, the retrieval.weights defaults", "defaults"),
    ("promptrec fused (the weights this index fitted)", None),
]


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def print_table(rankings, targets, served_weights, rrf_k) -> None:
    print("| retriever | NDCG@10 | Recall@10 | Recall@20 | Recall@50 |\n|---|---|---|---|---|")
    defaults = Settings().retrieval.weights
    settings = [served_weights if w is None else defaults if w == "defaults" else w for _, w in ROWS]
    for (label, _), s in zip(ROWS, score_settings(rankings, targets, settings, rrf_k)):
        print(f"| {label} | {s.ndcg10:.4f} | {s.recall10:.4f} | {s.recall20:.4f} | {s.recall50:.4f} |", flush=True)
    print(f"\nserved weights: {served_weights}; defaults: {defaults}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--users", type=int, default=0, help="evaluate the first N users (0: all)")
    parser.add_argument("--split", choices=["test", "validation"], default="test")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--max-len", type=int, default=0, help="override retrieval.sequential.max_len")
    parser.add_argument("--epochs", type=int, default=0, help="override retrieval.sequential.max_epochs")
    parser.add_argument("--dump", type=Path, help="also write the per-source rankings to this pickle")
    parser.add_argument("--rescore", type=Path, help="score the rankings of an earlier --dump (no build)")
    args = parser.parse_args()
    if args.rescore:
        with open(args.rescore, "rb") as fh:
            saved = pickle.load(fh)
        rs = Settings().retrieval
        print_table(saved["rankings"], saved["targets"], saved.get("served_weights", rs.weights), rs.rrf_k)
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    base = Settings(dataset=args.dataset)
    seq = base.retrieval.sequential.model_copy(update={
        k: v for k, v in {"max_len": args.max_len, "max_epochs": args.epochs}.items() if v
    })
    base = base.model_copy(update={"retrieval": base.retrieval.model_copy(update={"sequential": seq})})
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
        rss_before = peak_rss_bytes() / 2**20
        started = time.perf_counter()
        rec = Recommender.from_interactions(
            dataset.items, history, settings, namespace=f"bench-{args.dataset}", progress=print_epochs
        )
        build_s = time.perf_counter() - started
        rss_after = peak_rss_bytes() / 2**20
        size_mb = dir_size(workdir / "index") / 1e6
        started = time.perf_counter()
        Recommender.from_interactions(dataset.items, history, settings, namespace=f"bench-{args.dataset}")
        rebuild_s = time.perf_counter() - started

        histories = {u: rec.history(u) for u in users}
        started = time.perf_counter()
        every = rec.retriever.with_every_source()
        rankings = all_source_rankings(every.source_rankings, histories, users, rec.settings.retrieval.pool_size)
        rank_s = time.perf_counter() - started
        print(f"# {args.dataset}, {args.split} split, {len(users)} users, temporal leave-one-out "
              "(sorted by timestamp, then item id), all items ranked, history excluded\n")
        served = rec.retriever.settings.weights
        print_table(rankings, targets, served, rec.settings.retrieval.rrf_k)
        fit = rec.index.manifest.fusion
        if fit is not None and fit.weights is not None:
            print(f"fusion weights fitted in the build on {fit.users} held-out last events ({fit.settings_tried} "
                  f"settings, {fit.seconds:.1f} s): held-out NDCG@10 {fit.best.ndcg10:.4f}, "
                  f"retrieval.weights {fit.settings_weights.ndcg10:.4f}")
        elif fit is not None:
            print(f"fusion weights not fitted: {fit.skipped}")
        if args.dump:
            with open(args.dump, "wb") as fh:
                pickle.dump({"rankings": rankings, "targets": targets, "served_weights": served}, fh)
        model, m = rec.index.sequential_model, rec.index.manifest
        if model is not None and model.stats is not None:
            st = model.stats
            print(f"sequential model: {st.epochs_run} epochs ({st.seconds:.1f} s, {st.device}, bf16 {st.bf16}, "
                  f"{st.threads} threads), best validation NDCG@10 {st.best_val_ndcg10:.4f} at epoch "
                  f"{st.best_epoch}; settings {seq.model_dump()}")
        else:
            print(f"sequential model: skipped ({m.sequential_skipped})")
        print(f"index build (cold: encoder load, text vectors, ALS, transitions, sequential training): {build_s:.1f} s; "
              f"peak RSS {rss_before:.0f} MB before, {rss_after:.0f} MB after the build; "
              f"unchanged re-index: {rebuild_s:.1f} s; size on disk: {size_mb:.1f} MB "
              f"({len(dataset.items)} items, {len(history)} interactions)")
        latencies = []
        for user in users[:300]:
            t0 = time.perf_counter()
            rec.retriever.candidates(histories[user], 50)
            latencies.append(time.perf_counter() - t0)
        print(f"all-source ranking of {len(users)} users: {rank_s:.1f} s; fused top-50 query latency per user "
              f"(first 300): p50 {statistics.median(latencies) * 1e3:.1f} ms, "
              f"p95 {percentile(latencies, 0.95) * 1e3:.1f} ms")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
