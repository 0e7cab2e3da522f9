"""Rerank latency on transformers, the in-process vLLM engine and the vLLM server, in one run.

    .venv-vllm/bin/python benchmarks/vllm_backends.py [--users 50] [--candidates 20]
        [--strategies letters,likelihood,yesno] [--dtype bfloat16] [--torch-threads 1]

Same model (the generator in settings, SmolLM2-135M-Instruct by default), same prompts, same
users for every backend. MovieLens-100K users (the first --users by id with enough ratings),
temporal leave-one-out with LlamaRec's tie rule (sort by timestamp, then item id): the last
10 items of each history are shown, and the 20 candidates are the held-out item plus the most
popular items the user has not rated, in a seeded shuffle. (Candidates only shape prompt
lengths here; retrieval quality is not measured.)

Five configurations, interleaved user by user and strategy by strategy so that the machine's
load swings hit them alike:

* transformers: `TransformersBackend` with its shared-prefix KV reuse.
* vllm-engine: `VLLMEngineBackend`, prefix caching on; vllm-engine/nocache: the same engine with
  cache reads off per request (``skip_reading_prefix_cache``). "On" runs before "off" for a user,
  so "on" never reads what "off" computed for the same prompts.
* vllm-server: `promptrec llm serve`'s server, prefix caching on; vllm-server/nocache: a second
  server started with ``--no-enable-prefix-caching``. (The likelihood strategy's prompt
  log-probs never read the server's cache; see vllm_server.py.)

Before timing, every configuration reranks one extra user (warm-up). Latency is per user (20
candidates, one strategy); users/s is 1 / mean latency (one user at a time). Two-thread CPU
timings swing between runs on these machines: read the ratios, all measured in this run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

from _common import free_port, percentile

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

CONFIGS = ["transformers", "vllm-engine", "vllm-engine/nocache", "vllm-server", "vllm-server/nocache"]


def build_users(settings, n_users: int, n_candidates: int, history_items: int, seed: int = 0):
    """[(user_id, history items, CandidateList)] for n_users + 1 users (the first is the warm-up)."""
    from promptrec.data.named import load_named_dataset
    from promptrec.data.preprocess import ordered_ids, temporal_split
    from promptrec.retrieval.schema import Candidate, CandidateList

    data = load_named_dataset(settings.dataset, settings)
    catalog = data.catalog()
    split = temporal_split(data.interactions)
    history_frame = split.history_for_test()
    targets = split.test_items()
    popularity = data.interactions["item_id"].value_counts()
    popular = [str(i) for i in popularity.index]
    histories = {u: [str(i) for i in g["item_id"]] for u, g in history_frame.groupby("user_id", sort=False)}
    users = ordered_ids(u for u in targets if len(histories.get(u, [])) >= history_items)[: n_users + 1]
    rng = random.Random(seed)
    out = []
    for user in users:
        seen = set(histories[user]) | {targets[user]}
        ids = [targets[user]] + [i for i in popular if i not in seen][: n_candidates - 1]
        rng.shuffle(ids)
        cands = [
            Candidate(item_id=i, title=catalog[i].display_title(), text=catalog[i].text(), fused_score=1.0 / (r + 60),
                      rank=r, popularity=int(popularity.get(i, 0)))
            for r, i in enumerate(ids, start=1)
        ]
        history = [catalog[i] for i in histories[user][-history_items:]]
        out.append((user, history, CandidateList(user_id=user, candidates=cands, history=[h.item_id for h in history])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--history-items", type=int, default=10)
    parser.add_argument("--strategies", default="letters,likelihood,yesno")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="a subset of " + ",".join(CONFIGS))
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--block-size", type=int, default=None, help="vLLM KV block size (default: vLLM's, 128 on CPU)")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch threads for transformers in this process (0: torch's default)")
    parser.add_argument("--log-dir", type=Path, default=None, help="server logs (default: a temporary folder)")
    args = parser.parse_args()

    import tempfile

    import numpy as np
    import torch
    from scipy.stats import kendalltau

    from promptrec.assets import resolve_model
    from promptrec.config import Settings
    from promptrec.llm_server import ServerOptions, start_server
    from promptrec.ranker.backends.transformers_backend import TransformersBackend
    from promptrec.ranker.backends.vllm_engine import VLLMEngineBackend
    from promptrec.ranker.backends.vllm_server import VLLMServerBackend
    from promptrec.ranker.reranker import LLMReranker

    configs = [c for c in args.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}")
    strategies = [s for s in args.strategies.split(",") if s]
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    settings = Settings()
    model = settings.generator
    path = resolve_model(model, settings)
    users = build_users(settings, args.users, args.candidates, args.history_items)
    warm, timed = users[0], users[1:]
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="vllm-bench-"))

    servers = []
    backends: dict[str, object] = {}
    startup: dict[str, float] = {}
    try:
        for name, caching in (("vllm-server", True), ("vllm-server/nocache", False)):
            if name in configs:
                t = time.perf_counter()
                options = ServerOptions(Path(path), served_model_name=model, port=free_port(), dtype=args.dtype,
                                        enable_prefix_caching=caching, block_size=args.block_size)
                server = start_server(options, log_path=log_dir / f"{name.replace('/', '-')}.log", ready_timeout_s=900)
                servers.append(server)
                startup[name] = time.perf_counter() - t
                backends[name] = VLLMServerBackend(server.url, path, model_id=model, timeout_s=600)
        if "vllm-engine" in configs or "vllm-engine/nocache" in configs:
            t = time.perf_counter()
            engine = VLLMEngineBackend(path, model_id=model, dtype=args.dtype, block_size=args.block_size)
            startup["vllm-engine"] = time.perf_counter() - t
            backends["vllm-engine"] = backends["vllm-engine/nocache"] = engine
        if "transformers" in configs:
            t = time.perf_counter()
            backends["transformers"] = TransformersBackend(path, model_id=model, device="cpu", dtype=args.dtype)
            startup["transformers"] = time.perf_counter() - t

        def reranker(config: str, strategy: str) -> LLMReranker:
            return LLMReranker(backends[config], strategy, timeout_s=None, max_history=args.history_items)

        def run(config: str, strategy: str, user) -> tuple[float, list[float]]:
            backend = backends[config]
            if config.startswith("vllm-engine"):
                backend.reuse_prefix = not config.endswith("/nocache")
            _, history, cands = user
            started = time.perf_counter()
            result = reranker(config, strategy).run(history, cands)
            elapsed = time.perf_counter() - started
            if result.degraded:
                raise SystemExit(f"{config} {strategy}: degraded: {result.degraded_reason}")
            return elapsed, result.scores_in_input_order()

        rerankers_cfg = [c for c in CONFIGS if c in configs]
        print(f"model {model} ({args.dtype}), {len(timed)} MovieLens-100K users, {args.candidates} candidates, "
              f"{args.history_items} history items; torch threads {torch.get_num_threads()}; "
              f"start-up s: " + ", ".join(f"{k} {v:.0f}" for k, v in startup.items()), flush=True)
        for config in rerankers_cfg:
            for strategy in strategies:
                run(config, strategy, warm)
        engine_stats_before = dict(backends["vllm-engine"].cache_stats) if "vllm-engine" in backends else None

        times = {(c, s): [] for c in rerankers_cfg for s in strategies}
        taus = {(c, s): [] for c in rerankers_cfg for s in strategies}
        started = time.perf_counter()
        for n, user in enumerate(timed, start=1):
            for strategy in strategies:
                scores = {}
                for config in rerankers_cfg:
                    elapsed, scores[config] = run(config, strategy, user)
                    times[(config, strategy)].append(elapsed)
                if "transformers" in scores:
                    for config in rerankers_cfg:
                        tau = kendalltau(scores[config], scores["transformers"])[0]
                        taus[(config, strategy)].append(0.0 if np.isnan(tau) else float(tau))
            if n % 10 == 0 or n == len(timed):
                print(f"  {n}/{len(timed)} users, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

        print()
        print(f"{'strategy':<11} {'backend':<21} {'p50 s':>7} {'p95 s':>7} {'users/s':>8} {'tf/this':>8} {'tau vs tf':>9}")
        p50 = {k: statistics.median(v) for k, v in times.items()}
        for strategy in strategies:
            for config in rerankers_cfg:
                v = times[(config, strategy)]
                ratio = p50[("transformers", strategy)] / p50[(config, strategy)] if "transformers" in configs else float("nan")
                tau = statistics.mean(taus[(config, strategy)]) if taus[(config, strategy)] else float("nan")
                print(f"{strategy:<11} {config:<21} {percentile(v, .5):>7.3f} {percentile(v, .95):>7.3f} "
                      f"{1 / statistics.mean(v):>8.2f} {ratio:>7.2f}x {tau:>9.2f}")
        print()
        print("ratios of p50 latency (> 1: the second is faster)")
        pairs = [("transformers", "vllm-engine"), ("transformers", "vllm-server"), ("vllm-server", "vllm-engine"),
                 ("vllm-engine/nocache", "vllm-engine"), ("vllm-server/nocache", "vllm-server")]
        for a, b in pairs:
            if a in configs and b in configs:
                cells = "  ".join(f"{s} {p50[(a, s)] / p50[(b, s)]:.2f}x" for s in strategies)
                print(f"  {a:>20} / {b:<12} {cells}")
        if engine_stats_before is not None:
            stats = backends["vllm-engine"].cache_stats
            sent = stats["prompt_tokens"] - engine_stats_before["prompt_tokens"]
            hit = stats["cached_tokens"] - engine_stats_before["cached_tokens"]
            print(f"engine prefix cache (caching-on and -off runs together): {hit / max(sent, 1):.0%} of "
                  f"{sent} prompt tokens read from cache; block size {backends['vllm-engine'].block_size}; "
                  f"{stats['recomputed']} continuations recomputed")
        print(f"total {time.perf_counter() - started:.0f} s")
    finally:
        engine = backends.get("vllm-engine")
        if engine is not None:
            engine.close()
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
