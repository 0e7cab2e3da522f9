"""Paired comparison of two runs (or two rankers of one run), with bootstrap intervals.

    compare_runs("runs/a", "runs/b")                       # every ranker name the runs share
    compare_runs("runs/x", "runs/x", "llm:letters@m/transformers", "llm:yesno@m/transformers")

Pairs are formed over the users both sides have, and each user must have the same target on
both sides (same data and split), otherwise the comparison is refused. For every ranking metric
of run A's suite (and, where both sides have calibrated probabilities, the per-user log loss and
Brier score of the calibrated probabilities) the result gives the means, the mean per-user
difference B - A, its paired bootstrap interval and a two-sided bootstrap p-value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from promptrec.errors import PromptrecError
from promptrec.eval import metrics as M
from promptrec.eval.report import load_run, metric_names, per_user_metrics
from promptrec.eval.stats import PairedDifference, paired_difference

__all__ = ["Comparison", "PairComparison", "compare_runs", "render_comparison"]


class MetricDifference(PairedDifference):
    metric: str


class PairComparison(BaseModel):
    ranker_a: str
    ranker_b: str
    users: int
    only_a: int  # users only side A has (left out)
    only_b: int
    differences: list[MetricDifference]


class Comparison(BaseModel):
    run_a: str
    run_b: str
    confidence: float
    resamples: int
    seed: int
    pairs: list[PairComparison]


def _per_user_probability_losses(rows: list[dict[str, Any]]) -> dict[str, np.ndarray] | None:
    if not rows or not all(r.get("p_after") is not None for r in rows):
        return None
    ll, br = [], []
    for r in rows:
        y = [float(c == r["target"]) for c in r["candidates"]]
        p = np.clip(r["p_after"], 0.0, 1.0)
        ll.append(M.log_loss(y, p))
        br.append(M.brier_score(y, p))
    return {"log_loss_after": np.array(ll), "brier_after": np.array(br)}


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    ranker_a: str | None = None,
    ranker_b: str | None = None,
    metrics: list[str] | None = None,
    resamples: int | None = None,
    confidence: float | None = None,
    seed: int | None = None,
) -> Comparison:
    """Paired differences B - A. Without ranker names, every ranker name both runs have is
    paired with itself; with one name, that ranker on both sides; with two, A's against B's."""
    suite_a, _, rows_a = load_run(run_a)
    _, _, rows_b = load_run(run_b)
    resamples = resamples or suite_a.protocol.bootstrap
    confidence = confidence or suite_a.protocol.confidence
    seed = suite_a.seed if seed is None else seed
    names = metrics or metric_names(suite_a)
    for name in names:
        metric, _, k = name.partition("@")
        if metric not in M.RANKING_METRICS or not k.isdigit():
            raise PromptrecError(f"unknown metric {name!r}; use e.g. ndcg@10 ({', '.join(sorted(M.RANKING_METRICS))})")

    def group(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for row in rows:
            out.setdefault(row["ranker"], {})[row["user_id"]] = row
        return out

    ga, gb = group(rows_a), group(rows_b)
    if ranker_a or ranker_b:
        pairs = [(ranker_a or ranker_b, ranker_b or ranker_a)]
    else:
        pairs = [(n, n) for n in ga if n in gb]
        if not pairs:
            raise PromptrecError(
                f"the runs share no ranker; name one from each (A has {sorted(ga)}, B has {sorted(gb)})"
            )
    out = []
    for name_a, name_b in pairs:
        if name_a not in ga:
            raise PromptrecError(f"run A ({run_a}) has no ranker {name_a!r}; it has {sorted(ga)}")
        if name_b not in gb:
            raise PromptrecError(f"run B ({run_b}) has no ranker {name_b!r}; it has {sorted(gb)}")
        users_a, users_b = ga[name_a], gb[name_b]
        shared = [u for u in users_a if u in users_b]
        if not shared:
            raise PromptrecError(f"{name_a} (A) and {name_b} (B) have no user in common")
        different = [u for u in shared if users_a[u]["target"] != users_b[u]["target"]]
        if different:
            raise PromptrecError(
                f"{len(different)} shared user(s) have different targets (e.g. user {different[0]!r}): "
                "the runs used different data or splits and cannot be paired"
            )
        ra = [users_a[u] for u in shared]
        rb = [users_b[u] for u in shared]
        va, vb = per_user_metrics(ra, names), per_user_metrics(rb, names)
        pa, pb = _per_user_probability_losses(ra), _per_user_probability_losses(rb)
        if pa is not None and pb is not None:
            va.update(pa)
            vb.update(pb)
        diffs = [
            MetricDifference(metric=m, **paired_difference(va[m], vb[m], resamples, confidence, seed).model_dump())
            for m in va
        ]
        out.append(PairComparison(ranker_a=name_a, ranker_b=name_b, users=len(shared),
                                  only_a=len(users_a) - len(shared), only_b=len(users_b) - len(shared),
                                  differences=diffs))
    return Comparison(run_a=str(run_a), run_b=str(run_b), confidence=confidence, resamples=resamples,
                      seed=seed, pairs=out)


def _f(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.4f}"


def render_comparison(comparison: Comparison) -> str:
    conf = int(round(comparison.confidence * 100))
    lines = [f"# {comparison.run_b} vs {comparison.run_a}", "",
             f"Paired over users; difference = B − A; {conf}% percentile bootstrap, "
             f"{comparison.resamples} resamples, seed {comparison.seed}.", ""]
    for pair in comparison.pairs:
        title = pair.ranker_a if pair.ranker_a == pair.ranker_b else f"B {pair.ranker_b} vs A {pair.ranker_a}"
        extra = f"; left out: {pair.only_a} users only in A, {pair.only_b} only in B" if pair.only_a or pair.only_b else ""
        lines += [f"## {title} ({pair.users} users{extra})", "",
                  "| metric | A | B | B − A | CI | p |", "|---|---|---|---|---|---|"]
        for d in pair.differences:
            lines.append(f"| {d.metric} | {_f(d.mean_a)} | {_f(d.mean_b)} | {d.diff:+.4f} | "
                         f"[{_f(d.low)}, {_f(d.high)}] | {d.p_value:.3f} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
