"""recommend() latency per strategy and backend, against the compute floor measured in the same run.

    python benchmarks/latency.py [--users 20] [--strategies letters,likelihood,yesno]
        [--backends transformers] [--dtypes auto] [--threads 2] [--no-reuse-rows]

What one user costs through the public API (`Recommender.recommend`, MovieLens-100K, the
configured retrieval, 20 candidates, calibration as configured), each configuration on the same
seeded users, interleaved user by user so that load swings on a shared machine hit all alike.

The compute floor of one call is ``2 x P x T / F``: P the parameters multiplied per token (every
weight matrix but the input embedding, which is a lookup, and a tied output projection, which
runs only at the scored positions), T the tokens
the model actually computed for that user (``computed_tokens``: a shared prefix once, padding
excluded) and F the matrix-multiply throughput that this script measures with torch on this
machine, in the generator's dtype, at the model's own shapes, just before each timing round.
Attention over the context is not counted, so even a perfect implementation sits above 1.0x.

``--adapter DIR`` (a `promptrec train ranker` output folder) adds the transformers rows of the
tuned model as served: the base weights with the LoRA adapter applied unmerged (peft), so the
rows show what serving a tuned ranker costs over the base model. ``--no-reuse-rows`` adds the
transformers configurations with prefix KV reuse off (every prompt run whole): tokens computed
before and after the reuse. ``--dtypes float32,bfloat16`` shows what
the dtype choice is worth here; run under ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` to
see an AVX2-only CPU on a bf16-capable one (``auto`` then picks float32).

vLLM backends (``--backends vllm-engine``) need the vLLM environment: run this script with
``.venv-vllm/bin/python``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import percentile

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def matmul_flops(dtype, hidden: int, intermediate: int, rows: int = 512, seconds: float = 1.0) -> float:
    """FLOP/s of torch matrix multiplies at the model's MLP shapes (rows x hidden @ hidden x intermediate)."""
    import torch

    a = torch.randn(rows, hidden, dtype=dtype)
    b = torch.randn(hidden, intermediate, dtype=dtype)
    c = torch.randn(rows, intermediate, dtype=dtype)
    d = torch.randn(intermediate, hidden, dtype=dtype)
    with torch.inference_mode():
        for _ in range(3):
            a @ b
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            c @ d
            n += 1
        elapsed = time.perf_counter() - start
    return 2.0 * rows * hidden * intermediate * 2 * n / elapsed


