"""One settings model: defaults, then a TOML file, then PROMPTREC_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PACKAGE_ROOT = Path(__file__).resolve().parent


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "promptrec"


class SequentialSettings(BaseModel):
    """The trained sequential retriever (promptrec.retrieval.sasrec); any change means retraining.
    It is trained only when `retrieval.weights` gives the "sequential" source a weight above 0."""

    max_len: int = 50  # the last L items a history is encoded from
    hidden: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 60
    eval_every: int = 2  # epochs between validation NDCG@10 evaluations
    patience: int = 3  # evaluations without improvement before stopping
    precision: Literal["auto", "float32", "bfloat16"] = "float32"  # auto: bf16 where the hardware has it


class RetrievalSettings(BaseModel):
    """How candidates are retrieved and fused."""

    # Fusion weights per source (reciprocal-rank fusion); a source with weight 0 is skipped.
    # Chosen on MovieLens-100K's validation split by benchmarks/fusion_weights.py (README).
    weights: dict[str, float] = Field(
        default_factory=lambda: {
            "sequential": 0.5, "transitions": 0.5, "behaviour": 0.25, "text": 0.2, "popularity": 0.0,
        }
    )
    rrf_k: float = 60.0
    pool_size: int = 200  # items each source contributes to the fusion
    seed: int = 0
    als_factors: int = 64
    als_iterations: int = 15
    als_regularization: float = 0.05
    als_alpha: float = 1.0
    transition_window: int = 5
    transition_last_items: int = 5
    transition_recency_decay: float = 0.7  # weight of the k-th most recent item: decay**k
    transition_popularity_damping: float = 0.2  # T[a, b] / (popularity(b) + 1) ** damping
    text_recency_half_life: float = 3.0  # in interactions: an item's weight halves every N items back
    text_history_items: int = 50
    sequential: SequentialSettings = Field(default_factory=SequentialSettings)


class VLLMSettings(BaseModel):
    """vLLM engine and server options (`ranker.backend` = "vllm-engine" or "vllm-server")."""

    dtype: str = "bfloat16"
    max_model_len: int = 4096
    enable_prefix_caching: bool = True
    enforce_eager: bool | None = None  # None: on without a GPU (start-up halves), off with one
    kv_cache_gib: int | None = 1  # CPU KV cache (VLLM_CPU_KVCACHE_SPACE); None: vLLM's choice
    block_size: int | None = None  # None: 32 on CPU (more of a shared prefix is reused), else vLLM's
    max_num_seqs: int = 64
    max_logprobs: int | None = None
    seed: int = 0
    served_model_name: str | None = None  # default: the generator's name
    request_timeout_s: float | None = None  # HTTP client; default ranker.timeout_s
    max_retries: int = 3
    backoff_s: float = 0.5
    api_key: str | None = None
    python: str | None = None  # `promptrec llm serve`: the interpreter with vLLM (default .venv-vllm)
    extra_args: list[str] = Field(default_factory=list)  # more `api_server` flags


class RankerSettings(BaseModel):
    """How the generator reranks candidates (the strategy is declared by the template)."""

    template: str = "letters"  # a name in prompts/rerank/ (without .j2) or a path to a .j2 file
    backend: Literal["transformers", "vllm-engine", "vllm-server"] = "transformers"
    server_url: str = "http://127.0.0.1:8001/v1"  # the OpenAI-compatible server (vllm-server)
    permutations: int = 3  # letters: average over this many candidate orders (position bias)
    history_items: int = 10  # the most recent history items shown in a prompt
    timeout_s: float = 120.0  # past this the result falls back to the retrieval order
    calibrate: bool = True  # use the fitted calibration when one matches; else raw LLM order
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)


class ChromaSettings(BaseModel):
    """Where the vector store lives: an embedded persistent client, or a `chroma run` server."""

    mode: Literal["persistent", "http"] = "persistent"
    host: str = "127.0.0.1"
    port: int = 8000


class Settings(BaseSettings):
    """Every setting promptrec reads. TOML file: $PROMPTREC_CONFIG or ./promptrec.toml."""

    model_config = SettingsConfigDict(
        env_prefix="PROMPTREC_", env_nested_delimiter="__", extra="forbid"
    )

    cache_dir: Path = Field(default_factory=default_cache_dir)
    dataset: str = "movielens-100k"
    encoder: str = "all-minilm-l6-v2"
    generator: str = "smollm2-135m-instruct"
    index_dir: Path | None = None  # default: <cache_dir>/index/<dataset>
    device: str = "auto"  # "cpu", "cuda" or "auto"
    n_candidates: int = 20
    min_rating: float | None = None  # implicit-feedback threshold; None keeps every interaction
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    ranker: RankerSettings = Field(default_factory=RankerSettings)
    chroma: ChromaSettings = Field(default_factory=ChromaSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("PROMPTREC_CONFIG", "promptrec.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def resolved_index_dir(self) -> Path:
        return self.index_dir or self.cache_dir / "index" / self.dataset
