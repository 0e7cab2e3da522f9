"""Does tuning make the LLM add to retrieval? One run on MovieLens-100K or ``--dataset`` (temporal
leave-one-out, ties by item id): LoRA-tune the generator (`promptrec.train.ranker`) on training-split examples
and print NDCG@10 on the same sampled test users of

* retrieval (promptrec's fused retriever, its top 20 in order), and the calibration fitted without the LLM
  (its score held constant: the retrieval features only), which tells what the LLM adds to calibration,
* zero-shot (the base model's letters order) and zero-shot + calibration,
* tuned (the adapter early stopping picks on validation users) and tuned + calibration,

each with a bootstrap 95% CI and the paired difference to retrieval (and tuned vs zero-shot),
then a learning curve: NDCG@10 of the tuned order after each evaluated number of training
examples, as a PNG. Calibrations are fitted on validation users, scored by the same model.

    python benchmarks/tune_ranker.py [--examples 256] [--curve 0,64,128,256] [--test-users 100|all]
        [--calibration-users 100] [--history-items 5] [--out runs/tune-ranker]

The learning curve is one training run: it is evaluated on the test users at each point of
``--curve`` (examples are a seeded sequence, so the first 64 of a 256-example run are a
64-example run's). Training time and peak memory come from the run's `TrainStats`. Progress bars
(index builds, training, each scoring pass) go to stderr.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from promptrec.progress import ProgressFn


def _user_count(text: str) -> int | str:
    return text if text == "all" else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--template", default="letters")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--curve", default="0,64,128,256", help="examples at which the test users are scored")
    parser.add_argument("--test-users", type=_user_count, default=100, help='test users scored (a seeded sample), or "all"')
    parser.add_argument("--calibration-users", type=int, default=100)
    parser.add_argument("--eval-users", type=int, default=32, help="validation users for early stopping")
    parser.add_argument("--history-items", type=int, default=5)
    parser.add_argument("--permutations", type=int, default=3, help="letters: orders averaged at scoring time")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--candidate-order", choices=["served", "shuffled"], default="served",
                        help="letters: train on candidates in the retriever's (served) order, or shuffled per example")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/tune-ranker")
    args = parser.parse_args()

    from promptrec.progress import progress_bars

    with progress_bars(width=24, remaining=True) as report:
        run(args, report)


def run(args: argparse.Namespace, report: ProgressFn) -> None:
    import torch

    from promptrec.config import RankerSettings, Settings
    from promptrec.data.named import load_named_dataset
    from promptrec.data.preprocess import ordered_ids, seeded_sample, temporal_split
    from promptrec.metrics import ndcg_at_k
    from promptrec.stats import mean_ci, paired_difference
    from promptrec.pipeline import calibrated_order
    from promptrec.ranker.calibration import CalibrationRecord, calibration_users
    from promptrec.ranker.adapters import TuningConfig, expected_key, tuning_template
    from promptrec.train.ranker import train_ranker
    from promptrec.recommender import Recommender

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve = sorted({int(c) for c in args.curve.split(",")})
    base = Settings()
    settings = base.model_copy(update={
        "index_dir": out / "index",
        "ranker": RankerSettings(template=args.template, history_items=args.history_items, permutations=args.permutations,
                                 seed=args.seed, timeout_s=None, adapter="none"),
    })
    dataset = load_named_dataset(args.dataset, settings)
    split = temporal_split(dataset.interactions)
    train_rec = Recommender.from_interactions(dataset.items, split.history_for_validation(),
                                              settings.model_copy(update={"index_dir": out / "index-train"}),
                                              namespace=f"{args.dataset}-train", progress=report)
    test_rec = Recommender.from_interactions(dataset.items, split.history_for_test(),
                                             settings.model_copy(update={"index_dir": out / "index-test"}),
                                             namespace=f"{args.dataset}-test", progress=report)
    test_targets, val_targets = split.test_items(), split.validation_items()
    test_users = seeded_sample(ordered_ids(test_targets), args.test_users, args.seed, 1)
    cal_users = calibration_users(val_targets, args.calibration_users, args.seed)  # as `promptrec calibrate` draws
    test_lists = {u: test_rec.candidates(u, settings.n_candidates) for u in test_users}
    val_lists = {u: train_rec.candidates(u, settings.n_candidates) for u in cal_users}
    retrieval = [ndcg_at_k([c.item_id for c in test_lists[u].candidates], test_targets[u], 10) for u in test_users]
    hits = np.mean([test_targets[u] in {c.item_id for c in test_lists[u].candidates} for u in test_users])

    template = tuning_template(settings, args.template)
    config = TuningConfig(
        template=template.name, examples=args.examples, n_candidates=settings.n_candidates,
        history_items=args.history_items, eval_every=int(np.gcd.reduce([c for c in curve if c] or [64])),
        eval_users=args.eval_users, patience=None, lr=args.lr, seed=args.seed, permutations=1,
        candidate_order=args.candidate_order,
    )
    results: dict[int, dict] = {}

    def score(reranker, rec, lists, stage):
        rows = {}
        for user, found in lists.items():
            rows[user] = reranker.run([rec.catalog[i] for i in found.history], found)
            report(stage, 1, len(lists))
        return rows

    def calibrated(records, test_scores):
        """NDCG@10 of the served order (`promptrec.pipeline`) under a calibration fitted (`fit_records`) on the
        validation users' ``records``; ``test_scores(u)``: the LLM scores of u's list in input order."""
        calibrator = train_rec.fit_records(records)
        values = []
        for u in test_users:
            found = test_lists[u]
            _, order = calibrated_order(found, test_scores(u), calibrator)
            values.append(ndcg_at_k([found.candidates[i].item_id for i in order], test_targets[u], 10))
        return values

    def llm_records(stage):  # the validation users scored by the current backend (`Recommender.calibration_records`)
        return train_rec.calibration_records({u: val_targets[u] for u in cal_users},
                                             on_user=lambda: report(stage, 1, len(cal_users)))

    def no_llm_records():  # the same LLM score for every candidate: its features carry nothing
        return [CalibrationRecord(candidates=val_lists[u], scores=[0.0] * len(val_lists[u].candidates),
                                  relevant_item_id=val_targets[u]) for u in cal_users]

    def llm_scores(rows):
        return lambda u: rows[u].scores_in_input_order()

    def no_llm(lists):
        return lambda u: [0.0] * len(lists[u].candidates)

    def reranker_for(backend):  # both recommenders serve through ``backend``; the reranker `recommend()` uses
        for rec in (train_rec, test_rec):
            rec.use_backend(backend)
        return test_rec.reranker()

    def write_curve():
        (out / "curve.json").write_text(json.dumps({str(k): v["ndcg"] for k, v in results.items()} | {"retrieval": retrieval}))

    def on_eval(trainer, seen):
        if seen not in curve:
            return
        started = time.perf_counter()
        reranker = reranker_for(trainer.backend)
        trainer.model.eval()
        with torch.no_grad():
            rows = score(reranker, test_rec, test_lists, f"test, {seen} examples")
            results[seen] = {"ndcg": [ndcg_at_k(rows[u].ranked_item_ids(), test_targets[u], 10) for u in test_users],
                             "rows": rows}
            if seen == 0:  # the adapter starts as the identity: this is the zero-shot model
                results[0]["calibrated"] = calibrated(llm_records("calibration, zero-shot"), llm_scores(rows))
                results[0]["features_only"] = calibrated(no_llm_records(), no_llm(test_lists))
        trainer.model.train()
        print(f"  {seen:>5} examples: test NDCG@10 {np.mean(results[seen]['ndcg']):.4f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        write_curve()  # at every point, so an interrupted run keeps the curve so far

    key = expected_key(settings, template, test_rec.index.manifest)
    print(f"training on up to {args.examples} examples; test users {len(test_users)}, retrieval hit@20 {hits:.2f}",
          flush=True)
    result = train_ranker(train_rec, val_targets, settings, config, out / "adapter", key=key, on_eval=on_eval,
                          fresh=True, progress=report)
    stats = result.manifest.stats
    best = stats.best_examples  # the saved adapter: the best validation point, a curve point or not

    from promptrec.ranker.backends.transformers_backend import TransformersBackend
    from promptrec.assets import resolve_model

    tuned_backend = TransformersBackend(resolve_model(settings.generator, settings), model_id=result.manifest.model_id,
                                        device="auto", adapter=result.folder / "adapter")
    tuned = reranker_for(tuned_backend)
    if best in results:  # the saved adapter is the model scored at that curve point: reuse, spot-checked
        tuned_test = results[best]["rows"]
        probe = score(tuned, test_rec, {u: test_lists[u] for u in test_users[:5]}, "test, saved adapter")
        gap = max(np.abs(np.subtract(probe[u].scores_in_input_order(), tuned_test[u].scores_in_input_order())).max()
                  for u in probe)
        print(f"saved adapter vs in-training scores on 5 users: max |diff| {gap:.2e}")
    else:
        tuned_test = score(tuned, test_rec, test_lists, f"test, {best} examples")
    tuned_ndcg = [ndcg_at_k(tuned_test[u].ranked_item_ids(), test_targets[u], 10) for u in test_users]
    tuned_cal = calibrated(llm_records("calibration, tuned"), llm_scores(tuned_test))

    rows = [("retrieval", retrieval), ("calibration without the LLM (retrieval features only)", results[0]["features_only"]),
            ("zero-shot", results[0]["ndcg"]), ("zero-shot + calibration", results[0]["calibrated"]),
            (f"tuned ({best} examples, picked on validation)", tuned_ndcg), ("tuned + calibration", tuned_cal)]
    if max(results) != best:
        rows.append((f"tuned, last ({max(results)} examples)", results[max(results)]["ndcg"]))
    lines = [f"# tune_ranker: {args.dataset}, {len(test_users)} test users, template {template.name}, "
             f"{settings.generator}, history {args.history_items}, {args.permutations} permutations, "
             f"trained on candidates {args.candidate_order}",
             "", "| ranker | NDCG@10 [95% CI] | vs retrieval [95% CI] | p |", "|---|---|---|---|"]
    for name, values in rows:
        ci = mean_ci(values, seed=args.seed)
        d = paired_difference(retrieval, values, seed=args.seed)
        lines.append(f"| {name} | {ci.mean:.4f} [{ci.low:.4f}, {ci.high:.4f}] | {d.diff:+.4f} [{d.low:+.4f}, {d.high:+.4f}] "
                     f"| {d.p_value:.3f} |")
    d = paired_difference(results[0]["ndcg"], tuned_ndcg, seed=args.seed)
    lines += ["", f"tuned vs zero-shot: {d.diff:+.4f} [{d.low:+.4f}, {d.high:+.4f}], p {d.p_value:.3f}"]
    d = paired_difference(results[0]["features_only"], tuned_cal, seed=args.seed)
    lines += [f"what the tuned LLM adds to the calibration (tuned + calibration vs calibration without the LLM): "
              f"{d.diff:+.4f} [{d.low:+.4f}, {d.high:+.4f}], p {d.p_value:.3f}", "",
              "| training examples | test NDCG@10 [95% CI] | validation NDCG@10 (early stopping) |", "|---|---|---|"]
    val_by = {e.examples: e.ndcg for e in stats.evals}
    for seen in sorted(results):
        ci = mean_ci(results[seen]["ndcg"], seed=args.seed)
        lines.append(f"| {seen} | {ci.mean:.4f} [{ci.low:.4f}, {ci.high:.4f}] | {val_by.get(seen, float('nan')):.4f} |")
    lines += ["", f"training: {stats.examples_seen} examples, {stats.optimizer_steps} optimiser steps, "
              f"{stats.train_seconds:.0f} s in forward/backward ({stats.train_seconds / max(1, stats.examples_seen):.2f} s "
              f"an example, {stats.mean_prompt_tokens:.0f} tokens), {stats.seconds:.0f} s with evaluations; "
              f"peak memory {stats.peak_memory_mb:.0f} MB; {stats.device} {stats.dtype}; "
              f"true item inserted (retrieval missed it) in {stats.inserted_rate:.0%} of training examples; "
              f"torch threads {torch.get_num_threads()}"]
    report = "\n".join(lines)
    print(report)
    (out / "summary.md").write_text(report + "\n")
    write_curve()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted(results)
    cis = [mean_ci(results[x]["ndcg"], seed=args.seed) for x in xs]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [c.mean for c in cis], marker="o", label=f"tuned {template.name} order (trained {args.candidate_order})")
    ax.fill_between(xs, [c.low for c in cis], [c.high for c in cis], alpha=0.2)
    ax.axhline(np.mean(retrieval), color="grey", linestyle="--", label="retrieval")
    ax.set_xlabel("training examples")
    ax.set_ylabel(f"NDCG@10 ({len(test_users)} test users)")
    ax.set_title(f"{settings.generator}, LoRA r={config.lora_r} on q/v, {args.dataset}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=120)
    print(f"curve: {out / 'learning_curve.png'}")


if __name__ == "__main__":
    main()
