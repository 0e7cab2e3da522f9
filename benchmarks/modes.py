"""recommend() latency per ranker.mode, side by side in one run: what serving without the LLM saves.

    python benchmarks/modes.py [--users 20] [--threads 2]

MovieLens-100K through the public API (`Recommender.recommend`, the configured retrieval, 20
candidates, no calibration so both modes do the same work but the LLM call): ``ranker.mode =
"llm"`` (the generator reranks every list) against ``"retrieval"`` (no generator call), on the
same seeded users, interleaved user by user so that load swings on a shared machine hit both
alike. Prints p50 and p95 per mode, the ratio of the p50s and the CPU capability, so the figure
can be read against the issue's target (auto's p50 where it does not call the LLM ≤ 1.5 s on a
2-core AVX2 CPU). The index is the default one (`promptrec index` builds it on first use).
"""

from __future__ import annotations

import argparse
import random
import time

from _common import percentile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from promptrec import Recommender
    from promptrec.config import Settings

    torch.set_num_threads(args.threads)
    base = Settings()
    ranker = base.ranker.model_copy(update={"calibrate": False})
    recs = {mode: Recommender.from_settings(base.model_copy(update={"ranker": ranker.model_copy(update={"mode": mode})}))
            for mode in ("llm", "retrieval")}
    recs["retrieval"].use_backend(recs["llm"].backend)  # one loaded model; the retrieval mode never calls it
    users = random.Random(0).sample(sorted(recs["llm"].histories), args.users)
    for rec in recs.values():  # warm-up: first calls load the model and fill caches
        rec.recommend(users[0], k=10)
    seconds: dict[str, list[float]] = {mode: [] for mode in recs}
    for user in users:
        for mode, rec in recs.items():
            started = time.perf_counter()
            listed = rec.recommend(user, k=10)
            seconds[mode].append(time.perf_counter() - started)
            assert listed.mode == mode
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads, "
          f"{args.users} users, dtype {recs['llm'].backend.dtype}")
    print(f"{'mode':<10} {'p50 s':>8} {'p95 s':>8}")
    for mode, values in seconds.items():
        print(f"{mode:<10} {percentile(values, 0.5):8.3f} {percentile(values, 0.95):8.3f}")
    ratio = percentile(seconds["llm"], 0.5) / percentile(seconds["retrieval"], 0.5)
    print(f"llm / retrieval p50: {ratio:.1f}x")


if __name__ == "__main__":
    main()
