"""The summary of a run, recomputed from its JSONL files, and the report written beside it.

`summarize(run_dir)` reads the stored suite, manifest and per-user rows and returns a JSON-ready
dict; `write_report(run_dir, summary)` writes summary.json, summary.md, metrics.png (the
headline metrics with bootstrap intervals, every ranker side by side) and reliability.png
(before and after calibration, for the LLM rankers).

Definitions:

* Ranking metrics: per user on the final list, cut at each k, then averaged; the interval is a
  percentile bootstrap over users (suite seed, ``protocol.bootstrap`` resamples).
* "cand. recall": share of users whose target is among the candidates a reranker was given
  (the ceiling of any reranking).
* Rerank view (`promptrec.eval.rerank_view`), per LLM ranker and order: NDCG and MRR at the
  headline k of the candidates' retrieval order against the reranked order, paired, on the users
  whose target is among the candidates, with the paired bootstrap interval, the permutation
  p-value and the interval's half-width (the smallest effect the run could detect); beside it
  the same on every user (= candidate recall x conditional).
* Calibration: pooled over (user, candidate) pairs of the users whose LLM answer was not
  degraded; label 1 for the target. "before" is the model's own probability
  (`promptrec.eval.rankers.uncalibrated_probabilities`: the softmax of letters/likelihood scores
  over the list, the sigmoid of the yes/no log-odds), "after" the calibrated probability
  (logistic layer fitted on the validation split).
* Health: degraded answers (the LLM failed or timed out; the list fell back to retrieval order),
  low label mass (under half of the next-token probability on the answer tokens: the model
  "wanted to say something else", the scoring analogue of an unparseable answer),
  and per returned list the invented items (not among the candidates or not in the
  catalog), repeated items and history items.
* Cost: prompt tokens and prompts per user; latency per user (retrieval + LLM) p50/p95;
  users per second = users / summed latency (stable across resumed sessions).
* When the rankers cover different users (e.g. the LLM grid on a sample), a second table
  repeats the ranking metrics on the users all of them have.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from promptrec import metrics as M
from promptrec.eval.explanations import explanation_lines, read_explanations, summarize_explanations
from promptrec.eval.run_folder import load_run, load_user_facts
from promptrec.eval.segments import BASELINE, segment_report, segments_json
from promptrec.eval.rerank_view import rerank_view
from promptrec.stats import mean_ci
from promptrec.eval.suite import Suite

__all__ = ["load_run", "per_user_metrics", "summarize", "write_report", "render_markdown"]

LOW_LABEL_MASS = 0.5
RAW_SUFFIX = " (LLM order)"
_SHORT = {"ndcg": "NDCG", "recall": "Recall", "hr": "HR", "precision": "P", "f1": "F1", "mrr": "MRR"}


def metric_names(suite: Suite) -> list[str]:
    return [f"{m}@{k}" for k in suite.protocol.ks for m in suite.protocol.metrics]


def per_user_metrics(rows: list[dict[str, Any]], names: list[str], field: str = "ranked") -> dict[str, np.ndarray]:
    """name ("ndcg@10") -> one value per row, in row order."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        metric, k = name.split("@")
        fn = M.RANKING_METRICS[metric]
        out[name] = np.array([fn(row[field] or [], row["target"], int(k)) for row in rows], dtype=np.float64)
    return out


def _finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def _calibration(rows: list[dict[str, Any]], bins: int) -> dict[str, Any] | None:
    scored = [r for r in rows if r.get("p_before") is not None and r.get("candidates")]
    if not scored:
        return None
    y = np.concatenate([[float(c == r["target"]) for c in r["candidates"]] for r in scored])
    out: dict[str, Any] = {"users": len(scored), "pairs": int(len(y)), "positives": int(y.sum())}
    sides = {"before": "p_before"}
    if all(r.get("p_after") is not None for r in scored):
        sides["after"] = "p_after"
    for side, field in sides.items():
        p = np.clip(np.concatenate([r[field] for r in scored]), 0.0, 1.0)
        out[side] = {
            "auc": _finite(M.roc_auc(y, p)),
            "log_loss": _finite(M.log_loss(y, p)),
            "brier": _finite(M.brier_score(y, p)),
            "ece": _finite(M.expected_calibration_error(y, p, bins)),
            "mean_p": float(p.mean()),
            "reliability": M.reliability_curve(y, p, bins),
        }
    return out


