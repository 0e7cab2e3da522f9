"""Tuned rankers as serving sees them: where a LoRA adapter lives beside the index, what it is
keyed to, and finding and checking it (`promptrec train ranker` writes them: `promptrec.train.ranker`).

The result of a run lives beside the index, ``<index_dir>/ranker/<template>-<generator>/``:
``adapter/`` (peft), ``merged/`` (the merged weights with the tokenizer, the folder vLLM
serves) and ``manifest.json``, keyed (`AdapterKey`) to the base model, template hash, data and
retriever fingerprints. `resolve_tuned` finds it for ``ranker.adapter = "auto"`` (or a path)
and refuses a mismatched one with the command that retrains.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from promptrec.errors import IndexMismatchError, PromptrecError
from promptrec.keys import ArtifactKey

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.config import Settings
    from promptrec.ranker.prompts import RerankTemplate

FORMAT = "promptrec.ranker-adapter/1"
MANIFEST = "manifest.json"


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
    from promptrec.domain import Domain

    return Domain().template_vars()


def tuning_template(settings: "Settings", template: str | None = None) -> "RerankTemplate":
    """The rerank template as served: loaded and bound to the settings' domain words."""
    from promptrec.ranker.prompts import load_template

    return load_template(template or settings.ranker.template, settings.prompts_dir).with_domain(settings.resolved_domain())


# --------------------------------------------------------------------------- keys and manifest


class AdapterKey(ArtifactKey):
    """What an adapter is valid for; any difference means retrain."""

    base_model: str
    template_hash: str
    strategy: str
    data_fingerprint: str
    retriever_fingerprint: str


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


def adapter_dir(settings: "Settings", template: str | None = None) -> Path:
    """Where `promptrec train ranker` saves the adapter for a template: beside the index."""
    from promptrec.ranker.prompts import load_template

    name = load_template(template or settings.ranker.template, settings.prompts_dir).name
    return settings.index_layout().adapter(name, str(settings.generator))


def _read_index_manifest(settings: "Settings") -> Any | None:
    from promptrec.retrieval.index import read_index_manifest

    return read_index_manifest(settings.resolved_index_dir())


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
        what = manifest.key.describe_differences(expected, "trained")
        if what:
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
