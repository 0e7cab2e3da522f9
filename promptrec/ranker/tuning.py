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

The result lives beside the index, ``<index_dir>/ranker/<template>-<generator>/``:
``adapter/`` (peft), ``merged/`` (the merged weights with the tokenizer, the folder vLLM
serves) and ``manifest.json``, keyed (`AdapterKey`) to the base model, template hash, data and
retriever fingerprints. `resolve_tuned` finds it for ``ranker.adapter = "auto"`` (or a path)
and refuses a mismatched one with the command that retrains.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from promptrec.errors import IndexMismatchError, PromptrecError
from promptrec.paths import atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.config import Settings
    from promptrec.ranker.prompts import RerankTemplate
    from promptrec.recommender import Recommender

FORMAT = "promptrec.ranker-adapter/1"
MANIFEST = "manifest.json"
ProgressFn = Callable[[str, int, int], None]


class AdapterMismatchError(IndexMismatchError):
    """A saved adapter was trained for another base model, template, data set or retriever."""


class AdapterNotFoundError(PromptrecError):
    """``ranker.adapter`` names a folder that holds no trained adapter."""


# --------------------------------------------------------------------------- configuration


class TuningConfig(BaseModel):
    """What one fine-tuning run does. ``None`` fields follow the device (see `resolved`)."""

    template: str = "letters"
    examples: int = 256  # training examples (prefix, next item) per epoch
    epochs: int = 1
    n_candidates: int = 20
    history_items: int = 10
    max_item_chars: int = 200
    min_prefix: int = 1  # shortest history prefix used as an example
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_examples: int = 16
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    batch_size: int | None = None  # examples per forward pass; None: 1 on CPU, 8 on CUDA
    accumulation: int | None = None  # forward passes per optimiser step; None: 8 / batch_size (>= 1)
    yesno_negatives: int = 1
    eval_every: int = 64  # examples between evaluations (and checkpoints)
    eval_users: int = 32  # validation users scored by NDCG@10 for early stopping
    patience: int | None = 3  # evaluations without improvement before stopping; None: never stop early
    permutations: int = 1  # letters: candidate orders averaged when evaluating
    candidate_order: Literal["served", "shuffled"] = "served"  # letters: the order candidates are trained in
    seed: int = 0
    device: str = "auto"
    dtype: str | None = None  # None: bf16 on CUDA (fp16 without bf16), bf16 on CPUs with bf16, else fp32
    merged_dtype: str | None = None  # merged/ folder; None: float32 under 1B parameters, else the training dtype
    # The domain words the template is rendered with (`Settings.resolved_domain().template_vars()`):
    # they are part of the prompt, so of the template hash the adapter is keyed to.
    domain: dict[str, Any] = Field(default_factory=lambda: _generic_domain_vars())

    def training_key(self) -> str:
        """Identity of what changes the trajectory (a resumed run must match it)."""
        fixed = self.model_dump(exclude={"examples", "epochs", "eval_every", "eval_users", "patience",
                                         "permutations", "merged_dtype", "device"})
        return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _generic_domain_vars() -> dict[str, Any]:
    from promptrec.config import Domain

    return Domain().template_vars()


def tuning_template(settings: "Settings", template: str | None = None) -> "RerankTemplate":
    """The rerank template as served: loaded and bound to the settings' domain words."""
    from promptrec.ranker.prompts import load_template

    return load_template(template or settings.ranker.template).with_domain(settings.resolved_domain())


def resolve_training_dtype(dtype: str | None, device: Any) -> Any:
    """The training dtype: as given, else ``promptrec.hardware``'s choice for the device (bf16 on
    CUDA where supported, else fp16; bf16 on CPUs with a bf16 path, else fp32)."""
    from promptrec.ranker.backends.transformers_backend import resolve_torch_dtype

    return resolve_torch_dtype(dtype, device)


# --------------------------------------------------------------------------- keys and manifest


class AdapterKey(BaseModel):
    """What an adapter is valid for; any difference means retrain."""

    model_config = ConfigDict(frozen=True)

    base_model: str
    template_hash: str
    strategy: str
    data_fingerprint: str
    retriever_fingerprint: str

    def differences(self, other: "AdapterKey") -> list[tuple[str, str, str]]:
        return [(name, getattr(self, name), getattr(other, name)) for name in type(self).model_fields
                if getattr(self, name) != getattr(other, name)]


class EvalPoint(BaseModel):
    examples: int
    ndcg: float  # validation NDCG@10 of the reranker at this point
    loss: float | None = None  # mean training loss since the previous point


