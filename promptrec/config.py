"""One settings model: defaults, then a TOML file, then PROMPTREC_* environment variables."""

from __future__ import annotations

import json
import math
import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from promptrec.domain import DOMAIN_PRESETS, Domain, domain_preset_of
from promptrec.errors import SettingsError
from promptrec.index_layout import IndexLayout
from promptrec.paths import slug

RETRIEVAL_SOURCES: tuple[str, ...] = ("sequential", "transitions", "behaviour", "text", "popularity")
# PROMPTREC_* variables that are not settings (read by scripts and tests); any other is a typo.
OTHER_ENV_VARS: tuple[str, ...] = ("PROMPTREC_CONFIG", "PROMPTREC_SKIP_VLLM", "PROMPTREC_VLLM_PYTHON")
OTHER_ENV_PREFIXES: tuple[str, ...] = ("PROMPTREC_TEST_", "PROMPTREC_BENCH_")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "promptrec"


# Numeric settings carry their ranges: a 0, a negative or an infinite value is an error that
# names the key, never a silently odd index (pool_size=0 dropped sources; timeout_s=inf overflowed).
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, lt=1)]  # dropout: [0, 1)


class _Section(BaseModel):
    """A settings section: an unknown key is an error (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid")



class SequentialSettings(_Section):
    """The trained sequential retriever (promptrec.retrieval.sasrec); any change means retraining.
    It is trained only when `retrieval.weights` gives the "sequential" source a weight above 0."""

    max_len: PositiveInt = 50  # the last L items a history is encoded from
    hidden: PositiveInt = 64
    layers: PositiveInt = 2
    heads: PositiveInt = 1
    dropout: Fraction = 0.2
    lr: PositiveFloat = 2e-3
    weight_decay: NonNegativeFloat = 0.0
    batch_size: PositiveInt = 128
    max_epochs: PositiveInt = 40
    eval_every: PositiveInt = 2  # epochs between validation NDCG@10 evaluations
    patience: PositiveInt = 3  # evaluations without improvement before stopping
    precision: Literal["auto", "float32", "bfloat16"] = "float32"  # auto: bf16 where the hardware has it

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> SequentialSettings:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


DEFAULT_FUSION_WEIGHTS = {"sequential": 0.5, "transitions": 0.5, "behaviour": 0.25, "text": 0.2, "popularity": 0.0}


class RetrievalSettings(_Section):
    """How candidates are retrieved and fused."""

    # Fusion weights per source (reciprocal-rank fusion); a source with weight 0 is skipped.
    # Served where an index fitted none (see fit_weights), and always when they differ from these defaults.
    # These defaults were chosen on MovieLens-100K's validation split.
    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_FUSION_WEIGHTS))
    # Fit the weights per index: each build holds out every user's last event, refits the
    # behaviour vectors, transitions and popularity without it, ranks a seeded sample of users
    # by every source once and scores each setting of `weight_grid` (NDCG@10); the best is
    # recorded in the index manifest and served. Weights other than the defaults pin them (are
    # served as set), as does fit_weights = false.
    fit_weights: bool = True
    weight_grid: dict[str, list[NonNegativeFloat]] = Field(
        default_factory=lambda: {
            "sequential": [0.0, 0.5, 1.0, 2.0, 3.0], "transitions": [0.0, 0.25, 0.5, 1.0],
            "behaviour": [0.0, 0.25, 0.5], "text": [0.0, 0.1, 0.2],
        }
    )
    fit_weights_users: PositiveInt = 1000  # a seeded sample of the held-out users
    fit_weights_min_users: PositiveInt = 200  # fewer held-out users: the fit is skipped (too noisy)
    rrf_k: NonNegativeFloat = 60.0
    pool_size: PositiveInt = 200  # items each source contributes to the fusion
    # The last N places of a candidate list go to the best text matches among items with no
    # interaction in the indexed log (new items), which the fusion can never rank high: only
    # their text knows them. 0: off.
    new_item_slots: NonNegativeInt = 0
    seed: int = 0
    als_factors: PositiveInt = 64
    als_iterations: PositiveInt = 15
    als_regularization: NonNegativeFloat = 0.05
    als_alpha: PositiveFloat = 1.0
    transition_window: PositiveInt = 5
    transition_last_items: PositiveInt = 5
    transition_recency_decay: Annotated[float, Field(gt=0, le=1)] = 0.7  # weight of the k-th most recent item: decay**k
    transition_popularity_damping: NonNegativeFloat = 0.2  # T[a, b] / (popularity(b) + 1) ** damping
    text_recency_half_life: PositiveFloat = 3.0  # in interactions: an item's weight halves every N items back
    text_history_items: PositiveInt = 50
    sequential: SequentialSettings = Field(default_factory=SequentialSettings)

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(RETRIEVAL_SOURCES))
        if unknown:
            raise ValueError(f"unknown retrieval source(s) {unknown}; the sources are {list(RETRIEVAL_SOURCES)}")
        negative = sorted(name for name, w in weights.items() if not 0 <= w < math.inf)
        if negative:
            raise ValueError(f"weights must be finite and >= 0, got {', '.join(f'{n}={weights[n]}' for n in negative)}")
        if not any(w > 0 for w in weights.values()):
            raise ValueError("every fusion weight is 0: no source would be queried; give at least one a weight > 0")
        return weights

    @field_validator("weight_grid")
    @classmethod
    def _check_grid(cls, grid: dict[str, list[float]]) -> dict[str, list[float]]:
        unknown = sorted(set(grid) - set(RETRIEVAL_SOURCES))
        if unknown:
            raise ValueError(f"unknown retrieval source(s) {unknown}; the sources are {list(RETRIEVAL_SOURCES)}")
        empty = sorted(name for name, values in grid.items() if not values)
        if empty:
            raise ValueError(f"the grid lists no weight for {', '.join(empty)}; give at least one value")
        if not any(w > 0 for values in grid.values() for w in values):
            raise ValueError("every weight in the grid is 0: no setting would query a source")
        return grid

    @property
    def weights_pinned(self) -> bool:
        """The weights are served as set: `fit_weights` is off, or `weights` differ from the defaults."""
        return not self.fit_weights or self.weights != DEFAULT_FUSION_WEIGHTS


class VLLMSettings(_Section):
    """vLLM engine and server options (`ranker.backend` = "vllm-engine" or "vllm-server")."""

    max_model_len: PositiveInt = 4096
    enable_prefix_caching: bool = True
    enforce_eager: bool | None = None  # None: on without a GPU (start-up halves), off with one
    kv_cache_gib: PositiveInt | None = 1  # CPU KV cache (VLLM_CPU_KVCACHE_SPACE); None: vLLM's choice
    block_size: PositiveInt | None = None  # None: 32 on CPU (more of a shared prefix is reused), else vLLM's
    max_num_seqs: PositiveInt = 64
    max_logprobs: PositiveInt | None = None
    seed: int = 0
    served_model_name: str | None = None  # default: the generator's name
    request_timeout_s: PositiveFloat | None = None  # HTTP client; default ranker.timeout_s
    max_retries: NonNegativeInt = 3
    backoff_s: NonNegativeFloat = 0.5
    api_key: str | None = None
    python: str | None = None  # `promptrec llm serve`: the interpreter with vLLM (default: .venv-vllm in the working directory)
    extra_args: list[str] = Field(default_factory=list)  # more `api_server` flags


class RankerSettings(_Section):
    """How the generator reranks candidates (the strategy is declared by the template)."""

    # "llm": retrieval, then the generator reranks (calibrated with the retrieval features);
    # "retrieval": no generator call: the calibration of the retrieval features orders the
    # candidates (`promptrec calibrate` fits it without the LLM), else the retrieval order;
    # "auto": what `promptrec calibrate` decided on validation users (`promptrec.ranker.mode`):
    # the LLM only where it beats the calibrated retrieval features with a CI above 0.
    mode: Literal["llm", "retrieval", "auto"] = "auto"
    template: str = "letters"  # a name in prompts/rerank/ (without .j2) or a path to a .j2 file
    backend: Literal["transformers", "vllm-engine", "vllm-server"] = "transformers"
    # "auto": bf16 on GPUs and on CPUs with AVX512-BF16/AMX, float16 on older GPUs, float32 on
    # AVX2-only CPUs (bf16 ~6x slower there); or float32 | bfloat16 | float16. Every backend.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    server_url: str = "http://127.0.0.1:8001/v1"  # the OpenAI-compatible server (vllm-server)
    permutations: int = Field(3, ge=1)  # letters: average over this many candidate orders (position bias)
    seed: int = 0  # letters: the seed of those candidate orders
    history_items: int = Field(10, ge=0)  # the most recent history items shown in a prompt
    timeout_s: PositiveFloat | None = 120.0  # past this the result falls back to the retrieval order; None: wait
    calibrate: bool = True  # use the fitted calibration when one matches; else raw LLM order
    # The LoRA adapter of `promptrec train ranker`: "auto" (the one beside the index for this
    # template and generator, when trained), a folder, or "none" (the base model).
    adapter: str | None = "auto"
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)


class ExplainSettings(_Section):
    """Who answers "why this item?" questions."""

    # The explainer: a registered generator name; None: the ranker's generator (one model
    # loaded). Another name loads a second model on the same backend kind, without the
    # ranker's LoRA adapter (docs/results/explanations.md measures the choices side by side).
    generator: str | None = None


TieRule = Literal["id", "hash"]


class SplitSettings(_Section):
    """How each user's interactions are ordered (`promptrec.data.preprocess`): same-timestamp
    ties by item id ("id", LlamaRec's order) or by a hash of (timestamp, user, item) seeded by
    `tie_seed` ("hash"). Histories, the retrieval index and the evaluation split all use it."""

    tie_rule: TieRule = "id"
    tie_seed: int = 0


class ChromaSettings(_Section):
    """Where the vector store lives: an embedded persistent client, or a `chroma run` server."""

    mode: Literal["persistent", "http"] = "persistent"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    # A collection of at most this many items is searched exactly: its vectors are read once per
    # process and every similarity is computed, ties in item-id order, so every process and
    # worker ranks alike. A larger one is searched through Chroma's HNSW index (approximate: two
    # processes may disagree near the end of a long list). 0: always HNSW.
    exact_search_max_items: int = Field(default=200_000, ge=0)


class ServeSettings(_Section):
    """The HTTP service (`promptrec serve`)."""

    # Host headers the service answers (DNS rebinding: a web page must not reach a service bound
    # to localhost through a name of its own). Add the names it is deployed under; "*" allows any.
    allowed_hosts: list[str] = Field(default_factory=lambda: ["localhost", "127.0.0.1", "::1"])
    # API keys (`X-API-Key` or `Authorization: Bearer`): with write_key set, POST /events,
    # POST /items and DELETE /users/{id} need it (else 401); with read_key set, every other
    # route but /health and /metrics needs the read or the write key. Unset: open (loopback use).
    # Give them through the environment (PROMPTREC_SERVE__WRITE_KEY), never in a committed file.
    write_key: SecretStr | None = None
    read_key: SecretStr | None = None
    max_body_bytes: int = Field(default=1_000_000, ge=1024)  # a larger request body is a 413
    max_batch: int = Field(default=1000, ge=1)  # events or items in one POST
    # Where conversations live: "store" (the live store: any worker goes on with any of them) or
    # "memory" (the worker that started one; lost when it stops).
    conversations: Literal["store", "memory"] = "store"
    # How long one answer may hold a stored conversation; one whose worker died mid-answer is
    # busy (409) until then.
    conversation_lease_s: float = Field(default=300.0, gt=0)
    # Retrain from the live store every so many seconds when it holds something new (a new
    # index version; the workers switch to it, the old one serves until then). None: never
    # (run `promptrec train retriever` yourself, e.g. from cron).
    retrain_every_s: float | None = Field(default=None, ge=1.0)


class StoreSettings(_Section):
    """The live store of events, catalog entries and erasures written through the API
    (`promptrec.store`)."""

    # None: SQLite in WAL mode, the file live.sqlite in the index folder (one host). Several
    # workers or hosts: a PostgreSQL URL, e.g. "postgresql+psycopg://user:pass@host:5432/promptrec"
    # (give it through PROMPTREC_STORE__URL when it holds a password).
    url: str | None = None


class DomainSettings(BaseModel):
    """What the catalog holds and what users do with it, in the words every prompt uses.

    ``preset`` picks a set of words ("movies", "books", "shop", "news", "music", "generic");
    unset, the named data set's preset is used (MovieLens: "movies"), else "generic". Any
    field given here overrides the preset's. `Settings.resolved_domain()` is the result.
    """

    model_config = ConfigDict(extra="forbid")

    preset: str | None = None
    item: str | None = None  # singular noun: "movie", "book", "product"
    items: str | None = None  # plural noun
    verb_past: str | None = None  # "watched", "bought", "read", "listened to"
    verb_present: str | None = None  # "watch", "buy", "read", "listen to"
    audience: str | None = None  # who consumes items: "viewers", "readers", "shoppers"
    has_year: bool | None = None  # items carry a year, shown as "Title (1995)"
    # More verbs that say a user consumed an item ("saw", "purchased"): the grounding check
    # flags "you <verb> X" when X is not in the user's history.
    extra_verbs: list[str] | None = None

    def resolved(self, default_preset: str = "generic") -> "Domain":
        name = self.preset or default_preset
        if name not in DOMAIN_PRESETS:
            raise ValueError(
                f"domain.preset {name!r} is unknown; known presets: {', '.join(DOMAIN_PRESETS)} "
                "(or leave it unset and give item, items, verb_past, verb_present)"
            )
        base = DOMAIN_PRESETS[name]
        overrides = self.model_dump(exclude_none=True, exclude={"preset"})
        return base.model_copy(update={**overrides, "name": name})


class CatalogFile(BaseModel):
    """A catalog file of your own and how to read it (`promptrec.data.load_catalog`)."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    id_field: str = "item_id"
    title_field: str = "title"
    text_fields: list[str] = Field(default_factory=list)
    genres_field: str | None = None
    year_field: str | None = None
    genre_sep: str = "|"
    delimiter: str | None = None


class LogFile(BaseModel):
    """An interaction log of your own and how to read it (`promptrec.data.load_interactions`)."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    user_field: str = "user_id"
    item_field: str = "item_id"
    rating_field: str | None = None
    timestamp_field: str | None = None
    behaviour_field: str | None = None
    timestamp_format: str | None = None
    delimiter: str | None = None


class DataSettings(BaseModel):
    """Your own catalog and log (both, or neither: then `Settings.dataset` names the data)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None  # the index namespace; default: the log file's name
    catalog: CatalogFile | None = None
    interactions: LogFile | None = None
    skip_bad_rows: bool = False
    k_core: tuple[PositiveInt, PositiveInt] | None = None  # [user_k, item_k], applied after min_rating

    @model_validator(mode="after")
    def _both(self) -> "DataSettings":
        if (self.catalog is None) != (self.interactions is None):
            raise ValueError("data: give both catalog and interactions files, or neither")
        return self

    @property
    def custom(self) -> bool:
        return self.catalog is not None


class RaySettings(_Section):
    """Work on a Ray cluster (`pip install "promptrec[ray]"`): the index build's text encoding
    (`promptrec index --engine ray`). The batch jobs take their cluster on the command line."""

    address: str | None = None  # host:port, ray://host:10001 or "auto"; None: a local cluster for the job
    encode_text: bool = False  # the index build encodes the catalog's text on the cluster
    actors: PositiveInt = 2  # encoder actors (each loads the encoder once)


class Settings(BaseSettings):
    """Every setting promptrec reads. TOML file: $PROMPTREC_CONFIG or ./promptrec.toml."""

    model_config = SettingsConfigDict(
        env_prefix="PROMPTREC_", env_nested_delimiter="__", extra="forbid"
    )

    cache_dir: Path = Field(default_factory=default_cache_dir)
    dataset: str = "movielens-100k"  # a registered name, or a folder of MovieLens-layout files
    encoder: str = "all-minilm-l6-v2"
    generator: str = "smollm2-135m-instruct"
    index_dir: Path | None = None  # default: <cache_dir>/index/<dataset>
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")  # "cpu", "cuda", "cuda:N" or "auto"
    n_candidates: int = Field(20, ge=1)
    # A folder of your own templates (rerank/*.j2, explain/*.j2), looked up by name before the
    # package's; `promptrec prompts copy` starts one from a default.
    prompts_dir: Path | None = None
    min_rating: Annotated[float, Field(allow_inf_nan=False)] | None = None  # implicit-feedback threshold; None keeps every interaction
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    ranker: RankerSettings = Field(default_factory=RankerSettings)
    chroma: ChromaSettings = Field(default_factory=ChromaSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    data: DataSettings = Field(default_factory=DataSettings)  # files of your own instead of `dataset`
    domain: DomainSettings = Field(default_factory=DomainSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    explain: ExplainSettings = Field(default_factory=ExplainSettings)
    ray: RaySettings = Field(default_factory=RaySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        check_environment()
        named = os.environ.get("PROMPTREC_CONFIG")
        toml_file = Path(named or "promptrec.toml")
        if named and not toml_file.is_file():
            raise SettingsError(f"PROMPTREC_CONFIG names {named!r}, which is not a file; fix the path or unset it")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file.is_file():
            check_toml(toml_file)
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def dataset_name(self) -> str:
        """The data's name: `data.name` (or the log file's stem) for files of your own, else `dataset`."""
        if self.data.custom:
            assert self.data.interactions is not None
            return self.data.name or self.data.interactions.path.stem
        return self.dataset

    def resolved_domain(self) -> Domain:
        """The domain words: `domain` over the preset of the named data set (or "generic")."""
        default = "generic" if self.data.custom else domain_preset_of(self.dataset)
        return self.domain.resolved(default)

    def resolved_index_dir(self) -> Path:
        return self.index_dir or self.cache_dir / "index" / slug(self.dataset_name())

    def index_layout(self) -> IndexLayout:
        """The paths inside this settings' index folder."""
        return IndexLayout(self.resolved_index_dir())


def check_toml(path: Path) -> None:
    """Raise SettingsError naming the file and line when ``path`` is not valid TOML."""
    import tomllib

    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: invalid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read the settings file: {exc}") from exc


def _setting_field(model: type[BaseModel], parts: list[str]) -> Any | None:
    """The pydantic field a PROMPTREC_* variable's path names (None: no such setting)."""
    fields = {name.lower(): f for name, f in model.model_fields.items()}
    field = fields.get(parts[0].lower())
    if field is None or len(parts) == 1:
        return field
    for inner in (field.annotation, *typing.get_args(field.annotation)):  # X or Optional[X]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return _setting_field(inner, parts[1:])
    return None  # nested key under a plain value (e.g. weights__x is a typo: use JSON)


def _takes_json(field: Any) -> bool:
    """pydantic-settings reads a section, dict, list or tuple from one variable as JSON."""
    for inner in (field.annotation, *typing.get_args(field.annotation)):
        origin = typing.get_origin(inner) or inner
        if isinstance(origin, type) and (issubclass(origin, (BaseModel, dict, list, tuple))):
            return True
    return False


def check_environment(environ: dict[str, str] | None = None) -> None:
    """Refuse PROMPTREC_* variables that name no setting (e.g. PROMPTREC_RANKER__TEMPLATEE) and
    those whose value must be JSON (a section, a table or a list) but is not, naming the variable."""
    environ = os.environ if environ is None else environ
    unknown = []
    for name, value in environ.items():
        upper = name.upper()
        if not upper.startswith("PROMPTREC_") or upper in OTHER_ENV_VARS or upper.startswith(OTHER_ENV_PREFIXES):
            continue
        field = _setting_field(Settings, upper[len("PROMPTREC_"):].split("__"))
        if field is None:
            unknown.append(name)
        elif _takes_json(field):
            try:
                json.loads(value)
            except ValueError as exc:
                raise SettingsError(
                    f"environment variable {name} must hold JSON (a table like '{{\"text\": 0.2}}' or a list), "
                    f"got {value[:80]!r}: {exc}"
                ) from exc
    if unknown:
        raise SettingsError(
            f"unknown environment variable(s) {', '.join(sorted(unknown))}: no such setting "
            "(nested settings use a double underscore, e.g. PROMPTREC_RANKER__TEMPLATE); unset or correct them"
        )


def describe_validation_error(exc: Exception, source: str = "settings") -> str:
    """One line per problem of a pydantic ValidationError: 'ranker.templatee: Extra inputs are not permitted'."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "(root)"
        problems.append(f"{where}: {error.get('msg')} (got {error.get('input')!r})" if error.get("type") != "extra_forbidden"
                        else f"{where}: unknown key")
    config = os.environ.get("PROMPTREC_CONFIG") or ("promptrec.toml" if Path("promptrec.toml").is_file() else None)
    origin = f" (from {config} or PROMPTREC_* variables)" if config else " (from PROMPTREC_* variables or arguments)"
    return f"invalid {source}{origin}: " + "; ".join(problems)
