"""Does a generator learn from the item texts, or only the retriever's order? A cheap, low-variance
check of the lever behind LoRA tuning (`promptrec.train.ranker`), generators side by side in one run.

Each generator is tuned by `train_ranker` (the loop `promptrec train ranker` runs: letters, served
order, LoRA r=``--lora-r`` on ``--target-modules``) on the first ``--examples`` training-split
examples; every ``--eval-every`` examples its letters loss is measured on ``--heldout`` examples
that training never sees (the last positions of the same seeded sequence: other prefixes of the
training histories), beside two floors measured on the same held-out examples:

* uniform: ln(n_candidates), a model that knows nothing;
* position prior: the cross-entropy of the true item's position in the served list, its
  distribution fitted on the first ``--prior-examples`` training examples: what a model that
  learns only the retriever's order reaches.

The difference to the prior is paired per example, with a bootstrap 95% interval. A held-out loss
under the position prior is signal the model reads from the texts; at the prior it
has learnt the retriever's order and nothing else. The mean of several hundred held-out losses is a
far tighter measure than NDCG@10 on a few hundred users (`benchmarks/tune_ranker.py`, which takes
hours), so it tells in minutes whether a larger generator is the lever.

    python benchmarks/tune_loss.py [--generators smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct]
        [--dataset movielens-100k] [--examples 400] [--eval-every 100] [--heldout 150] [--out runs/tune-loss]

Prints a table per generator and a summary, writes ``summary.md``, ``loss.json`` and
``heldout_loss.png`` to ``--out``. Progress bars go to stderr. Peak memory is the process's so far:
list the generators smallest first. ``--resume`` continues the runs in ``--out`` to a larger
``--examples`` (the held-out set is the same: the end of the sequence).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from promptrec.progress import ProgressFn


def position_prior_losses(train_positions: list[int], heldout_positions: list[int], n: int) -> list[float]:
    """Per held-out example, the cross-entropy of the position distribution fitted (add-half smoothed)
    on ``train_positions``: the loss of a model that knows only where the true item tends to be."""
    counts = Counter(train_positions)
    total = len(train_positions) + 0.5 * n
    return [-math.log((counts.get(p, 0) + 0.5) / total) for p in heldout_positions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", default="smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct",
                        help="comma-separated named generators or model folders, tuned one after the other")
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--examples", type=int, default=400, help="training examples per generator")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--heldout", type=int, default=150, help="held-out examples the loss is measured on")
    parser.add_argument("--prior-examples", type=int, default=2000,
                        help="training examples the position prior is fitted on (at least --examples)")
    parser.add_argument("--eval-users", type=int, default=16, help="validation users of train_ranker's own NDCG@10")
    parser.add_argument("--history-items", type=int, default=5)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank (alpha is twice it)")
    parser.add_argument("--target-modules", default="q_proj,v_proj", help="comma-separated modules LoRA adapts")
    parser.add_argument("--resume", action="store_true",
                        help="continue each generator's run in --out (a larger --examples extends it) and keep its points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/tune-loss")
    args = parser.parse_args()

    from promptrec.progress import progress_bars

    with progress_bars(width=24, remaining=True) as report:
        run(args, report)


def run(args: argparse.Namespace, report: ProgressFn) -> None:
    import torch

    from promptrec.config import RankerSettings, Settings
    from promptrec.data.named import load_named_dataset
    from promptrec.data.preprocess import temporal_split
    from promptrec.errors import PromptrecError
    from promptrec.stats import paired_difference
    from promptrec.ranker.adapters import TuningConfig, expected_key, tuning_template
    from promptrec.train.ranker import build_example, example_positions, rerank_loss, train_ranker
    from promptrec.recommender import Recommender

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings().model_copy(update={
        "index_dir": out / "index-train",
        "ranker": RankerSettings(history_items=args.history_items, permutations=1, adapter="none"),
    })
    template = tuning_template(settings, "letters")
    dataset = load_named_dataset(args.dataset, settings)
    split = temporal_split(dataset.interactions)
    train_rec = Recommender.from_interactions(dataset.items, split.history_for_validation(), settings,
                                              namespace=f"{args.dataset}-train", progress=report)
    n = settings.n_candidates
    positions = example_positions(train_rec.histories, args.seed)
    fitted = max(args.examples, args.prior_examples)
    if len(positions) < fitted + args.heldout:
        raise PromptrecError(f"{args.dataset}: {len(positions)} training examples, fewer than "
                             f"max(--examples, --prior-examples) {fitted} + --heldout {args.heldout}")

    def examples(pairs, stage):
        built = []
        for user, t in pairs:
            built.append(build_example(train_rec, user, t, n, args.seed))
            report(stage, 1, len(pairs))
        return built

    trained = examples(positions[:fitted], "training lists")
    heldout = examples(positions[-args.heldout:], "held-out lists")  # the sequence's end: no run reaches it

    def truth(e):
        return e.candidates.index(e.target)

    uniform = math.log(n)
    prior_losses = position_prior_losses([truth(e) for e in trained], [truth(e) for e in heldout], n)
    prior = float(np.mean(prior_losses))
    missed = np.mean([e.inserted for e in heldout])
    print(f"{args.dataset}: {len(heldout)} held-out examples (retrieval missed the true item in {missed:.0%}); "
          f"uniform ln {n} = {uniform:.3f}, position prior {prior:.3f}", flush=True)

    saved = out / "loss.json"
    curves: dict[str, dict] = {}
    if args.resume and saved.is_file():
        for generator, curve in json.loads(saved.read_text())["curves"].items():
            curves[generator] = curve | {name: {int(k): v for k, v in curve[name].items()} for name in ("loss", "val_ndcg")}
    for generator in [g.strip() for g in args.generators.split(",") if g.strip()]:
        gen_settings = settings.model_copy(update={"generator": generator})
        config = TuningConfig(template=template.name, examples=args.examples, n_candidates=n,
                              history_items=args.history_items, eval_every=args.eval_every,
                              eval_users=args.eval_users, patience=None, lr=args.lr, seed=args.seed, permutations=1,
                              lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                              target_modules=[m.strip() for m in args.target_modules.split(",") if m.strip()])
        points: dict[int, dict] = dict(curves.get(generator, {}).get("loss", {}))

        def on_eval(trainer, seen, points=points, generator=generator):
            started = time.perf_counter()
            losses = [rerank_loss(trainer, [e], train_rec.catalog, seed=args.seed) for e in heldout]
            d = paired_difference(prior_losses, losses, seed=args.seed)
            points[seen] = {"loss": float(np.mean(losses)), "vs_prior": d.diff, "low": d.low, "high": d.high}
            print(f"  {generator}, {seen:>5} examples: held-out loss {np.mean(losses):.3f}, vs the position prior "
                  f"{d.diff:+.3f} [{d.low:+.3f}, {d.high:+.3f}] ({time.perf_counter() - started:.0f} s)", flush=True)

        key = expected_key(gen_settings, template, train_rec.index.manifest)
        result = train_ranker(train_rec, split.validation_items(), gen_settings, config,
                              out / f"adapter-{Path(generator).name}", key=key, fresh=not args.resume, progress=report,
                              on_eval=on_eval)
        stats = result.manifest.stats
        curves[generator] = {"loss": points, "val_ndcg": {e.examples: e.ndcg for e in stats.evals},
                             "seconds_per_example": stats.train_seconds / max(1, stats.examples_seen),
                             "tokens": stats.mean_prompt_tokens, "peak_memory_mb": stats.peak_memory_mb,
                             "dtype": stats.dtype}
        saved.write_text(json.dumps({"uniform": uniform, "position_prior": prior,
                                                   "curves": curves}, indent=1, default=str))

    lines = [f"# tune_loss: {args.dataset}, letters, {n} candidates in served order, history {args.history_items}, "
             f"lr {args.lr}, LoRA r={args.lora_r} on {args.target_modules}, {len(heldout)} held-out examples",
             "", f"uniform ln {n} = {uniform:.3f}; position prior (the retriever's order only) = {prior:.3f}; "
             f"torch {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads", ""]
    for generator, curve in curves.items():
        lines += [f"## {generator} ({curve['dtype']}, {curve['seconds_per_example']:.2f} s a training example, "
                  f"{curve['tokens']:.0f} tokens, peak memory {curve['peak_memory_mb']:.0f} MB)", "",
                  "| training examples | held-out loss | − position prior [95% CI] | validation NDCG@10 "
                  f"({args.eval_users} users) |", "|---|---|---|---|"]
        for seen, p in sorted(curve["loss"].items()):
            lines.append(f"| {seen} | {p['loss']:.3f} | {p['vs_prior']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}] "
                         f"| {curve['val_ndcg'].get(seen, float('nan')):.4f} |")
        lines.append("")
    summary = "\n".join(lines)
    print(summary)
    (out / "summary.md").write_text(summary + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for generator, curve in curves.items():
        xs = sorted(curve["loss"])
        ax.plot(xs, [curve["loss"][x]["loss"] for x in xs], marker="o", label=Path(generator).name)
    ax.axhline(uniform, color="grey", linestyle=":", label=f"uniform (ln {n})")
    ax.axhline(prior, color="grey", linestyle="--", label="position prior (retriever's order only)")
    ax.set_xlabel("training examples")
    ax.set_ylabel(f"letters loss, {len(heldout)} held-out examples")
    ax.set_title(f"LoRA r={args.lora_r} on {args.target_modules}, {args.dataset}, served order", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "heldout_loss.png", dpi=120)
    print(f"plot: {out / 'heldout_loss.png'}")


if __name__ == "__main__":
    main()