def _health(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    masses = [r["label_mass"] for r in rows if r.get("label_mass") is not None]
    return {
        "degraded": sum(bool(r.get("degraded")) for r in rows) / n,
        "low_label_mass": (sum(m < LOW_LABEL_MASS for m in masses) / len(masses)) if masses else None,
        "label_mass": float(np.mean(masses)) if masses else None,
        "invented_per_user": float(np.mean([r.get("health_invented", 0) for r in rows])),
        "repeated_per_user": float(np.mean([r.get("health_repeated", 0) for r in rows])),
        "history_per_user": float(np.mean([r.get("health_history", 0) for r in rows])),
        "degraded_reasons": sorted({r["degraded_reason"] for r in rows if r.get("degraded_reason")})[:5],
        "calibrations": len({r["calibration_id"] for r in rows if r.get("calibration_id")}),
    }


def _cost(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = M.latency_summary([r["latency_s"] for r in rows])
    out["prompt_tokens_per_user"] = float(np.mean([r.get("prompt_tokens", 0) for r in rows]))
    out["computed_tokens_per_user"] = float(np.mean([r.get("computed_tokens", 0) for r in rows]))
    out["prompts_per_user"] = float(np.mean([r.get("n_prompts", 0) for r in rows]))
    return out


def _ci_dict(values: np.ndarray, suite: Suite) -> dict[str, float]:
    ci = mean_ci(values, suite.protocol.bootstrap, suite.protocol.confidence, suite.seed)
    return {"mean": ci.mean, "low": ci.low, "high": ci.high}


def _ranker_entry(name: str, kind: str, rows: list[dict[str, Any]], suite: Suite, field: str = "ranked") -> dict[str, Any]:
    names = metric_names(suite)
    values = per_user_metrics(rows, names, field)
    entry: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "users": len(rows),
        "metrics": {m: _ci_dict(v, suite) for m, v in values.items()},
    }
    with_candidates = [r for r in rows if r.get("target_in_candidates") is not None]
    if with_candidates:
        entry["candidate_recall"] = float(np.mean([r["target_in_candidates"] for r in with_candidates]))
        entry["n_candidates"] = int(np.median([len(r["candidates"]) for r in with_candidates]))
    if kind.startswith("llm") and rows and all(r.get("candidates") is not None for r in rows):
        k0 = suite.protocol.ks[0]
        p = suite.protocol
        entry["rerank"] = rerank_view(rows, [f"ndcg@{k0}", f"mrr@{k0}"], field, p.bootstrap, p.confidence,
                                      suite.seed).model_dump()
    if field == "ranked":
        entry["calibration"] = _calibration(rows, suite.calibration.bins)
        entry["health"] = _health(rows)
        entry["cost"] = _cost(rows)
    return entry


def _auto_entry(name: str, calibration: dict[str, Any], by_ranker: dict[str, list[dict[str, Any]]],
                suite: Suite) -> dict[str, Any] | None:
    """What ``ranker.mode = "auto"`` serves with this LLM row: its decision (made on the run's
    calibration records) picks, user by user on the LLM row's users, the LLM row's list or the
    calibrated-retrieval row's. None without a decision or without the row it chose."""
    decision = calibration.get("mode_decision")
    # None too when auto chose the LLM over fewer candidate orders than the row's: the run holds
    # no row over them (a suite with grid.permutations = 1 measures that pipeline)
    if decision is None or decision.get("orders"):
        return None
    source = name if decision["mode"] == "llm" else "calibrated-retrieval"
    users = {r["user_id"] for r in by_ranker[name]}
    rows = [r for r in by_ranker.get(source, []) if r["user_id"] in users]
    if len(rows) < len(users):
        return None
    entry = _ranker_entry(f"auto ({name})", "auto", rows, suite)
    entry["params"] = {"serves": source, "decision": decision["reason"],
                       **{f"validation {k}": round(v, 4) for k, v in decision["ndcg"].items()}}
    return entry


def summarize(run_dir: str | Path) -> dict[str, Any]:
    """The run's summary, recomputed from results.jsonl (JSON-ready)."""
    suite, manifest, rows = load_run(run_dir)
    by_ranker: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_ranker.setdefault(row["ranker"], []).append(row)
    order = [n for n in manifest.get("ranker_order", []) if n in by_ranker]
    order += sorted(n for n in by_ranker if n not in order)
    described = manifest.get("rankers", {})
    entries = []
    for name in order:
        kind = described.get(name, {}).get("kind", "llm" if name.startswith("llm:") else "baseline")
        group = by_ranker[name]
        entry = _ranker_entry(name, kind, group, suite)
        entry["params"] = described.get(name, {})
        if name in manifest.get("calibration", {}):
            entry["calibration_fit"] = {k: v for k, v in manifest["calibration"][name].items() if k != "file"}
        entries.append(entry)
        if kind == "llm" and group and all(r.get("ranked_raw") for r in group):
            entries.append(_ranker_entry(name + RAW_SUFFIX, "llm-raw", group, suite, field="ranked_raw"))
        auto = _auto_entry(name, manifest.get("calibration", {}).get(name, {}), by_ranker, suite)
        if auto is not None:
            entries.append(auto)

    common = None
    user_sets = [set(r["user_id"] for r in by_ranker[n]) for n in order]
    if len(order) > 1 and len({frozenset(s) for s in user_sets}) > 1:
        shared = set.intersection(*user_sets)
        if shared:
            common = {"users": len(shared), "rankers": []}
            for name in order:
                group = [r for r in by_ranker[name] if r["user_id"] in shared]
                values = per_user_metrics(group, metric_names(suite))
                common["rankers"].append({"name": name, "metrics": {m: _ci_dict(v, suite) for m, v in values.items()}})

    k0 = suite.protocol.ks[0]
    facts = load_user_facts(run_dir)
    segments = None
    if facts:
        headline = [f"{m}@{k0}" for m in suite.protocol.metrics if m in ("ndcg", "recall")] or [f"{suite.protocol.metrics[0]}@{k0}"]
        per_user = {name: {metric: dict(zip((r["user_id"] for r in by_ranker[name]), values))
                           for metric, values in per_user_metrics(by_ranker[name], headline).items()}
                    for name in order}
        segments = {"metrics": headline, "rankers": order,
                    "segmentations": segments_json(segment_report(per_user, facts, suite))}
    return {
        "suite": suite.name,
        "description": suite.description,
        "suite_digest": manifest.get("suite_digest"),
        "complete": bool(manifest.get("complete", False)),
        "protocol": manifest.get("protocol"),
        "data": manifest.get("data", {}),
        "seed": suite.seed,
        "bootstrap": suite.protocol.bootstrap,
        "confidence": suite.protocol.confidence,
        "ks": suite.protocol.ks,
        "metrics": metric_names(suite),
        "headline": [f"{m}@{k0}" for m in suite.protocol.metrics],
        "rankers": entries,
        "common_users": common,
        "segments": segments,  # None: the run folder has no users.json (continue the run to write it)
        "explanations": summarize_explanations(read_explanations(Path(run_dir)), suite),
        "skipped": manifest.get("skipped", {}),
        "packages": manifest.get("packages", {}),
        "sessions": len(manifest.get("sessions", [])),
        "wall_s": sum((s.get("finished") or s["started"]) - s["started"] for s in manifest.get("sessions", [])),
    }


# --------------------------------------------------------------------------- Markdown


def _fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _fmt_ci(ci: dict[str, float]) -> str:
    return f"{_fmt(ci['mean'])} [{_fmt(ci['low'])}, {_fmt(ci['high'])}]"


def _label(metric: str) -> str:
    name, k = metric.split("@")
    return f"{_SHORT.get(name, name)}@{k}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _sample_words(count: Any, of: Any) -> str:
    """"943 of 943 (all)", "1000 of 6040 (a seeded sample)"."""
    if count is None:
        return "–"
    return f"{count} of {of} ({'all' if count == of else 'a seeded sample'})"


def _protocol_lines(s: dict[str, Any]) -> list[str]:
    """The run's protocol (split, tie rule, candidates, sample), printed at the top of a report."""
    conf = int(round(s["confidence"] * 100))
    data = s.get("data", {})
    p = s.get("protocol")
    status = "complete" if s["complete"] else "partial (run it again to continue; the users column says how far each ranker got)"
    lines = [f"- status: {status}",
             f"- data: {data.get('dataset')}: {data.get('interactions')} interactions, "
             f"{data.get('users_in_log')} users, {data.get('items')} items"]
    if isinstance(p, dict):
        tie = p["tie_rule"] + (f" (seed {p['tie_seed']})" if p.get("tie_seed") is not None else "")
        ks = ", ".join(f"@{k}" for k in p["ks"])
        lines += [
            f"- split: {p['split']}; rule that ran: {data.get('split', 'temporal')}; tie rule: **{tie}**; "
            f"domain words: {data.get('domain', 'movies')}",
            f"- candidates: {p['n_candidates']} retrieved per user (what the LLM rankers rerank); cut-offs {ks}",
            f"- sample: test users {_sample_words(data.get('evaluated_users'), data.get('test_users'))}; "
            f"LLM rankers on {_sample_words(data.get('llm_users'), data.get('evaluated_users'))} of those; "
            f"calibration: {data.get('calibration_users')} validation users (seed {p['seed']})",
            f"- protocol: {p['text']}",
        ]
    else:  # a run folder written before the protocol was structured
        lines += [f"- users: {data.get('evaluated_users')} evaluated of {data.get('test_users')} "
                  f"(LLM rankers: {data.get('llm_users')})", f"- protocol: {p}"]
    lines += [f"- intervals: {conf}% percentile bootstrap over users, {s['bootstrap']} resamples, seed {s['seed']}", ""]
    return lines


def _rerank_lines(s: dict[str, Any]) -> list[str]:
    views = [r for r in s["rankers"] if r.get("rerank")]
    if not views:
        return []
    conf = int(round(s["confidence"] * 100))
    out = ["## Rerank view", "",
           "Each LLM ranker against the retrieval order of its own candidate lists, paired per user. "
           "*Conditional*: on the users whose target is among the candidates; *all users*: every user of "
           "the ranker (a miss scores 0 in both orders), so all-users = cand. recall × conditional. "
           f"Δ = reranked − retrieval with its {conf}% paired bootstrap interval and the paired permutation "
           "p-value; ± is the interval's half-width, the smallest effect the run could detect.", ""]
    header = ["ranker", "metric", "cand. recall", "retrieval (cond.)", "reranked (cond.)", "Δ cond. [CI]", "p",
              "± cond.", "all users: retrieval → reranked", "± all users"]
    rows = []
    for r in views:
        v = r["rerank"]
        for m in v["metrics"]:
            rows.append([
                r["name"], _label(m["metric"]),
                f"{_fmt(v['candidate_recall'], 3)} ({v['hits']}/{v['users']} @{v['n_candidates']})",
                _fmt(m["base"]), _fmt(m["reranked"]),
                f"{_signed(m['diff'])} [{_signed(m['low'])}, {_signed(m['high'])}]", _fmt(m["p_value"], 3),
                _fmt(m["detectable"]), f"{_fmt(m['overall_base'])} → {_fmt(m['overall_reranked'])}",
                _fmt(m["overall_detectable"]),
            ])
    return out + _table(header, rows) + [""]


def _signed(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:+.4f}"


def render_markdown(summary: dict[str, Any], images: dict[str, str] | None = None) -> str:
    """The report page (summary.md) of a run's summary, section by section."""
    s = summary
    out = [f"# Evaluation: {s['suite']}", ""]
    if s.get("description"):
        out += [s["description"].strip(), ""]
    out += _protocol_lines(s) + _ranking_lines(s) + _rerank_lines(s) + _calibration_lines(s)
    out += _segment_lines(s) + explanation_lines(s.get("explanations"))
    if s["rankers"]:  # a run of explanations alone has no lists to judge
        out += _health_lines(s) + _cost_lines(s)
    out += _trailer_lines(s)
    for title, file in (images or {}).items():
        out += [f"![{title}]({file})", ""]
    return "\n".join(out).rstrip() + "\n"


def _ranking_lines(s: dict[str, Any]) -> list[str]:
    out = ["## Ranking", ""]
    has_cands = any("candidate_recall" in r for r in s["rankers"])
    for n, k in enumerate(s["ks"]):
        at_k = [m for m in s["metrics"] if m.endswith(f"@{k}")]
        if n:
            out += [f"### At {k}", ""]
        header = ["ranker", "users"] + [_label(m) for m in at_k] + (["cand. recall"] if has_cands and not n else [])
        rows = []
        for r in s["rankers"]:
            row = [r["name"], str(r["users"])] + [_fmt_ci(r["metrics"][m]) for m in at_k]
            if has_cands and not n:
                row.append(_fmt(r.get("candidate_recall"), 3) + (f" @{r['n_candidates']}" if "n_candidates" in r else ""))
            rows.append(row)
        out += _table(header, rows) + [""]
    if s.get("common_users"):
        c = s["common_users"]
        headline = s["headline"]
        out += [f"### On the {c['users']} users every ranker has", ""]
        out += _table(["ranker"] + [_label(m) for m in headline],
                      [[r["name"]] + [_fmt_ci(r["metrics"][m]) for m in headline] for r in c["rankers"]]) + [""]
    return out


def _segment_lines(s: dict[str, Any]) -> list[str]:
    """Per segment: each ranker's headline metric, then each ranker minus retrieval (paired)."""
    if not s.get("segments"):
        return []
    metric = s["segments"]["metrics"][0]
    rankers = s["segments"]["rankers"]
    out = ["## Segments", "", f"{_label(metric)} per segment ({int(round(s['confidence'] * 100))}% CI); "
           f"Δ: the ranker minus {BASELINE} on the same users (paired). A segment under the suite's "
           "`segments.min_users` shows its size only.", ""]
    for seg in s["segments"]["segmentations"]:
        out += [f"### By {seg['name']}", ""]
        deltas = [n for n in rankers if n != BASELINE]
        header = ["segment", "users"] + rankers + [f"Δ {n}" for n in deltas]
        rows = []
        for g in seg["segments"]:
            if g["too_few"]:
                rows.append([g["label"], str(g["users"])] + ["too few users"] * (len(rankers) + len(deltas)))
                continue
            few = {n: f"too few users ({g['ranker_users'].get(n, 0)})" for n in rankers}
            cells = [_fmt_ci(g["metrics"][n][metric]) if metric in g["metrics"].get(n, {}) else few[n] for n in rankers]
            cells += [_delta_ci(g["deltas"][n][metric]) if metric in g["deltas"].get(n, {}) else few[n] for n in deltas]
            rows.append([g["label"], str(g["users"])] + cells)
        out += _table(header, rows) + [""]
    return out


def _delta_ci(d: dict[str, float]) -> str:
    return f"{_signed(d['diff'])} [{_signed(d['low'])}, {_signed(d['high'])}]"


def _calibration_lines(s: dict[str, Any]) -> list[str]:
    calibrated = [r for r in s["rankers"] if r.get("calibration")]
    if not calibrated:
        return []
    out = ["## Calibration (before → after)", "",
           "Pooled over (user, candidate) pairs of non-degraded answers; label 1 for the target. "
           "Before: the model's own probability (softmax over the list for letters/likelihood, "
           "sigmoid of the yes/no log-odds); after: the logistic layer fitted on the validation split.", ""]
    rows = []
    for r in calibrated:
        c = r["calibration"]
        b, a = c.get("before", {}), c.get("after")

        def pair(key: str) -> str:
            return f"{_fmt(b.get(key))} → {_fmt(a.get(key)) if a else '–'}"
        rows.append([r["name"], str(c["users"]), f"{c['positives']}/{c['pairs']}", pair("auc"), pair("log_loss"),
                     pair("brier"), pair("ece")])
    out += _table(["ranker", "users", "positives/pairs", "AUC", "log loss", "Brier", "ECE"], rows) + [""]
    for r in calibrated:
        fit = r.get("calibration_fit") or {}
        if fit.get("error"):
            out.append(f"- {r['name']}: calibration not fitted: {fit['error']}")
    return out + [""]


def _health_lines(s: dict[str, Any]) -> list[str]:
    health_rows = [r for r in s["rankers"] if r.get("health")]
    out = ["## Output health", ""]
    out += _table(
        ["ranker", "degraded", "low label mass", "label mass", "invented/list", "repeated/list", "history/list"],
        [[r["name"], _fmt(r["health"]["degraded"], 3), _fmt(r["health"]["low_label_mass"], 3),
          _fmt(r["health"]["label_mass"], 3),
          _fmt(r["health"]["invented_per_user"], 2), _fmt(r["health"]["repeated_per_user"], 2),
          _fmt(r["health"]["history_per_user"], 2)] for r in health_rows],
    ) + [""]
    reasons = [(r["name"], r["health"]["degraded_reasons"]) for r in health_rows if r["health"]["degraded_reasons"]]
    for name, why in reasons:
        out.append(f"- {name} degraded: {'; '.join(why)}")
    for r in health_rows:
        if r["health"].get("calibrations", 0) > 1:
            out.append(f"- warning: {r['name']}'s rows come from {r['health']['calibrations']} different "
                       "calibrations (the suite or the validation answers changed between sessions)")
    if reasons or any(r["health"].get("calibrations", 0) > 1 for r in health_rows):
        out.append("")
    return out


def _cost_lines(s: dict[str, Any]) -> list[str]:
    health_rows = [r for r in s["rankers"] if r.get("health")]
    return ["## Cost", ""] + _table(
        ["ranker", "prompt tokens/user", "tokens computed/user", "prompts/user", "latency p50 (ms)",
         "latency p95 (ms)", "users/s"],
        [[r["name"], _fmt(r["cost"]["prompt_tokens_per_user"], 0),
          _fmt(r["cost"].get("computed_tokens_per_user", 0.0), 0), _fmt(r["cost"]["prompts_per_user"], 1),
          _fmt(_ms(r["cost"]["latency_p50_s"]), 2), _fmt(_ms(r["cost"]["latency_p95_s"]), 2),
          _fmt(r["cost"]["users_per_s"], 1)]
         for r in health_rows],
    ) + [""]


def _trailer_lines(s: dict[str, Any]) -> list[str]:
    """Skipped rankers, each ranker's parameters and the package versions."""
    out: list[str] = []
    if s.get("skipped"):
        out += ["## Skipped", ""] + [f"- {name}: {why}" for name, why in s["skipped"].items()] + [""]
    params = [(r["name"], r["params"]) for r in s["rankers"] if set(r.get("params") or {}) - {"kind"}]
    if params:
        out += ["## Rankers", ""]
        for name, p in params:
            shown = ", ".join(f"{k}={v}" for k, v in p.items() if k != "kind" and v is not None)
            out.append(f"- {name}: {shown}")
        out.append("")
    if s.get("packages"):
        out += ["## Packages", "", ", ".join(f"{k} {v}" for k, v in s["packages"].items()), ""]
    return out


# --------------------------------------------------------------------------- pictures


def plot_metrics(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in summary["headline"] if m.split("@")[0] in ("ndcg", "recall")] or summary["headline"][:2]
    rankers = summary["rankers"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 0.45 * len(rankers) + 1.6), squeeze=False)
    y = np.arange(len(rankers))
    for ax, metric in zip(axes[0], metrics):
        means = np.array([r["metrics"][metric]["mean"] for r in rankers])
        low = np.array([r["metrics"][metric]["low"] for r in rankers])
        high = np.array([r["metrics"][metric]["high"] for r in rankers])
        colors = ["tab:blue" if r["kind"].startswith("llm") else "tab:gray" for r in rankers]
        ax.barh(y, means, color=colors, alpha=0.8)
        ax.errorbar(means, y, xerr=[means - low, high - means], fmt="none", ecolor="black", capsize=3)
        ax.set_yticks(y, [r["name"] for r in rankers], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"{_label(metric)} ({int(round(summary['confidence'] * 100))}% CI)")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{summary['suite']}: ranking metrics", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_segments(summary: dict[str, Any], path: Path) -> Path | None:
    """The headline NDCG per segment, each ranker a bar with its interval; one panel per cut."""
    if not summary.get("segments"):
        return None
    segmentations = summary["segments"]["segmentations"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = summary["segments"]["metrics"][0]
    rankers = summary["segments"]["rankers"]
    fig, axes = plt.subplots(1, len(segmentations), figsize=(6 * len(segmentations), 4.2), squeeze=False)
    width = 0.8 / max(1, len(rankers))
    for ax, seg in zip(axes[0], segmentations):
        x = np.arange(len(seg["segments"]))
        for n, name in enumerate(rankers):
            cells = [g["metrics"].get(name, {}).get(metric) for g in seg["segments"]]
            means = np.array([c["mean"] if c else np.nan for c in cells])
            err = np.array([[c["mean"] - c["low"], c["high"] - c["mean"]] if c else [0, 0] for c in cells]).T
            ax.bar(x + (n - (len(rankers) - 1) / 2) * width, means, width, yerr=err, capsize=2, label=name)
        ax.set_xticks(x, [f"{g['label']}\n{g['users']} users" + (" (too few)" if g["too_few"] else "")
                          for g in seg["segments"]], fontsize=8)
        ax.set_title(f"by {seg['name']}", fontsize=9)
        ax.set_ylabel(f"{_label(metric)} ({int(round(summary['confidence'] * 100))}% CI)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{summary['suite']}: segments", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reliability(summary: dict[str, Any], path: Path) -> Path | None:
    calibrated = [r for r in summary["rankers"] if r.get("calibration")]
    if not calibrated:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(calibrated), figsize=(4.4 * len(calibrated), 4.4), squeeze=False)
    for ax, r in zip(axes[0], calibrated):
        c = r["calibration"]
        ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect")
        for side, color in (("before", "tab:orange"), ("after", "tab:blue")):
            if side not in c:
                continue
            rel = c[side]["reliability"]
            pts = [(mp, ob, n) for mp, ob, n in zip(rel["mean_predicted"], rel["observed"], rel["count"]) if n > 0]
            if not pts:
                continue
            xs, ys, ns = map(np.array, zip(*pts))
            ax.plot(xs, ys, marker="o", color=color, label=f"{side} (ECE {_fmt(c[side]['ece'], 3)})")
            ax.scatter(xs, ys, s=12 + 60 * ns / ns.max(), color=color, alpha=0.4)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("predicted P(relevant)")
        ax.set_ylabel("observed frequency")
        ax.set_title(r["name"], fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{summary['suite']}: reliability (before / after calibration)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def json_safe(value: Any) -> Any:
    """The value with NaN/inf as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(run_dir: str | Path, summary: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write summary.json, summary.md and the PNGs into the run folder; returns their paths."""
    run_dir = Path(run_dir)
    summary = summary if summary is not None else summarize(run_dir)
    paths: dict[str, Path] = {}
    images: dict[str, str] = {}
    if summary["rankers"]:
        paths["metrics"] = plot_metrics(summary, run_dir / "metrics.png")
        images["ranking metrics"] = "metrics.png"
    segments = plot_segments(summary, run_dir / "segments.png")
    if segments is not None:
        paths["segments"] = segments
        images["segments"] = "segments.png"
    reliability = plot_reliability(summary, run_dir / "reliability.png")
    if reliability is not None:
        paths["reliability"] = reliability
        images["reliability diagram"] = "reliability.png"
    paths["json"] = run_dir / "summary.json"
    paths["json"].write_text(json.dumps(json_safe(summary), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    paths["markdown"] = run_dir / "summary.md"
    paths["markdown"].write_text(render_markdown(summary, images), encoding="utf-8")
    return paths
