"""Offline evaluation: suites (shipped: promptrec/eval/suites/*.toml), metrics, baselines, a resumable runner, reports
and paired comparisons.

    from promptrec.eval import load_suite, run_suite, compare_runs
    result = run_suite("ml100k", "runs/ml100k", progress=True)
    result.summary["rankers"][0]["metrics"]["ndcg@10"]   # {"mean", "low", "high"}
"""

from promptrec.eval.compare import Comparison, compare_runs, plot_comparison, render_comparison, write_comparison
from promptrec.eval.rankers import EvalData, EvalRanker, LLMRanker, RankOutput, RetrievalRanker, prepare_data
from promptrec.eval.report import summarize, write_report
from promptrec.eval.rerank_view import RerankView, rerank_view
from promptrec.eval.runner import RunMismatchError, RunResult, build_rankers, run_suite
from promptrec.eval.suite import Suite, SuiteError, load_suite, parse_suite

__all__ = [
    "Comparison",
    "EvalData",
    "EvalRanker",
    "LLMRanker",
    "RankOutput",
    "RerankView",
    "RetrievalRanker",
    "RunMismatchError",
    "RunResult",
    "Suite",
    "SuiteError",
    "build_rankers",
    "compare_runs",
    "load_suite",
    "parse_suite",
    "plot_comparison",
    "prepare_data",
    "render_comparison",
    "rerank_view",
    "run_suite",
    "summarize",
    "write_comparison",
    "write_report",
]
