"""How grounded are "why this item?" explanations? For a seeded sample of users of a data set
(``--dataset``: MovieLens-100K by default, or Book-Crossing, or any named data set),
each model explains the user's top retrieval candidate (the full catalog and log; the same
users and items for every model), and the script prints, per model, side by side:

* cites history: the share of final explanations that name at least one real history item
  from the evidence — over all answers, and over the model-written ones (fallback excluded);
* invented title: the share of the model's first answers naming a title that is in no
  catalog; beside it, the shares naming a real catalog title outside the evidence,
  claiming the user consumed an item they did not, and stating a year or number the facts do
  not hold, speaking as if it consumed an item itself ("I watched"), talking about its input
  ("the facts") or using another medium's verb ("you watched" a book); and the same for the
  final answers (what the user sees; the check exists to make these zero);
* the model's own: the share of final answers the model wrote (not the fallback) that pass
  every check (target >= 90%); trimmed / regenerated / fallback: how often an answer was
  ended before a sentence that failed, how often the first answer had no sentence that passed
  and was regenerated, and how often the regenerated one failed too and the plain evidence
  explanation was shown;
* latency: the first sentence on screen (streamed: evidence + the first checked sentence)
  and the whole explanation (evidence + generation + checks; p50 / p90 / mean), model calls;
* with ``--faithfulness``: for the why answers that cite history items, the share whose cited
  items, removed from the history, lower the item's score in the served list (calibrated
  probability, else reciprocal rank; `promptrec.explain.faithfulness`), and the mean drop
  against removing as many random history items, with a paired interval.

    python benchmarks/explain.py [--dataset movielens-100k|book-crossing] [--users 30]
                                 [--models smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct]
                                 [--follow-up] [--faithfulness] [--threads 1] [--out runs/explain-bench.json]

The index is built under ``--index-dir`` (default: the settings' index folder).

Greedy decoding, max_new_tokens 120, the shipped template (prompts/explain/grounded.j2).
``--follow-up`` asks one more question per user ("What else do these movies have in
common?", in the data set's domain words) and reports it as a second row per model. ``--out`` writes every answer (JSON) for
reading examples. Torch threads default to 1: on a shared 2-core machine two threads measured
~15x slower under contention. Timings swing with load: compare models within one run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from _common import percentile

FOLLOW_UP = "What else do these {items} have in common?"


def summarise(rows: list[dict]) -> dict[str, float]:
    n = len(rows)
    share = lambda key: sum(bool(r[key]) for r in rows) / n if n else float("nan")  # noqa: E731
    written = [r for r in rows if r["grounding"] != "fallback"]
    latencies = [r["latency_s"] for r in rows]
    return {
        "n": n,
        "cites_history": share("cites_history"),
        "cites_history_model_written": (
            sum(r["cites_history"] for r in written) / len(written) if written else float("nan")
        ),
        "first_invented": share("first_invented"),
        "first_unsupported": share("first_unsupported"),
        "first_misattributed": share("first_misattributed"),
        "first_claims": share("first_claims"),
        "final_invented": share("final_invented"),
        "final_unsupported": share("final_unsupported"),
        "final_claims": share("final_claims"),
        "first_roles": share("first_roles"),
        "final_roles": share("final_roles"),
        "own_and_ok": sum(r["grounding"] != "fallback" and r["final_ok"] for r in rows) / n if n else float("nan"),
        "trimmed": sum(r["grounding"] == "trimmed" for r in rows) / n if n else float("nan"),
        "regenerated": sum(r["grounding"] == "regenerated" for r in rows) / n if n else float("nan"),
        "fallback": sum(r["grounding"] == "fallback" for r in rows) / n if n else float("nan"),
        "first_sentence_p50": percentile([r["first_sentence_s"] for r in rows], 0.5),
        "first_sentence_p90": percentile([r["first_sentence_s"] for r in rows], 0.9),
        "latency_p50": percentile(latencies, 0.5),
        "latency_p90": percentile(latencies, 0.9),
        "latency_mean": statistics.fmean(latencies) if latencies else float("nan"),
        "calls_per_answer": statistics.fmean(r["attempts"] for r in rows) if rows else float("nan"),
        **faithfulness_summary(rows),
    }


def faithfulness_summary(rows: list[dict]) -> dict[str, float]:
    """Over the answers that cite history items: the share whose cited items, removed, lower the
    item's score, and the mean drop against removing as many random history items (paired)."""
    from promptrec.stats import paired_difference

    measured = [r["faithfulness"] for r in rows if r.get("faithfulness") and r["faithfulness"]["lowered"] is not None
                and r["faithfulness"]["random_drop"] is not None]
    nan = float("nan")
    if not measured:
        return {"faithful_n": 0, "faithful_lowered": nan, "cited_drop": nan, "random_drop": nan,
                "drop_diff_low": nan, "drop_diff_high": nan}
    d = paired_difference([f["random_drop"] for f in measured], [f["cited_drop"] for f in measured])
    return {"faithful_n": len(measured), "faithful_lowered": sum(f["lowered"] for f in measured) / len(measured),
            "cited_drop": d.mean_b, "random_drop": d.mean_a, "drop_diff_low": d.low, "drop_diff_high": d.high}


