"""Where does a large model help a recommender? One page over several runs.

`applicability(run_dirs)` reads finished (or partial) run folders, one scenario each (a suite
on its data set), and for every segment of every run (all users, history-length buckets,
head/torso/tail targets: the suite's ``[segments]``) says of each ranker against retrieval, on
the same users, whether it **wins** (the paired interval of its NDCG@k difference lies above 0),
**loses** (below 0) or **ties**, or that the segment has too few users to tell. Beside the
verdicts: what each ranker costs per user in that run (latency p50, prompt tokens, the CPU
capability and dtype its LLM ran with). `promptrec eval applicability SUITE_OR_RUN...` runs the
suites it is given (resumable, as `promptrec eval run`) and writes ``applicability.md``,
``applicability.json`` and ``applicability.png``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from promptrec.errors import PromptrecError
from promptrec.eval.report import summarize
from promptrec.eval.segments import BASELINE


class Verdict(BaseModel):
    """One ranker against retrieval in one segment of one scenario."""

    scenario: str
    cut: str
    segment: str
    ranker: str
    users: int
    verdict: Literal["wins", "ties", "loses", "too few users"]
    diff: float | None = None
    low: float | None = None
    high: float | None = None


class Cost(BaseModel):
    """What one ranker cost per user in one scenario."""

    scenario: str
    ranker: str
    latency_p50_s: float | None
    prompt_tokens_per_user: float
    computed_tokens_per_user: float = 0.0  # positions the model ran (a shared prefix once)
    cpu_capability: str | None = None
    dtype: str | None = None


class Applicability(BaseModel):
    metric: str
    scenarios: list[str]
    verdicts: list[Verdict]
    costs: list[Cost]
    missing: dict[str, str] = {}  # scenario -> why it has no verdicts


def _verdict(delta: dict[str, float] | None) -> str:
    if delta is None:
        return "too few users"
    return "wins" if delta["low"] > 0 else "loses" if delta["high"] < 0 else "ties"


def applicability(run_dirs: Sequence[Path]) -> Applicability:
    """The verdicts and costs of the runs in ``run_dirs`` (see the module)."""
    verdicts, costs, scenarios, missing, metrics = [], [], [], {}, set()
    for run_dir in run_dirs:
        summary = summarize(run_dir)
        scenario = f"{summary['suite']} ({summary['data'].get('dataset', '?')})"
        if scenario in scenarios:  # two runs of one suite (e.g. rows run into separate folders)
            scenario = f"{scenario}, {Path(run_dir).name}"
        scenarios.append(scenario)
        segments = summary.get("segments")
        if not segments:
            missing[scenario] = f"{run_dir} has no users.json: continue the run once to write it"
            continue
        metric = segments["metrics"][0]
        metrics.add(metric)
        for cut in segments["segmentations"]:
            for segment in cut["segments"]:
                for ranker in segments["rankers"]:
                    if ranker == BASELINE:
                        continue
                    delta = None if segment["too_few"] else segment["deltas"].get(ranker, {}).get(metric)
                    verdicts.append(Verdict(scenario=scenario, cut=cut["name"], segment=segment["label"],
                                            ranker=ranker, users=segment["ranker_users"].get(ranker, segment["users"]),
                                            verdict=_verdict(delta), **({k: delta[k] for k in ("diff", "low", "high")}
                                                                        if delta else {})))
        for entry in summary["rankers"]:
            if entry.get("cost") is None or entry["kind"].endswith("-raw"):
                continue
            params = entry.get("params") or {}
            costs.append(Cost(scenario=scenario, ranker=entry["name"], latency_p50_s=entry["cost"].get("latency_p50_s"),
                              prompt_tokens_per_user=entry["cost"]["prompt_tokens_per_user"],
                              computed_tokens_per_user=entry["cost"].get("computed_tokens_per_user", 0.0),
                              cpu_capability=params.get("cpu_capability"), dtype=params.get("dtype")))
    if len(metrics) > 1:
        raise PromptrecError(f"the runs judge by different metrics ({', '.join(sorted(metrics))}); give runs whose "
                             "suites share their first metric and cut-off")
    return Applicability(metric=next(iter(metrics), "ndcg@10"), scenarios=scenarios, verdicts=verdicts,
                         costs=costs, missing=missing)


def render_applicability(report: Applicability) -> str:
    """The page: per scenario, a table of segments x rankers (verdict, difference and interval),
    then the cost table."""
    out = ["# Where does the LLM help?", "",
           f"Each ranker against `{BASELINE}` on the same users, {report.metric} (paired bootstrap interval): "
           "**wins** when the interval lies above 0, **loses** below 0, else **ties**.", ""]
    for scenario in report.scenarios:
        out += [f"## {scenario}", ""]
        if scenario in report.missing:
            out += [report.missing[scenario], ""]
            continue
        mine = [v for v in report.verdicts if v.scenario == scenario]
        rankers = list(dict.fromkeys(v.ranker for v in mine))
        rows = list(dict.fromkeys((v.cut, v.segment) for v in mine))
        out += ["| segment | " + " | ".join(rankers) + " |", "|---|" + "---|" * len(rankers)]
        for cut, segment in rows:
            cells = []
            for ranker in rankers:
                v = next(x for x in mine if (x.cut, x.segment, x.ranker) == (cut, segment, ranker))
                cells.append(v.verdict + (f" ({v.users})" if v.verdict == "too few users" else
                                          f" {v.diff:+.4f} [{v.low:+.4f}, {v.high:+.4f}]"))
            label = "all users" if cut == "all users" else f"{cut}: {segment}"
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["## Cost per user", "",
            "| scenario | ranker | latency p50 (s) | prompt tokens | tokens computed | CPU | dtype |",
            "|---|---|---|---|---|---|---|"]
    for c in report.costs:
        latency = f"{c.latency_p50_s:.3f}" if c.latency_p50_s is not None else "–"
        out.append(f"| {c.scenario} | {c.ranker} | {latency} | {c.prompt_tokens_per_user:.0f} | "
                   f"{c.computed_tokens_per_user:.0f} | {c.cpu_capability or '–'} | {c.dtype or '–'} |")
    return "\n".join(out) + "\n"


def plot_applicability(report: Applicability, path: Path) -> Path | None:
    """Wins, ties and losses against retrieval, per scenario and ranker (too-small segments left out)."""
    judged = [v for v in report.verdicts if v.verdict != "too few users"]
    if not judged:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(f"{v.scenario}\n{v.ranker}" for v in judged))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.5))
    left = [0] * len(labels)
    for verdict, color in (("wins", "tab:green"), ("ties", "tab:gray"), ("loses", "tab:red")):
        counts = [sum(1 for v in judged if f"{v.scenario}\n{v.ranker}" == label and v.verdict == verdict)
                  for label in labels]
        ax.barh(range(len(labels)), counts, left=left, color=color, label=verdict)
        left = [a + b for a, b in zip(left, counts)]
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"segments ({report.metric} against retrieval, paired)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_applicability(report: Applicability, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "applicability.md", "json": out / "applicability.json"}
    paths["json"].write_text(json.dumps(report.model_dump(mode="json"), indent=1) + "\n", encoding="utf-8")
    chart = plot_applicability(report, out / "applicability.png")
    page = render_applicability(report) + ("\n![verdicts](applicability.png)\n" if chart else "")
    paths["markdown"].write_text(page, encoding="utf-8")
    if chart:
        paths["chart"] = chart
    return paths


def resolve_runs(targets: Sequence[str], runs_root: Path, run: Any = None) -> list[Path]:
    """Each target as a run folder: a folder holding a run manifest as it is, else a suite (a
    shipped suite's name or a file) run first (resumable) into ``runs_root/<suite name>`` by ``run``."""
    from promptrec.eval.run_folder import MANIFEST
    from promptrec.eval.suite import load_suite

    folders = []
    for target in targets:
        path = Path(target)
        if path.is_dir() and (path / MANIFEST).is_file():
            folders.append(path)
            continue
        suite = load_suite(target)
        folder = runs_root / suite.name
        if run is not None:
            run(suite, folder)
        folders.append(folder)
    return folders