def matmul_params(model) -> int:
    """Parameters multiplied per token: all but the input embedding table, which is a lookup. A
    tied output projection shares that table and runs only at the scored positions, so it is
    left out too (an untied head is counted, a slight overestimate for the same reason)."""
    embedding = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters()) - embedding.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--strategies", default="letters,likelihood,yesno")
    parser.add_argument("--backends", default="transformers")
    parser.add_argument("--dtypes", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-reuse-rows", action="store_true", help="add transformers rows without prefix reuse")
    parser.add_argument("--adapter", type=Path, default=None,
                        help="a `promptrec train ranker` output folder: adds transformers rows with its LoRA "
                             "adapter applied as served (unmerged), beside the base model's")
    parser.add_argument("--index-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from promptrec.config import Settings
    from promptrec.data.preprocess import ordered_ids
    from promptrec.hardware import cpu_capability, cpu_has_fast_bf16, resolve_dtype_name
    from promptrec.ranker.backends.transformers_backend import TransformersBackend
    from promptrec.ranker.factory import make_backend
    from promptrec.recommender import Recommender

    index_dir = args.index_dir or Path(tempfile.mkdtemp(prefix="promptrec-latency-"))
    base = Settings(index_dir=index_dir)
    rec = Recommender.from_settings(base, build=True)
    users = ordered_ids(random.Random(args.seed).sample(ordered_ids(rec.histories), args.users + 1))
    warmup, users = users[0], users[1:]

    configs = []  # (label, backend kind, dtype, reuse, Recommender)
    for kind in args.backends.split(","):
        for dtype in args.dtypes.split(","):
            resolved = resolve_dtype_name(dtype, "cpu")
            settings = base.model_copy(update={"ranker": base.ranker.model_copy(update={"backend": kind, "dtype": resolved})})
            backend = make_backend(settings)
            reuses = [True, False] if (args.no_reuse_rows and kind == "transformers") else [True]
            variants = [("", backend)]
            if args.adapter is not None and kind == "transformers":
                # timing only: the adapter's key is not checked against this benchmark's index
                tuned = TransformersBackend(backend.model_path, model_id=f"{backend.model_id}+lora", dtype=resolved,
                                            adapter=args.adapter / "adapter")
                variants.append((" +lora", tuned))
            for suffix, served in variants:
                for reuse in reuses:
                    clone = Recommender(rec.items, rec.histories, rec.index, settings)
                    clone.use_backend(served)
                    label = f"{kind} {resolved}{suffix}" + ("" if reuse else " no-reuse")
                    configs.append((label, kind, resolved, reuse, served, clone))

    print(f"CPU capability {cpu_capability()} (bf16 hardware path: {cpu_has_fast_bf16()}), "
          f"torch threads {torch.get_num_threads()}, {len(users)} users, python {sys.version.split()[0]}")
    model = next((c[4].model for c in configs if hasattr(c[4], "model")), None)
    if model is None:  # vLLM only: count the same folder's parameters with transformers
        from transformers import AutoModelForCausalLM

        from promptrec.assets import resolve_model

        model = AutoModelForCausalLM.from_pretrained(resolve_model(base.generator, base))
    params = matmul_params(model)
    hidden = model.config.hidden_size
    inter = getattr(model.config, "intermediate_size", 4 * hidden)
    flops: dict[str, list[float]] = {}
    rows: dict[tuple[str, str], dict[str, list[float]]] = {}
    strategies = args.strategies.split(",")
    for label, kind, dtype, reuse, backend, clone in configs:
        for strategy in strategies:
            if hasattr(backend, "reuse_prefix"):
                backend.reuse_prefix = reuse
            clone.recommend(warmup, template=strategy)
    for user in users:
        for label, kind, dtype, reuse, backend, clone in configs:
            flops.setdefault(dtype, []).append(matmul_flops(getattr(torch, dtype), hidden, inter, seconds=0.3))
            if hasattr(backend, "reuse_prefix"):
                backend.reuse_prefix = reuse
            for strategy in strategies:
                result = clone.recommend(user, template=strategy)
                if result.degraded:
                    raise SystemExit(f"{label} {strategy}: degraded ({result.degraded_reason})")
                row = rows.setdefault((label, strategy), {"latency": [], "computed": [], "prompt": []})
                row["latency"].append(result.latency_s)
                row["computed"].append(result.computed_tokens)
                row["prompt"].append(result.prompt_tokens)
        print(f"  user {user} done", file=sys.stderr, flush=True)

    print("matmul throughput (median over rounds): "
          + ", ".join(f"{d} {statistics.median(v) / 1e9:.0f} GFLOP/s" for d, v in flops.items())
          + f"; {params / 1e6:.1f} M parameters multiplied per token")
    header = ("| backend, dtype | strategy | p50 s | p95 s | prompt tokens | tokens computed | floor s "
              "| p50 / floor |")
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    for (label, strategy), row in rows.items():
        dtype = label.split()[1]
        p50 = statistics.median(row["latency"])
        computed = statistics.median(row["computed"])
        floor = 2 * params * computed / statistics.median(flops[dtype])
        print(f"| {label} | {strategy} | {p50:.2f} | {percentile(row['latency'], 0.95):.2f} | "
              f"{statistics.median(row['prompt']):.0f} | {computed:.0f} | {floor:.2f} | {p50 / floor:.2f}x |")


if __name__ == "__main__":
    main()
