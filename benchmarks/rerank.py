"""Does the LLM add to retrieval? One run of the evaluation harness on MovieLens-100K
(temporal leave-one-out test, all items ranked, history excluded) that prints NDCG@10 and
Recall@10 of retrieval alone, of the LLM rerank with each strategy (LLM order), and of rerank +
calibration (fitted on validation users), on the same users, then per-strategy latency (p50/p95)
from the same rows, and the rerank view (each LLM order against the retrieval order of the same
candidates, on the users whose target was retrieved, with the smallest detectable effect). The
KV-reuse speed ratio is `benchmarks/kv_reuse.py`.

    python benchmarks/rerank.py [--llm-users 200] [--calibration-users 150] [--tie-rule id|hash] [--out runs/rerank-bench]

The run folder is an ordinary eval run: resumable, and `promptrec eval compare` works on it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from promptrec.eval.runner import run_suite
from promptrec.eval.suite import load_suite, named_suites

SUITE = named_suites()["ml100k"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm-users", default="200", help='users the LLM rerankers see (a seeded sample, or "all")')
    parser.add_argument("--calibration-users", default="150")
    parser.add_argument("--tie-rule", choices=["id", "hash"], default="id", help="same-timestamp order of the split")
    parser.add_argument("--out", default="runs/rerank-bench")
    args = parser.parse_args()

    count = lambda v: v if v == "all" else int(v)  # noqa: E731
    suite = load_suite(SUITE).with_overrides(tie_rule=args.tie_rule)
    suite = suite.model_copy(
        update={
            "name": "rerank-bench",
            "grid": suite.grid.model_copy(update={"users": count(args.llm_users)}),
            "calibration": suite.calibration.model_copy(update={"users": count(args.calibration_users)}),
        }
    )
    result = run_suite(suite, args.out, progress=True)
    # The harness's own report: ranking (every ranker, and on the users they share, with
    # bootstrap intervals), calibration before/after, output health and cost.
    print((Path(result.run_dir) / "summary.md").read_text())

if __name__ == "__main__":
    main()
