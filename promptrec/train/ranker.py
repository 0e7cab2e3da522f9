"""LoRA fine-tuning of the generator on the interaction log (`promptrec train ranker`).

Examples come from the training split only: a prefix of a user's history and the item that
followed it. Every (user, position) pair of the split is a possible example; a seeded shuffle
of them is taken in order, so the first N examples of a larger run are the N of a smaller one
(a learning curve extends, and a resumed run continues, the same sequence). The candidates are
the retriever's top ``n_candidates`` for the prefix (hard negatives); when retrieval missed the
true item it replaces the last candidate at a random position (``TrainStats.inserted_rate``).
The retriever is the one built on the training split, so it has seen the transition it is
asked about: training lists hit more often than served ones.

Prompts are built by the serving code (`build_letters_prompts`, `build_yesno_prompts`,
`build_likelihood_prompts`) from the same template; the loss follows the strategy:

* ``letters``: cross-entropy over the label tokens' logits at the answer position (the
  softmax over the shown letters, as scored). ``candidate_order`` sets the order shown:
  ``served`` (the default: the retriever's order, as `recommend()` shows it with one
  permutation, so the model learns corrections to retrieval rather than unlearning its
  prior; better on validation at every point of an ML-100K run) or ``shuffled`` (a random
  order per example, against position bias);
* ``yesno``: logistic loss on log P(Yes) - log P(No) for the true item and
  ``yesno_negatives`` retrieved negatives;
* ``likelihood``: the negative log-likelihood of the true item's continuation tokens.

LoRA through peft (r=8 on q_proj/v_proj by default), AdamW on the adapter only, seeded.
Every ``eval_every`` examples the reranker (the serving `LLMReranker` over the model being
trained) is scored by NDCG@10 on ``eval_users`` validation users; the best adapter is kept and
training stops after ``patience`` evaluations without improvement. Each evaluation writes a
checkpoint (adapter, optimiser, position), so an interrupted run resumes where it stopped.

The adapter, merged folder and manifest it saves are laid out and keyed by
`promptrec.ranker.adapters`.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from promptrec.errors import PromptrecError
from promptrec.extras import require
from promptrec.hardware import peak_rss_bytes
from promptrec.paths import atomic_write_text
from promptrec.ranker.adapters import (
    MANIFEST,
    AdapterKey,
    AdapterManifest,
    AdapterMismatchError,
    EvalPoint,
    TrainStats,
    TuningConfig,
    file_hash,
)
from promptrec.train.validation import score_users

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.config import Settings
    from promptrec.recommender import Recommender

ProgressFn = Callable[[str, int, int], None]


def resolve_training_dtype(dtype: str | None, device: Any) -> Any:
    """The training dtype: as given, else ``promptrec.hardware``'s choice for the device (bf16 on
    CUDA where supported, else fp16; bf16 on CPUs with a bf16 path, else fp32)."""
    from promptrec.ranker.backends.transformers_backend import resolve_torch_dtype

    return resolve_torch_dtype(dtype, device)


# --------------------------------------------------------------------------- examples


class TrainingExample(BaseModel):
    user_id: str
    prefix: list[str]
    target: str
    candidates: list[str]  # item ids, the target among them
    inserted: bool  # retrieval missed the target: it was put in at a random position


def example_positions(histories: dict[str, list[str]], seed: int, min_prefix: int = 1) -> list[tuple[str, int]]:
    """Every (user, t) with history[:t] a prefix of at least ``min_prefix`` items and
    history[t] the next item, in a seeded random order (stable for a seed)."""
    pairs = [(user, t) for user in sorted(histories) for t in range(max(1, min_prefix), len(histories[user]))]
    random.Random(seed).shuffle(pairs)
    return pairs


def build_example(rec: "Recommender", user: str, t: int, n_candidates: int, seed: int) -> TrainingExample:
    history = rec.histories[user]
    prefix, target = list(history[:t]), history[t]
    found = rec.candidates(user, n_candidates, history=prefix)
    ids = [c.item_id for c in found.candidates]
    inserted = target not in ids
    if inserted:
        rng = random.Random(f"{seed}:{user}:{t}")
        ids = ids[: max(0, n_candidates - 1)]
        ids.insert(rng.randrange(len(ids) + 1), target)
    return TrainingExample(user_id=user, prefix=prefix, target=target, candidates=ids, inserted=inserted)


# --------------------------------------------------------------------------- the trainer


@dataclass
class _Row:
    ids: list[int]
    positions: list[int]  # positions whose next-token logits the loss needs
    kind: str  # "choice" (CE over `targets`' logits), "yesno" (sign * log-odds), "nll" (tokens)
    targets: list[int]
    label: int | float = 0  # choice: index into targets; yesno: +1 / -1
    weight: float = 1.0


class RankerTrainer:
    """Holds the model being tuned (a `TransformersBackend` whose model is wrapped by peft), the
    template, and the rows a training example becomes."""

    def __init__(self, model_path: str | Path, model_id: str, config: TuningConfig, prompts_dir: Path | None = None):
        import torch

        peft = require("peft", "train", "LoRA tuning (promptrec train ranker)")
        from promptrec.hardware import resolve_device
        from promptrec.ranker.backends.transformers_backend import TransformersBackend
        from promptrec.ranker.prompts import load_template
        from promptrec.ranker.reranker import LLMReranker

        self.config = config
        device = torch.device(resolve_device(config.device))
        self.dtype = resolve_training_dtype(config.dtype, device)
        torch.manual_seed(config.seed)
        self.backend = TransformersBackend(model_path, model_id=model_id, device=str(device), dtype=self.dtype,
                                           max_batch=16 if device.type == "cuda" else 8)
        self.device = self.backend.device
        lora = peft.LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
        self.backend.model = peft.get_peft_model(self.backend.model, lora)
        self.model = self.backend.model
        self.template = load_template(config.template, prompts_dir).with_domain(config.domain)
        options = {"permutations": config.permutations, "seed": config.seed} if self.template.strategy == "letters" else None
        self.reranker = LLMReranker(self.backend, self.template, strategy_options=options, timeout_s=None,
                                    max_history=config.history_items, max_item_chars=config.max_item_chars)
        self.batch_size = config.batch_size or (8 if self.device.type == "cuda" else 1)
        self.accumulation = config.accumulation or max(1, 8 // self.batch_size)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    # ------------------------------------------------------------------ rows

    def rows(self, example: TrainingExample, catalog: dict[str, Any], rng: random.Random) -> list[_Row]:
        """The token rows and loss targets of one example, prompts built by the serving code."""
        from promptrec.ranker.strategies import (
            build_letters_prompts,
            build_likelihood_prompts,
            build_yesno_prompts,
        )

        rr = self.reranker
        history = rr._history_views([catalog[i] for i in example.prefix])
        items = [catalog[i] for i in example.candidates]
        views = rr._candidate_views([_as_candidate(it) for it in items])
        truth = example.candidates.index(example.target)
        backend = self.backend
        strategy = self.template.strategy
        if strategy == "letters":
            order = list(range(len(views)))
            if self.config.candidate_order == "shuffled":
                rng.shuffle(order)
            prompts, label_ids = build_letters_prompts(backend, self.template, history, views, [order])
            ids = backend.encode(prompts[0])
            return [_Row(ids, [len(ids) - 1], "choice", label_ids, order.index(truth))]
        if strategy == "yesno":
            negatives = [i for i in range(len(views)) if i != truth]
            chosen = [truth] + rng.sample(negatives, min(self.config.yesno_negatives, len(negatives)))
            prompts, yes_no = build_yesno_prompts(backend, self.template, history, [views[i] for i in chosen])
            rows = []
            for n, prompt in enumerate(prompts):
                ids = backend.encode(prompt)
                weight = 1.0 if n == 0 else 1.0 / max(1, len(prompts) - 1)
                rows.append(_Row(ids, [len(ids) - 1], "yesno", yes_no, 1.0 if n == 0 else -1.0, weight))
            return rows
        prefix, conts = build_likelihood_prompts(backend, self.template, history, [views[truth]])
        prefix_ids, suffixes = backend.continuation_token_ids(prefix, conts)
        suffix = suffixes[0]
        ids = prefix_ids + suffix
        positions = list(range(len(prefix_ids) - 1, len(ids) - 1))
        return [_Row(ids, positions, "nll", suffix)]

    def loss(self, rows: list[_Row]) -> Any:
        """Mean loss of a batch of rows (right-padded, one forward pass)."""
        import torch

        width = max(len(r.ids) for r in rows)
        pad = self.backend._pad_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row.ids)] = torch.tensor(row.ids)
            mask[i, : len(row.ids)] = 1
        keep = sorted({p for r in rows for p in r.positions})
        col = {p: j for j, p in enumerate(keep)}
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.device.type == "cuda" and self.dtype != torch.float32):
            out = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                             logits_to_keep=torch.tensor(keep, device=self.device), use_cache=False)
        logits = out.logits.float()
        total = logits.new_zeros(())
        weights = 0.0
        for i, row in enumerate(rows):
            if row.kind == "choice":
                z = logits[i, col[row.positions[0]], row.targets]
                value = torch.nn.functional.cross_entropy(z[None], torch.tensor([int(row.label)], device=self.device))
            elif row.kind == "yesno":
                lp = logits[i, col[row.positions[0]]].log_softmax(-1)
                value = torch.nn.functional.softplus(-row.label * (lp[row.targets[0]] - lp[row.targets[1]]))
            else:
                cols = torch.tensor([col[p] for p in row.positions], device=self.device)
                lp = logits[i, cols].log_softmax(-1)
                value = -lp[torch.arange(len(row.targets), device=self.device),
                            torch.tensor(row.targets, device=self.device)].mean()
            total = total + row.weight * value
            weights += row.weight
        return total / max(weights, 1e-12)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, rec: "Recommender", users: list[str], targets: dict[str, str],
                 cache: dict[str, Any]) -> float:
        """Mean NDCG@10 of the reranker's order on these users (their full known histories)."""
        import torch

        self.model.eval()
        ranked = {}
        with torch.no_grad():
            for user in users:
                if user not in cache:
                    cache[user] = rec.candidates(user, self.config.n_candidates)
                found = cache[user]
                ranked[user] = self.reranker.run([rec.catalog[i] for i in found.history], found).ranked_item_ids()
        self.model.train()
        return score_users(ranked, targets).ndcg10 if ranked else 0.0

    # ------------------------------------------------------------------ state

    def save_adapter(self, folder: Path) -> Path:
        self.model.save_pretrained(folder)
        return folder

    def load_adapter_weights(self, folder: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(self.model, load_file(str(folder / "adapter_model.safetensors")))

    def save_merged(self, adapter: Path, folder: Path, dtype_name: str | None) -> Path:
        """The base model with the adapter merged, and the tokenizer: a plain folder vLLM serves."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        n_params = sum(p.numel() for p in self.model.parameters())
        dtype = (torch.float32 if n_params < 1e9 else self.dtype) if dtype_name is None else \
            resolve_training_dtype(dtype_name, torch.device("cpu"))
        base = AutoModelForCausalLM.from_pretrained(self.backend.model_path, dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
        merged.to(dtype)
        if folder.exists():
            shutil.rmtree(folder)
        merged.save_pretrained(folder)
        self.backend.tokenizer.save_pretrained(folder)
        del base, merged
        return folder


def _as_candidate(item: Any) -> Any:
    from promptrec.retrieval.schema import Candidate

    return Candidate(item_id=item.item_id, title=item.display_title(), text=item.text(), fused_score=0.0, rank=1)


def _peak_memory_mb(device: Any) -> float:
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_bytes() / 2**20


class TrainResult(BaseModel):
    folder: Path
    manifest: AdapterManifest
    resumed_from: int = 0


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str))


def train_ranker(
    rec: "Recommender",
    validation_targets: dict[str, str],
    settings: "Settings",
    config: TuningConfig,
    out_dir: Path,
    *,
    key: AdapterKey,
    fresh: bool = False,
    progress: ProgressFn | None = None,
    on_eval: Callable[[RankerTrainer, int], None] | None = None,
) -> TrainResult:
    """Tune the generator on ``rec``'s histories (the training split) and save the adapter,
    the merged folder and the manifest in ``out_dir``; checkpoints in ``out_dir/checkpoint``.

    ``rec`` must be the recommender over the training split (its retriever makes the
    candidates); ``validation_targets`` (user → the item after their training history) gives
    the early-stopping users. ``on_eval(trainer, examples_seen)`` runs after each evaluation.
    """
    run = _TrainingRun(rec, validation_targets, settings, config, Path(out_dir), key, fresh, progress, on_eval)
    run.train()
    return run.finish()


class _TrainingRun:
    """One `train_ranker` call: the trainer, its checkpoint folder, the example pool and stats."""

    def __init__(self, rec: "Recommender", validation_targets: dict[str, str], settings: "Settings",
                 config: TuningConfig, out_dir: Path, key: AdapterKey, fresh: bool,
                 progress: ProgressFn | None, on_eval: Callable[[RankerTrainer, int], None] | None):
        from promptrec.assets import resolve_model

        self.started = time.perf_counter()
        self.rec, self.validation_targets, self.settings = rec, validation_targets, settings
        self.out_dir, self.key, self.progress, self.on_eval = out_dir, key, progress, on_eval
        self.ckpt = out_dir / "checkpoint"
        if fresh and self.ckpt.exists():
            shutil.rmtree(self.ckpt)
        self.ckpt.mkdir(parents=True, exist_ok=True)
        # the prompts are rendered with the settings' domain words, as `make_reranker` serves them
        self.config = config = config.model_copy(update={"domain": settings.resolved_domain().template_vars()})
        self.trainer = RankerTrainer(resolve_model(settings.generator, settings), str(settings.generator), config,
                                     settings.prompts_dir)
        if self.trainer.template.hash != key.template_hash:
            raise AdapterMismatchError(
                f"template {self.trainer.template.name} renders as {self.trainer.template.hash} with these settings' "
                f"domain words, but the adapter key says {key.template_hash}: build the key from tuning_template(settings)"
            )
        self.stats = TrainStats(device=str(self.trainer.device), dtype=str(self.trainer.dtype).replace("torch.", ""))
        self.resumed = self._resume()
        positions = example_positions(rec.histories, config.seed, config.min_prefix)
        if not positions:
            raise PromptrecError("no training examples: every training history is shorter than min_prefix + 1")
        self.pool = positions[: config.examples]
        eval_users = sorted(u for u in validation_targets if u in rec.histories)
        if config.eval_users < len(eval_users):
            eval_users = sorted(random.Random(config.seed + 1).sample(eval_users, config.eval_users))
        self.eval_users = eval_users
        self.eval_cache: dict[str, Any] = {}
        self.total = len(self.pool) * config.epochs

    @property
    def state_file(self) -> Path:
        return self.ckpt / "state.json"

    def _resume(self) -> int:
        """Load the checkpoint of an interrupted run of the same configuration; the examples it had seen."""
        import torch

        if not self.state_file.is_file():
            return 0
        state = json.loads(self.state_file.read_text(encoding="utf-8"))
        if state.get("training_key") != self.config.training_key() or state.get("key") != self.key.model_dump():
            raise PromptrecError(f"{self.ckpt}: a checkpoint of another configuration or data; pass --fresh to start over")
        self.trainer.load_adapter_weights(self.ckpt / "adapter")
        self.trainer.optimizer.load_state_dict(torch.load(self.ckpt / "optimizer.pt", weights_only=True))
        self.stats = TrainStats.model_validate(state["stats"])
        self.stats.device, self.stats.dtype = str(self.trainer.device), str(self.trainer.dtype).replace("torch.", "")
        return self.stats.examples_seen

    def report(self, stage: str, advance: int, of: int) -> None:
        if self.progress:
            self.progress(stage, advance, of)

    def checkpoint(self, loss: float | None) -> bool:
        """Evaluate, keep the best adapter, write the checkpoint; True when training should stop."""
        import torch

        trainer, stats, config = self.trainer, self.stats, self.config
        ndcg = trainer.evaluate(self.rec, self.eval_users, self.validation_targets, self.eval_cache)
        self.report("evaluations", 1, 1 + math.ceil(self.total / config.eval_every))
        stats.evals.append(EvalPoint(examples=stats.examples_seen, ndcg=ndcg, loss=loss))
        if stats.zero_shot_ndcg is None:
            stats.zero_shot_ndcg = ndcg
        if stats.best_ndcg is None or ndcg > stats.best_ndcg + 1e-9:
            stats.best_ndcg, stats.best_examples = ndcg, stats.examples_seen
            trainer.save_adapter(self.ckpt / "best")
        if self.on_eval:
            self.on_eval(trainer, stats.examples_seen)
        since_best = sum(1 for e in stats.evals if e.examples > stats.best_examples)
        stop = config.patience is not None and since_best >= config.patience
        stats.stopped_early = stop and stats.examples_seen < self.total
        stats.peak_memory_mb = max(stats.peak_memory_mb, _peak_memory_mb(trainer.device))
        trainer.save_adapter(self.ckpt / "adapter")
        torch.save(trainer.optimizer.state_dict(), self.ckpt / "optimizer.pt")
        _write_json(self.state_file, {"training_key": config.training_key(), "key": self.key.model_dump(),
                                      "stats": stats.model_dump(mode="json")})
        return stop

    def _next_rows(self) -> list[_Row]:
        """The rows of the next example of the seeded sequence (reshuffled after the first epoch)."""
        config, stats = self.config, self.stats
        epoch, index = divmod(stats.examples_seen, len(self.pool))
        order = list(range(len(self.pool)))
        if epoch:
            random.Random(f"{config.seed}:epoch{epoch}").shuffle(order)
        user, t = self.pool[order[index]]
        example = build_example(self.rec, user, t, config.n_candidates, config.seed)
        rows = self.trainer.rows(example, self.rec.catalog, random.Random(f"{config.seed}:{epoch}:{user}:{t}"))
        stats.mean_prompt_tokens = (stats.mean_prompt_tokens * stats.built + sum(len(r.ids) for r in rows)) / (stats.built + 1)
        stats.built += 1
        stats.inserted += int(example.inserted)
        stats.examples_seen += 1
        return rows

    def _step_optimizer(self) -> None:
        self.trainer.optimizer.step()
        self.trainer.optimizer.zero_grad(set_to_none=True)
        self.stats.optimizer_steps += 1

    def train(self) -> None:
        """Run the examples left (all, or those after a resumed checkpoint), evaluating every
        ``eval_every`` examples; stops early after ``patience`` evaluations without improvement."""
        import torch

        trainer, stats, config, total = self.trainer, self.stats, self.config, self.total
        if not stats.evals:
            self.checkpoint(None)  # the zero-shot score: the adapter starts as the identity
        trainer.model.train()
        self.report("training", stats.examples_seen, total)
        losses: list[float] = []
        stop = stats.stopped_early
        pending: list[_Row] = []
        passes = 0
        while stats.examples_seen < total and not stop:
            pending.extend(self._next_rows())
            if len(pending) >= trainer.batch_size or stats.examples_seen == total:
                tick = time.perf_counter()
                warm = min(1.0, stats.examples_seen / max(1, config.warmup_examples))
                for group in trainer.optimizer.param_groups:
                    group["lr"] = config.lr * warm
                value = trainer.loss(pending) / trainer.accumulation
                value.backward()
                losses.append(float(value.detach()) * trainer.accumulation)
                pending = []
                passes += 1
                if passes % trainer.accumulation == 0 or stats.examples_seen == total:
                    torch.nn.utils.clip_grad_norm_([p for p in trainer.model.parameters() if p.requires_grad], 1.0)
                    self._step_optimizer()
                stats.train_seconds += time.perf_counter() - tick
            self.report("training", 1, total)
            if stats.examples_seen % config.eval_every == 0 or stats.examples_seen == total:
                if passes % trainer.accumulation:  # flush a partial accumulation before evaluating
                    self._step_optimizer()
                    passes = 0
                stop = self.checkpoint(float(np.mean(losses)) if losses else None)
                losses = []
        stats.seconds += time.perf_counter() - self.started
        stats.peak_memory_mb = max(stats.peak_memory_mb, _peak_memory_mb(trainer.device))

    def finish(self) -> TrainResult:
        """Save the best adapter, the merged folder and the manifest in the output folder."""
        best, out_dir = self.ckpt / "best", self.out_dir
        final = out_dir / "adapter"
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(best if best.exists() else self.ckpt / "adapter", final)
        adapter_hash = file_hash(final / "adapter_model.safetensors")
        self.report("merging", 0, 1)
        self.trainer.save_merged(final, out_dir / "merged", self.config.merged_dtype)
        self.report("merging", 1, 1)
        manifest = AdapterManifest(
            key=self.key, template_name=self.trainer.template.name, adapter_hash=adapter_hash,
            model_id=f"{Path(str(self.settings.generator)).name}+lora-{adapter_hash[:8]}", config=self.config,
            stats=self.stats,
        )
        _write_json(out_dir / MANIFEST, manifest.model_dump(mode="json"))
        return TrainResult(folder=out_dir, manifest=manifest, resumed_from=self.resumed)


def rerank_loss(trainer: RankerTrainer, examples: list[TrainingExample], catalog: dict[str, Any], seed: int = 0) -> float:
    """Mean training loss over examples (no gradient), for tests and diagnostics."""
    import torch

    trainer.model.eval()
    with torch.no_grad():
        values = [float(trainer.loss(trainer.rows(e, catalog, random.Random(f"{seed}:{n}")))) for n, e in enumerate(examples)]
    trainer.model.train()
    return float(np.mean(values)) if values else math.nan
