"""Explanations in an evaluation run (a suite's ``[explain]`` section): for a seeded sample of
the evaluated users, the top item of the list `Recommender.recommend` serves from the test
index (in retrieval mode, calibrated on the suite's calibration users when calibration is on)
is explained ("why this item?", the settings' explainer and the given template), and the
answer's counterfactual faithfulness is measured (`promptrec.explain.faithfulness`: the cited
history items removed against as many random ones). One row per user in explanations.jsonl,
appended as it is made (a stopped run continues where it stopped); `summarize_explanations`
gives the share of the model's own answers, the grounding outcomes and the faithfulness
figures with the paired cited-minus-random drop."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptrec.eval.run_folder import EXPLANATIONS, JsonlLog
from promptrec.stats import mean_ci, paired_difference

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.eval.rankers import EvalData
    from promptrec.eval.suite import Suite

ROW_KEY = "explain"  # the rows' "ranker" key in explanations.jsonl


def read_explanations(run_dir: Path) -> list[dict[str, Any]]:
    """The explanation rows of a run folder (none when it has no explanations.jsonl)."""
    path = run_dir / EXPLANATIONS
    if not path.is_file():
        return []
    log = JsonlLog(path)
    return log.rows_for(ROW_KEY)


def explained_users(data: EvalData, suite: Suite) -> list[str]:
    """The seeded sample of evaluated users whose top item is explained, in the run's order."""
    from promptrec.data.preprocess import seeded_sample

    return data.run_order(seeded_sample(data.users, suite.explain.users, suite.seed, 3))


def served_recommender(data: EvalData, suite: Suite):
    """The test index's `Recommender` serving in retrieval mode, with its retrieval calibration
    fitted on the suite's calibration users (saved beside the eval's own index) when the suite
    calibrates: what ``ranker.mode = "retrieval"`` serves."""
    from promptrec.eval.rankers import CalibratedRetrievalRanker
    from promptrec.recommender import Recommender

    if not suite.calibration.enabled:
        base = data.recommender("test")
        ranker = base.settings.ranker.model_copy(update={"mode": "retrieval", "calibrate": False})
        settings = base.settings.model_copy(update={"n_candidates": suite.protocol.n_candidates, "ranker": ranker})
        return Recommender(base.items, base.histories, base.index, settings)
    served = CalibratedRetrievalRanker(suite.protocol.n_candidates, l2=suite.calibration.l2)
    served.prepare(data)
    rec = served._rec
    rec.save_retrieval_calibration(served.calibrator)
    return rec


def explain_user(rec, user_id: str, template: str, trials: int, seed: int) -> dict[str, Any]:
    """One row: the user's top served item explained, and the answer's faithfulness."""
    from promptrec.explain.conversation import Conversation

    listed = rec.recommend(user_id, k=1)
    if not listed.recommendations:
        return {"ranker": ROW_KEY, "user_id": user_id, "item_id": None, "grounding": None,
                "note": "no item was served to explain"}
    conv = Conversation(rec, user_id, template=template, recommendations=listed)
    started = time.perf_counter()
    answer = conv.why(listed.recommendations[0].item_id)
    latency = time.perf_counter() - started
    faith = conv.measure_faithfulness(trials=trials, seed=seed) if answer.cited_history_ids else None
    return {
        "ranker": ROW_KEY,
        "user_id": user_id,
        "item_id": answer.item_id,
        "grounding": answer.grounding,
        "text": answer.text,
        "cited": answer.cited_history_ids,
        "attempts": answer.attempts,
        "model": answer.model_id,
        "template_hash": answer.template_hash,
        "latency_s": round(latency, 4),
        "faithfulness": faith.model_dump(mode="json") if faith is not None else None,
    }


def run_explanations(data: EvalData, suite: Suite, log: JsonlLog,
                     report: Callable[[str, int, int], None] | None = None,
                     after_user: Callable[[str, str], None] | None = None, limit: int | None = None) -> None:
    """Append the rows the run still lacks (see the module); ``limit``: only the first users."""
    users = explained_users(data, suite)[:limit]
    todo = [u for u in users if u not in log.done(ROW_KEY)]
    if not todo:
        return
    rec = served_recommender(data, suite)
    if report:
        report("explanations", len(users) - len(todo), len(users))
    for user in todo:
        log.append(explain_user(rec, user, suite.explain.template, suite.explain.trials, suite.seed))
        if report:
            report("explanations", 1, len(users))
        if after_user:
            after_user(ROW_KEY, user)