def streamed(events) -> tuple[object, float]:
    """Consume an answer's stream: (the explanation, seconds until its first sentence showed)."""
    started = time.perf_counter()
    first = None
    for event in events:
        if event.kind == "delta" and first is None:
            first = time.perf_counter() - started
        if event.kind == "done":
            return event.explanation, first if first is not None else time.perf_counter() - started
    raise RuntimeError("the answer stream ended without its explanation")


def row_of(conv, explanation, user: str, first_sentence_s: float, faithfulness: bool = False) -> dict:
    history = conv.rec.history(user)
    first = explanation.checks[0]
    from promptrec.explain.prompts import evidence_variables

    system = conv.template.render("system", **evidence_variables(explanation.evidence, conv.domain))
    facts = system + "\n" + explanation.question
    if explanation.grounding == "fallback":  # built from the evidence: its numbers are the evidence's
        facts += "\n" + explanation.evidence.model_dump_json()
    final = conv.titles.check(explanation.text, conv.allowed, ignore=conv.ignore_phrases(explanation.question),
                              history=history, facts=facts)
    return {
        "user": user,
        "item": explanation.item_id,
        "question": explanation.question,
        "kind": explanation.kind,
        "grounding": explanation.grounding,
        "text": explanation.text,
        "rejected": explanation.rejected,
        "offending": explanation.offending,
        "cites_history": explanation.cites_history,
        "first_invented": bool(first.invented),
        "first_unsupported": bool(first.unsupported),
        "first_misattributed": bool(first.misattributed),
        "first_claims": bool(first.unsupported_claims),
        "final_invented": bool(final.invented),
        "final_unsupported": bool(final.unsupported),
        "final_claims": bool(final.unsupported_claims),
        "final_ok": final.ok,
        "first_roles": bool(first.first_person or first.meta_talk or first.wrong_domain or first.swapped),
        "final_roles": bool(final.first_person or final.meta_talk or final.wrong_domain or final.swapped),
        "attempts": explanation.attempts,
        "latency_s": explanation.latency_s,
        "first_sentence_s": round(first_sentence_s, 4),
        "evidence": [r.item_id for r in explanation.evidence.related],
        "faithfulness": conv.measure_faithfulness().model_dump(mode="json") if faithfulness else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None, help="a named data set (default: the settings', movielens-100k)")
    parser.add_argument("--index-dir", type=Path, default=None, help="where to build the index")
    parser.add_argument("--users", type=int, default=30, help="seeded sample of users (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--follow-up", action="store_true", help=f"also ask {FOLLOW_UP!r}")
    parser.add_argument("--faithfulness", action="store_true",
                        help="measure each why answer counterfactually (its cited items removed vs random ones; "
                             "4 recommend() calls per answer, in the settings' ranker.mode)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--max-new-tokens", type=int, default=120)
    parser.add_argument("--template", default="grounded", help="explain template: a name or a .j2 path")
    parser.add_argument("--out", type=Path, default=None, help="write every answer here (JSON)")
    args = parser.parse_args()

    import torch

    from promptrec.assets import resolve_model
    from promptrec.config import Settings
    from promptrec.explain import Conversation
    from promptrec.explain.grounding import TitleIndex
    from promptrec.ranker.backends.transformers_backend import TransformersBackend
    from promptrec.recommender import Recommender

    from promptrec.data.preprocess import id_rank

    torch.set_num_threads(args.threads)
    settings = Settings()
    updates = {k: v for k, v in (("dataset", args.dataset), ("index_dir", args.index_dir)) if v is not None}
    settings = settings.model_copy(update=updates)
    started = time.perf_counter()
    rec = Recommender.from_settings(settings)
    print(f"index ready in {time.perf_counter() - started:.1f} s ({len(rec.catalog)} items, {len(rec.histories)} users)")
    titles = TitleIndex(rec.catalog, rec.domain)
    follow_up = FOLLOW_UP.format(items=rec.domain.items)

    def by_id(ids):
        ids = list(ids)
        ranks = id_rank(ids)
        return [ids[n] for n in sorted(range(len(ids)), key=lambda n: ranks[n])]

    users = by_id(random.Random(args.seed).sample(by_id(rec.histories), args.users))
    items = {u: rec.candidates(u, 1).candidates[0].item_id for u in users}

    results: dict[str, dict[str, list[dict]]] = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        backend = TransformersBackend(resolve_model(name, settings), model_id=name, device="cpu")
        results[name] = {"why": [], "follow-up": []}
        for n, user in enumerate(users, start=1):
            conv = Conversation(rec, user, backend, use_ranker=False, titles=titles, template=args.template,
                                max_new_tokens=args.max_new_tokens)
            why, first_s = streamed(conv.why_stream(items[user]))
            results[name]["why"].append(row_of(conv, why, user, first_s, args.faithfulness))
            if args.follow_up:
                answer, answer_first_s = streamed(conv.ask_stream(follow_up))
                results[name]["follow-up"].append(row_of(conv, answer, user, answer_first_s))
            print(f"  {name}: {n}/{len(users)} users, last {why.grounding} in {why.latency_s:.1f} s", flush=True)
        del backend

    header = ["", *(f"{m} ({kind})" for m in results for kind in ("why", "follow-up") if results[m][kind])]
    summaries = {
        f"{m} ({kind})": summarise(rows) for m in results for kind, rows in results[m].items() if rows
    }
    labels = [
        ("n", "explanations", "{:.0f}"),
        ("cites_history", "cite >= 1 real history item (final)", "{:.0%}"),
        ("cites_history_model_written", "  ... among model-written (no fallback)", "{:.0%}"),
        ("first_invented", "first answer: invented title (in no catalog)", "{:.0%}"),
        ("first_unsupported", "first answer: catalog title outside the evidence", "{:.0%}"),
        ("first_misattributed", "first answer: says the user consumed an item they did not", "{:.0%}"),
        ("first_claims", "first answer: a year or number not in the facts", "{:.0%}"),
        ("final_invented", "final answer: invented title", "{:.0%}"),
        ("final_unsupported", "final answer: title outside the evidence", "{:.0%}"),
        ("final_claims", "final answer: a year or number not in the facts", "{:.0%}"),
        ("first_roles", "first answer: 'I watched', talk of 'the facts', another medium's verb, swapped roles", "{:.0%}"),
        ("final_roles", "final answer: the same", "{:.0%}"),
        ("own_and_ok", "the model's own answer, passing every check (target >= 90%)", "{:.0%}"),
        ("trimmed", "ended before a sentence that failed", "{:.0%}"),
        ("regenerated", "regenerated once, then passed", "{:.0%}"),
        ("fallback", "fallback to the evidence explanation", "{:.0%}"),
        ("first_sentence_p50", "first sentence on screen p50 (s)", "{:.2f}"),
        ("first_sentence_p90", "first sentence on screen p90 (s)", "{:.2f}"),
        ("latency_p50", "latency p50 (s)", "{:.1f}"),
        ("latency_p90", "latency p90 (s)", "{:.1f}"),
        ("latency_mean", "latency mean (s)", "{:.1f}"),
        ("calls_per_answer", "model calls per answer", "{:.2f}"),
        *([("faithful_n", "faithfulness: answers citing history", "{:.0f}"),
           ("faithful_lowered", "  removing the cited items lowers the item's score", "{:.0%}"),
           ("cited_drop", "  mean score drop, cited items removed", "{:.4f}"),
           ("random_drop", "  mean score drop, as many random items removed", "{:.4f}"),
           ("drop_diff_low", "  cited - random drop, paired 95% CI low", "{:+.4f}"),
           ("drop_diff_high", "  cited - random drop, paired 95% CI high", "{:+.4f}")] if args.faithfulness else []),
    ]
    width = max(len(label) for _, label, _ in labels)
    cols = [max(len(h), 10) for h in header[1:]]
    print()
    print(f"Explanations on {settings.dataset_name()} ({rec.domain.name}): {len(users)} users (seed {args.seed}), each user's top "
          f"retrieval candidate; template {args.template}, greedy, max_new_tokens {args.max_new_tokens}, "
          f"torch threads {args.threads}")
    print(" | ".join([" " * width, *(h.rjust(c) for h, c in zip(header[1:], cols))]))
    for key, label, fmt in labels:
        cells = [fmt.format(summaries[h][key]).rjust(c) for h, c in zip(header[1:], cols)]
        print(" | ".join([label.ljust(width), *cells]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"dataset": settings.dataset_name(), "users": users, "items": items,
                                        "summaries": summaries,
                                        "results": results}, indent=1))
        print(f"\nanswers written to {args.out}")


if __name__ == "__main__":
    main()