class TrainStats(BaseModel):
    examples_seen: int = 0
    optimizer_steps: int = 0
    inserted: int = 0  # examples whose true item retrieval missed (placed at a random position)
    built: int = 0  # examples built
    mean_prompt_tokens: float = 0.0
    best_ndcg: float | None = None
    best_examples: int = 0
    zero_shot_ndcg: float | None = None
    evals: list[EvalPoint] = Field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0  # wall time of the run, evaluations included
    train_seconds: float = 0.0  # forward, backward and optimiser steps only
    peak_memory_mb: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def inserted_rate(self) -> float:
        return self.inserted / self.built if self.built else 0.0


class AdapterManifest(BaseModel):
    format: str = FORMAT
    key: AdapterKey
    template_name: str
    adapter_hash: str
    model_id: str  # what backends report: <base>+lora-<hash>; calibration keys include it
    config: TuningConfig
    stats: TrainStats
    merged: str | None = "merged"
    created_at: float = Field(default_factory=time.time)


def data_fingerprint(index_manifest: Any) -> str:
    """The catalog and interaction log an index serves (its manifest's fingerprints)."""
    raw = f"{index_manifest.catalog_fingerprint}:{index_manifest.interactions_fingerprint}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def retriever_fingerprint(settings: "Settings") -> str:
    """Retrieval settings, encoder and candidate count: what decides the candidate lists."""
    raw = json.dumps({"retrieval": settings.retrieval.model_dump(mode="json"), "encoder": settings.encoder,
                      "n_candidates": settings.n_candidates}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def adapter_dir(settings: "Settings", template: str | None = None) -> Path:
    """Where `promptrec train ranker` saves the adapter for a template: beside the index."""
    from promptrec.ranker.prompts import load_template

    name = load_template(template or settings.ranker.template).name
    return settings.resolved_index_dir() / "ranker" / _slug(f"{name}-{Path(str(settings.generator)).name}")


def _read_index_manifest(settings: "Settings") -> Any | None:
    from promptrec.retrieval.index import MANIFEST as INDEX_MANIFEST, IndexManifest

    path = settings.resolved_index_dir() / INDEX_MANIFEST
    if not path.is_file():
        return None
    return IndexManifest.model_validate_json(path.read_text(encoding="utf-8"))


def expected_key(settings: "Settings", template: "RerankTemplate", index_manifest: Any) -> AdapterKey:
    return AdapterKey(
        base_model=str(settings.generator),
        template_hash=template.hash,
        strategy=template.strategy,
        data_fingerprint=data_fingerprint(index_manifest),
        retriever_fingerprint=retriever_fingerprint(settings),
    )


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class TunedModel:
    """A trained adapter found for the current settings."""

    folder: Path
    manifest: AdapterManifest

    @property
    def adapter_path(self) -> Path:
        return self.folder / "adapter"

    @property
    def merged_path(self) -> Path:
        if not self.manifest.merged or not (self.folder / self.manifest.merged / "config.json").is_file():
            raise AdapterNotFoundError(
                f"{self.folder}: no merged model folder for vLLM; retrain with `promptrec train ranker "
                f"--template {self.manifest.template_name}` (it writes merged/)"
            )
        return self.folder / self.manifest.merged

    @property
    def model_id(self) -> str:
        return self.manifest.model_id


def retrain_command(template_name: str) -> str:
    return f"promptrec train ranker --template {template_name}"


def load_tuned(folder: str | Path, expected: AdapterKey | None = None) -> TunedModel:
    """Read a saved adapter folder; with ``expected``, refuse one trained for another setup."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise AdapterNotFoundError(f"{folder}: no {MANIFEST}; train one with `promptrec train ranker`")
    try:
        manifest = AdapterManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise PromptrecError(f"{path}: not a readable adapter manifest: {exc}") from exc
    if manifest.format != FORMAT:
        raise PromptrecError(f"{path}: format {manifest.format!r}, expected {FORMAT!r}")
    weights = folder / "adapter" / "adapter_model.safetensors"
    if not weights.is_file() or file_hash(weights) != manifest.adapter_hash:
        raise AdapterMismatchError(
            f"{weights}: missing or not the weights the manifest names (hash {manifest.adapter_hash}); "
            f"retrain with `{retrain_command(manifest.template_name)}`"
        )
    if expected is not None:
        diffs = manifest.key.differences(expected)
        if diffs:
            what = "; ".join(f"{name}: trained for {have!r}, now {want!r}" for name, have, want in diffs)
            raise AdapterMismatchError(
                f"the tuned ranker in {folder} does not match the current setup: {what}. Retrain it with "
                f"`{retrain_command(manifest.template_name)}`, or set ranker.adapter = \"none\" "
                "(PROMPTREC_RANKER__ADAPTER=none) to rerank with the base model."
            )
    return TunedModel(folder, manifest)


def resolve_tuned(settings: "Settings", template: str | None = None) -> TunedModel | None:
    """The adapter ``settings.ranker.adapter`` asks for: "auto" (the one beside the index, if
    any), a folder, or "none"/None. A mismatched adapter raises `AdapterMismatchError`."""

    choice = settings.ranker.adapter
    if choice is None or str(choice).strip().lower() in ("", "none", "off"):
        return None
    loaded = tuning_template(settings, template)
    if str(choice).strip().lower() == "auto":
        folder = adapter_dir(settings, template)
        if not (folder / MANIFEST).is_file():
            return None
    else:
        folder = Path(choice).expanduser()
        if not (folder / MANIFEST).is_file():
            raise AdapterNotFoundError(
                f"ranker.adapter = {str(choice)!r}: no {MANIFEST} there; train one with "
                f"`{retrain_command(loaded.name)}` or set ranker.adapter = \"auto\""
            )
    index_manifest = _read_index_manifest(settings)
    if index_manifest is None:
        raise AdapterMismatchError(
            f"the tuned ranker in {folder} needs the index it was trained for, and "
            f"{settings.resolved_index_dir()} has none: run `promptrec index`, then `{retrain_command(loaded.name)}`"
        )
    return load_tuned(folder, expected_key(settings, loaded, index_manifest))


def check_template(backend: Any, template: "RerankTemplate") -> None:
    """A tuned backend serves the template it was trained with only."""
    manifest = getattr(backend, "adapter", None)
    if manifest is not None and manifest.key.template_hash != template.hash:
        raise AdapterMismatchError(
            f"the generator {backend.model_id} was tuned for template {manifest.template_name} "
            f"({manifest.key.template_hash}), not {template.name} ({template.hash}); "
            f"train one for it with `{retrain_command(template.name)}` or set ranker.adapter = \"none\""
        )


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

    def __init__(self, model_path: str | Path, model_id: str, config: TuningConfig):
        import torch
        from peft import LoraConfig, get_peft_model

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
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
        self.backend.model = get_peft_model(self.backend.model, lora)
        self.model = self.backend.model
        self.template = load_template(config.template).with_domain(config.domain)
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
        from promptrec.ranker.strategies import build_letters_prompts, build_likelihood_prompts, build_yesno_prompts

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

        from promptrec.eval.metrics import ndcg_at_k

        self.model.eval()
        values = []
        with torch.no_grad():
            for user in users:
                if user not in cache:
                    cache[user] = rec.candidates(user, self.config.n_candidates)
                found = cache[user]
                result = self.reranker.run([rec.catalog[i] for i in found.history], found)
                values.append(ndcg_at_k(result.ranked_item_ids(), targets[user], 10))
        self.model.train()
        return float(np.mean(values)) if values else 0.0

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
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    import torch

    from promptrec.assets import resolve_model

    started = time.perf_counter()
    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoint"
    if fresh and ckpt.exists():
        shutil.rmtree(ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    # the prompts are rendered with the settings' domain words, as `make_reranker` serves them
    config = config.model_copy(update={"domain": settings.resolved_domain().template_vars()})
    trainer = RankerTrainer(resolve_model(settings.generator, settings), str(settings.generator), config)
    if trainer.template.hash != key.template_hash:
        raise AdapterMismatchError(
            f"template {trainer.template.name} renders as {trainer.template.hash} with these settings' domain "
            f"words, but the adapter key says {key.template_hash}: build the key from tuning_template(settings)"
        )
    stats = TrainStats(device=str(trainer.device), dtype=str(trainer.dtype).replace("torch.", ""))
    state_file = ckpt / "state.json"
    resumed = 0
    if state_file.is_file():
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if state.get("training_key") != config.training_key() or state.get("key") != key.model_dump():
            raise PromptrecError(
                f"{ckpt}: a checkpoint of another configuration or data; pass --fresh to start over"
            )
        trainer.load_adapter_weights(ckpt / "adapter")
        trainer.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        stats = TrainStats.model_validate(state["stats"])
        stats.device, stats.dtype = str(trainer.device), str(trainer.dtype).replace("torch.", "")
        resumed = stats.examples_seen

    positions = example_positions(rec.histories, config.seed, config.min_prefix)
    if not positions:
        raise PromptrecError("no training examples: every training history is shorter than min_prefix + 1")
    pool = positions[: config.examples]
    eval_users = sorted(u for u in validation_targets if u in rec.histories)
    if config.eval_users < len(eval_users):
        eval_users = sorted(random.Random(config.seed + 1).sample(eval_users, config.eval_users))
    eval_cache: dict[str, Any] = {}
    total = len(pool) * config.epochs
    best = ckpt / "best"

    def report(stage: str, advance: int, of: int) -> None:
        if progress:
            progress(stage, advance, of)

    def checkpoint(loss: float | None) -> bool:
        """Evaluate, keep the best adapter, write the checkpoint; True when training should stop."""
        ndcg = trainer.evaluate(rec, eval_users, validation_targets, eval_cache)
        report("evaluations", 1, 1 + math.ceil(total / config.eval_every))
        stats.evals.append(EvalPoint(examples=stats.examples_seen, ndcg=ndcg, loss=loss))
        if stats.zero_shot_ndcg is None:
            stats.zero_shot_ndcg = ndcg
        if stats.best_ndcg is None or ndcg > stats.best_ndcg + 1e-9:
            stats.best_ndcg, stats.best_examples = ndcg, stats.examples_seen
            trainer.save_adapter(best)
        if on_eval:
            on_eval(trainer, stats.examples_seen)
        since_best = sum(1 for e in stats.evals if e.examples > stats.best_examples)
        stop = config.patience is not None and since_best >= config.patience
        stats.stopped_early = stop and stats.examples_seen < total
        stats.peak_memory_mb = max(stats.peak_memory_mb, _peak_memory_mb(trainer.device))
        trainer.save_adapter(ckpt / "adapter")
        torch.save(trainer.optimizer.state_dict(), ckpt / "optimizer.pt")
        _write_json(state_file, {"training_key": config.training_key(), "key": key.model_dump(),
                                 "stats": stats.model_dump(mode="json")})
        return stop

    if not stats.evals:
        checkpoint(None)  # the zero-shot score: the adapter starts as the identity
    trainer.model.train()
    report("training", stats.examples_seen, total)
    losses: list[float] = []
    stop = stats.stopped_early
    token_sum = stats.mean_prompt_tokens * stats.built
    pending: list[_Row] = []
    passes = 0
    while stats.examples_seen < total and not stop:
        epoch, index = divmod(stats.examples_seen, len(pool))
        order = list(range(len(pool)))
        if epoch:
            random.Random(f"{config.seed}:epoch{epoch}").shuffle(order)
        user, t = pool[order[index]]
        example = build_example(rec, user, t, config.n_candidates, config.seed)
        rows = trainer.rows(example, rec.catalog, random.Random(f"{config.seed}:{epoch}:{user}:{t}"))
        stats.built += 1
        stats.inserted += int(example.inserted)
        token_sum += sum(len(r.ids) for r in rows)
        stats.mean_prompt_tokens = token_sum / stats.built
        pending.extend(rows)
        stats.examples_seen += 1
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
                trainer.optimizer.step()
                trainer.optimizer.zero_grad(set_to_none=True)
                stats.optimizer_steps += 1
            stats.train_seconds += time.perf_counter() - tick
        report("training", 1, total)
        if stats.examples_seen % config.eval_every == 0 or stats.examples_seen == total:
            if passes % trainer.accumulation:  # flush a partial accumulation before evaluating
                trainer.optimizer.step()
                trainer.optimizer.zero_grad(set_to_none=True)
                stats.optimizer_steps += 1
                passes = 0
            stop = checkpoint(float(np.mean(losses)) if losses else None)
            losses = []
    stats.seconds += time.perf_counter() - started
    stats.peak_memory_mb = max(stats.peak_memory_mb, _peak_memory_mb(trainer.device))

    final = out_dir / "adapter"
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(best if best.exists() else ckpt / "adapter", final)
    adapter_hash = file_hash(final / "adapter_model.safetensors")
    report("merging", 0, 1)
    trainer.save_merged(final, out_dir / "merged", config.merged_dtype)
    report("merging", 1, 1)
    manifest = AdapterManifest(
        key=key, template_name=trainer.template.name, adapter_hash=adapter_hash,
        model_id=f"{Path(str(settings.generator)).name}+lora-{adapter_hash[:8]}", config=config, stats=stats,
    )
    _write_json(out_dir / MANIFEST, manifest.model_dump(mode="json"))
    return TrainResult(folder=out_dir, manifest=manifest, resumed_from=resumed)


def rerank_loss(trainer: RankerTrainer, examples: list[TrainingExample], catalog: dict[str, Any], seed: int = 0) -> float:
    """Mean training loss over examples (no gradient), for tests and diagnostics."""
    import torch

    trainer.model.eval()
    with torch.no_grad():
        values = [float(trainer.loss(trainer.rows(e, catalog, random.Random(f"{seed}:{n}")))) for n, e in enumerate(examples)]
    trainer.model.train()
    return float(np.mean(values)) if values else math.nan