def summarize_explanations(rows: list[dict[str, Any]], suite: Suite) -> dict[str, Any] | None:
    """The explanations' figures (JSON-ready); None when the run has none.

    * ``own``: the share of answers the model wrote (not the evidence-built fallback), which
      passed every check (the gate ships nothing else); ``grounding``: the count per outcome;
    * ``faithfulness``: over the answers citing history, ``lowered`` (the share whose cited
      items, removed, lower the item's score), the mean score drop without the cited items and
      without as many random ones, and the paired difference cited - random with its interval.
    """
    answered = [r for r in rows if r.get("grounding") is not None]
    if not answered:
        return None
    n = len(answered)
    outcomes = Counter(r["grounding"] for r in answered)
    measured = [r["faithfulness"] for r in answered
                if r.get("faithfulness") and r["faithfulness"].get("lowered") is not None
                and r["faithfulness"].get("random_drop") is not None]
    faith: dict[str, Any] = {"n": len(measured)}
    if measured:
        cited = [f["cited_drop"] for f in measured]
        random_ = [f["random_drop"] for f in measured]
        boot, conf = suite.protocol.bootstrap, suite.protocol.confidence
        diff = paired_difference(random_, cited, boot, conf, suite.seed)
        lowered = mean_ci([float(f["lowered"]) for f in measured], boot, conf, suite.seed)
        faith.update(
            measure=sorted({f["measure"] for f in measured}),
            lowered=lowered.mean, lowered_low=lowered.low, lowered_high=lowered.high,
            cited_drop=diff.mean_b, random_drop=diff.mean_a,
            diff=diff.diff, diff_low=diff.low, diff_high=diff.high, p_value=diff.p_value,
        )
    latencies = sorted(r["latency_s"] for r in answered)
    return {
        "n": n,
        "not_served": len(rows) - n,
        "own": sum(r["grounding"] not in ("fallback", "declined") for r in answered) / n,
        "cites_history": sum(bool(r.get("cited")) for r in answered) / n,
        "grounding": dict(sorted(outcomes.items())),
        "latency_p50_s": latencies[len(latencies) // 2],
        "models": sorted({r["model"] for r in answered}),
        "faithfulness": faith,
        "examples": [{"user_id": r["user_id"], "item_id": r["item_id"], "grounding": r["grounding"],
                      "text": r["text"]} for r in answered[:5]],
    }


def explanation_lines(summary: dict[str, Any] | None) -> list[str]:
    """The report's "Explanations" section."""
    if not summary:
        return []
    pct = lambda x: "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"  # noqa: E731
    f = summary["faithfulness"]
    out = ["## Explanations", "",
           f"The top served item of {summary['n']} users explained by {', '.join(summary['models'])}: "
           f"{pct(summary['own'])} are the model's own answers, passing every check "
           f"({', '.join(f'{k} {v}' for k, v in summary['grounding'].items())}); "
           f"{pct(summary['cites_history'])} cite a history item; median answer {summary['latency_p50_s']:.2f} s.", ""]
    if f["n"]:
        out += [f"Faithfulness ({f['n']} answers citing history, measured by {' / '.join(f['measure'])}): "
                f"removing the cited items lowers the item's score for {pct(f['lowered'])} "
                f"[{pct(f['lowered_low'])}, {pct(f['lowered_high'])}]; mean drop {f['cited_drop']:+.4f} against "
                f"{f['random_drop']:+.4f} for as many random history items (cited - random {f['diff']:+.4f} "
                f"[{f['diff_low']:+.4f}, {f['diff_high']:+.4f}], p = {f['p_value']:.3f}).", ""]
    out += ["| user | item | grounding | answer |", "|---|---|---|---|"]
    out += [f"| {e['user_id']} | {e['item_id']} | {e['grounding']} | {' '.join(e['text'].split()).replace('|', '/')} |"
            for e in summary["examples"]]
    return out + [""]
