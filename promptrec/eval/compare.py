"""Paired comparison of two runs (or two rankers of one run), with bootstrap intervals.

    compare_runs("runs/a", "runs/b")                       # every ranker name the runs share
    compare_runs("runs/x", "runs/x", "llm:letters@m/transformers", "llm:yesno@m/transformers")

Pairs are formed over the users both sides have, and each user must have the same target on
both sides (same data and split), otherwise the comparison is refused. For every ranking metric
of run A's suite (and, where both sides have calibrated probabilities, the per-user log loss and
Brier score of the calibrated probabilities) the result gives the means, the mean per-user
difference B - A, its paired bootstrap interval, the interval's half-width (the smallest effect
the comparison could detect) and the two-sided p-value of a paired permutation test
(`promptrec.stats.paired_permutation_p`, scipy's `permutation_test`).

`render_comparison` gives the result as Markdown tables (with both runs' protocols on top),
`plot_comparison` as a chart (PNG: B - A with its interval per metric, one panel per pair) and
`write_comparison` writes comparison.{md,json,png} into a folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from promptrec.errors import PromptrecError
from promptrec import metrics as M
from promptrec.eval.report import load_run, metric_names, per_user_metrics
from promptrec.stats import PairedDifference, paired_difference

__all__ = ["Comparison", "PairComparison", "compare_runs", "plot_comparison", "render_comparison", "write_comparison"]


class MetricDifference(PairedDifference):
    metric: str
    detectable: float = float("nan")  # the interval's half-width


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
    protocol_a: dict[str, Any] | str | None = None  # each run's manifest protocol (split, tie rule, ...)
    protocol_b: dict[str, Any] | str | None = None
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
    suite_a, manifest_a, rows_a = load_run(run_a)
    _, manifest_b, rows_b = load_run(run_b)
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
        diffs = []
        for m in va:
            d = paired_difference(va[m], vb[m], resamples, confidence, seed)
            diffs.append(MetricDifference(metric=m, detectable=d.half_width, **d.model_dump()))
        out.append(PairComparison(ranker_a=name_a, ranker_b=name_b, users=len(shared),
                                  only_a=len(users_a) - len(shared), only_b=len(users_b) - len(shared),
                                  differences=diffs))
    return Comparison(run_a=str(run_a), run_b=str(run_b), protocol_a=manifest_a.get("protocol"),
                      protocol_b=manifest_b.get("protocol"), confidence=confidence, resamples=resamples,
                      seed=seed, pairs=out)


def _f(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.4f}"


def _protocol(p: dict[str, Any] | str | None) -> str:
    if isinstance(p, dict):
        tie = p["tie_rule"] + (f" (seed {p['tie_seed']})" if p.get("tie_seed") is not None else "")
        return f"{p['split']}, tie rule {tie}, {p['n_candidates']} candidates, users {p['users']}, LLM users {p['llm_users']}"
    return "–" if p is None else "as in its manifest"


def render_comparison(comparison: Comparison) -> str:
    conf = int(round(comparison.confidence * 100))
    lines = [f"# {comparison.run_b} vs {comparison.run_a}", "",
             f"- A: {comparison.run_a}: {_protocol(comparison.protocol_a)}",
             f"- B: {comparison.run_b}: {_protocol(comparison.protocol_b)}",
             f"- paired over users; difference = B − A; {conf}% percentile bootstrap, "
             f"{comparison.resamples} resamples, seed {comparison.seed}; p: paired permutation test; "
             "±: the interval's half-width (the smallest difference this comparison could detect)", ""]
    for pair in comparison.pairs:
        title = pair.ranker_a if pair.ranker_a == pair.ranker_b else f"B {pair.ranker_b} vs A {pair.ranker_a}"
        extra = f"; left out: {pair.only_a} users only in A, {pair.only_b} only in B" if pair.only_a or pair.only_b else ""
        lines += [f"## {title} ({pair.users} users{extra})", "",
                  "| metric | A | B | B − A | CI | ± | p |", "|---|---|---|---|---|---|---|"]
        for d in pair.differences:
            lines.append(f"| {d.metric} | {_f(d.mean_a)} | {_f(d.mean_b)} | {d.diff:+.4f} | "
                         f"[{_f(d.low)}, {_f(d.high)}] | {_f(d.detectable)} | {d.p_value:.3f} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot_comparison(comparison: Comparison, path: str | Path) -> Path:
    """A chart of the comparison: per pair one panel, per metric B − A with its interval
    (filled where the interval excludes 0), a line at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    pairs = comparison.pairs
    height = max(len(p.differences) for p in pairs) * 0.32 + 1.4
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.6 * len(pairs), height), squeeze=False)
    conf = int(round(comparison.confidence * 100))
    for ax, pair in zip(axes[0], pairs):
        y = np.arange(len(pair.differences))
        diffs = np.array([d.diff for d in pair.differences])
        low = np.array([d.low for d in pair.differences])
        high = np.array([d.high for d in pair.differences])
        clear = (low > 0) | (high < 0)
        ax.axvline(0, color="gray", linewidth=1)
        ax.errorbar(diffs, y, xerr=[diffs - low, high - diffs], fmt="none", ecolor="black", capsize=3)
        ax.scatter(diffs, y, c=["tab:blue" if c else "white" for c in clear], edgecolors="tab:blue", zorder=3)
        ax.set_yticks(y, [d.metric for d in pair.differences], fontsize=8)
        ax.invert_yaxis()
        title = pair.ranker_a if pair.ranker_a == pair.ranker_b else f"{pair.ranker_b} − {pair.ranker_a}"
        ax.set_title(f"{title} ({pair.users} users)", fontsize=8)
        ax.set_xlabel(f"B − A ({conf}% paired CI)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{Path(comparison.run_b).name} vs {Path(comparison.run_a).name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_comparison(comparison: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """comparison.md (with the chart linked), comparison.json and comparison.png in ``out_dir``."""
    import json

    from promptrec.eval.report import json_safe

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"chart": plot_comparison(comparison, out_dir / "comparison.png"),
             "json": out_dir / "comparison.json", "markdown": out_dir / "comparison.md"}
    paths["json"].write_text(json.dumps(json_safe(comparison.model_dump(mode="json")), indent=1) + "\n",
                             encoding="utf-8")
    paths["markdown"].write_text(render_comparison(comparison) + "\n![comparison](comparison.png)\n", encoding="utf-8")
    return paths
