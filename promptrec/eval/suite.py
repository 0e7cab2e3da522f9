"""Evaluation suites: TOML files that declare one run. The named suites ship inside the package
(``promptrec/eval/suites/*.toml``: smoke, ml100k, ml1m, bookcrossing) and are given by name
(``promptrec eval run ml100k``); a suite of your own is given by its path.

    name = "ml100k"                    # default: the file name without .toml
    description = "..."
    seed = 0                           # user samples, ALS, LightFM, permutations, bootstrap

    [data]
    dataset = "movielens-100k"         # a named data set (`promptrec data list`)
    split = "temporal-loo"             # the only protocol: last item = test, second-to-last = validation
    tie_rule = "id"                    # same-timestamp order: "id" (item id, LlamaRec's) or "hash"
    tie_seed = 0                       # "hash": the seed of the hash of (timestamp, user, item)
    users = "all"                      # evaluated test users: "all" or a seeded sample size
    min_rating = 4.0                   # optional implicit-feedback threshold
    log_users = 40                     # optional: shrink the log to a seeded sample of users (smoke runs)
    k_core = [5, 5]                    # optional: [user_k, item_k] core of the log, applied before the split
    # Files of your own instead of a named data set (paths relative to the working directory;
    # the options are those of `promptrec.data.load_catalog` / `load_interactions`):
    # name = "shop"
    # catalog = { path = "examples/shop/catalog.jsonl", text_fields = ["category", "brand"] }
    # interactions = { path = "examples/shop/events.jsonl", timestamp_field = "time" }
    # A log without timestamps (or with all equal) has no last item: the split is then a
    # seeded random hold-out per user (the suite's seed), stated in the manifest and summary.

    [protocol]
    ks = [10]                          # cut-offs; the first is the headline
    metrics = ["ndcg", "recall", "mrr", "precision", "f1"]   # also "hr" (= recall with one target)
    n_candidates = 20                  # retrieved candidates an LLM reranks
    bootstrap = 1000                   # resamples for the confidence intervals
    confidence = 0.95

    [calibration]
    enabled = true                     # fit on the validation split; report before/after
    users = 200                        # validation users to fit on: "all" or a seeded sample size
    bins = 10                          # reliability diagram / ECE bins

    [grid]                             # LLM rankers: templates x models x backends
    templates = ["letters", "yesno"]   # template names (`promptrec prompts list`) or paths to .j2 files
    strategies = []                    # keep only templates declaring one of these (empty: all)
    models = ["smollm2-135m-instruct"]
    backends = ["transformers"]
    users = "all"                      # LLM rankers on a seeded sample of the evaluated users
    permutations = 3                   # letters: candidate orders averaged (default: settings)

    [baselines]
    rankers = ["popularity", "retrieval", "als", "lightfm"]
    optional = ["lightfm"]             # skipped (and reported) when the package is missing, except when CI=true
    [baselines.als]
    factors = 64
    [baselines.lightfm]
    no_components = 64

    [explain]                          # "why this item?" on a seeded sample of the evaluated users
    users = 0                          # 0: none; else the top served item of that many users is
    template = "grounded"              # explained, and its faithfulness measured (summary: Explanations)
    trials = 3                         # random removals compared with removing the cited items

    [settings]                         # overrides of promptrec.config.Settings for this run
    retrieval = { weights = { transitions = 1.0, behaviour = 0.5, text = 0.1 } }

A template declares its own scoring strategy, so the grid's "strategies" axis is a filter
over the templates. The tie rule is the data's, not a setting: it is given in [data] and
becomes the run's `Settings.split` (histories, index and split all follow it); [settings]
may not set `split` itself.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from promptrec.config import CatalogFile, LogFile, RetrievalSettings, TieRule
from promptrec.errors import PromptrecError
from promptrec.keys import ArtifactKey
from promptrec.metrics import RANKING_METRICS

__all__ = ["BASELINES", "Suite", "SuiteError", "load_suite"]

BASELINES = ("popularity", "retrieval", "als", "lightfm")
UserCount = int | Literal["all"]


class SuiteError(PromptrecError):
    """A suite file cannot be read or does not validate; the message names the file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _positive_or_all(value: Any) -> Any:
    if value != "all" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError('must be "all" or a positive integer')
    return value


class DataSpec(_Strict):
    dataset: str = "movielens-100k"
    split: Literal["temporal-loo"] = "temporal-loo"
    tie_rule: TieRule = "id"
    tie_seed: int = 0
    users: UserCount = "all"
    min_rating: float | None = None
    log_users: int | None = Field(default=None, ge=3)
    k_core: tuple[int, int] | None = None
    # The new-user scenario: each evaluated user's history (in the index's log too) is their
    # first N events and their target the event after them; the other users keep their logs.
    # Evaluate a sample (`users`), so that the index still learns from established users.
    new_users: int | None = Field(default=None, ge=1)
    # The new-item scenario (item cold start): the latest share of the interacted items to
    # appear in the log are new. Every event with them leaves every index's log (their catalog
    # text stays); the evaluated users are those whose test target is a new item, and their
    # histories lose their events with new items. Needs timestamps.
    new_items: float | None = Field(default=None, gt=0, lt=1)
    name: str | None = None  # files of your own: the data's name (default: the log file's stem)
    catalog: CatalogFile | None = None
    interactions: LogFile | None = None

    @field_validator("users", mode="before")
    @classmethod
    def _users(cls, v: Any) -> Any:
        return _positive_or_all(v)

    @model_validator(mode="after")
    def _files(self) -> "DataSpec":
        if (self.catalog is None) != (self.interactions is None):
            raise ValueError("[data]: give both catalog and interactions files, or neither")
        if self.new_users and self.new_items:
            raise ValueError("[data]: new_users and new_items are two scenarios; give one per suite")
        return self


class ProtocolSpec(_Strict):
    ks: list[int] = Field(default_factory=lambda: [10], min_length=1)
    metrics: list[str] = Field(default_factory=lambda: ["ndcg", "recall", "mrr", "precision", "f1"], min_length=1)
    n_candidates: int = Field(default=20, ge=1)
    bootstrap: int = Field(default=1000, ge=10)
    confidence: float = Field(default=0.95, gt=0, lt=1)

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v):
            raise ValueError("every k must be >= 1")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in RANKING_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(RANKING_METRICS)}")
        return v

    @property
    def list_length(self) -> int:
        return max(self.ks)


class CalibrationSpec(_Strict):
    enabled: bool = True
    users: UserCount = 200
    bins: int = Field(default=10, ge=2)
    l2: float = Field(default=1e-4, ge=0)

    @field_validator("users", mode="before")
    @classmethod
    def _users(cls, v: Any) -> Any:
        return _positive_or_all(v)


class GridSpec(_Strict):
    templates: list[str] = Field(default_factory=list)
    strategies: list[Literal["letters", "likelihood", "yesno"]] = Field(default_factory=list)
    models: list[str] = Field(default_factory=lambda: ["smollm2-135m-instruct"])
    backends: list[Literal["transformers", "vllm-engine", "vllm-server"]] = Field(
        default_factory=lambda: ["transformers"]
    )
    users: UserCount = "all"
    permutations: int | None = Field(default=None, ge=1)
    history_items: int | None = Field(default=None, ge=0)
    timeout_s: float | None = Field(default=None, gt=0)

    @field_validator("users", mode="before")
    @classmethod
    def _users(cls, v: Any) -> Any:
        return _positive_or_all(v)


class ALSParams(_Strict):
    """The ALS baseline's parameters; defaults: the behaviour source's (`RetrievalSettings.als_*`)."""

    factors: int = RetrievalSettings.model_fields["als_factors"].default
    regularization: float = RetrievalSettings.model_fields["als_regularization"].default
    alpha: float = RetrievalSettings.model_fields["als_alpha"].default
    iterations: int = RetrievalSettings.model_fields["als_iterations"].default


class LightFMParams(_Strict):
    no_components: int = 64
    learning_rate: float = 0.05
    epochs: int = 30
    max_sampled: int = 10
    item_alpha: float = 0.0
    user_alpha: float = 0.0


class BaselineSpec(_Strict):
    # "calibrated-retrieval": what ranker.mode = "retrieval" serves (no LLM)
    rankers: list[Literal["popularity", "retrieval", "calibrated-retrieval", "als", "lightfm"]] = Field(
        default_factory=lambda: ["popularity", "retrieval", "als"]
    )
    optional: list[str] = Field(default_factory=lambda: ["lightfm"])
    als: ALSParams = Field(default_factory=ALSParams)
    lightfm: LightFMParams = Field(default_factory=LightFMParams)


class SegmentSpec(_Strict):
    """How a report cuts the evaluated users into segments, each with its own metrics, CIs and
    paired deltas against retrieval: by the length of the user's history (``history_edges``:
    the buckets' upper ends, e.g. [5, 20, 100] gives ≤5, 6-20, 21-100, >100 events) and by the
    popularity of the target item among the catalog's items, ranked by training interactions
    (``popularity_cuts``: e.g. [0.2, 0.5] gives head = the top 20%, torso = the next 30%, tail =
    the rest). A segment with fewer than ``min_users`` users is reported as too small."""

    history_edges: list[int] = Field(default_factory=lambda: [5, 20, 100])
    popularity_cuts: list[float] = Field(default_factory=lambda: [0.2, 0.5])
    min_users: int = Field(default=20, ge=2)

    @field_validator("history_edges")
    @classmethod
    def _edges(cls, v: list[int]) -> list[int]:
        if any(e < 1 for e in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"history_edges must be positive and strictly increasing (sorted, no overlap), got {v}")
        return v

    @field_validator("popularity_cuts")
    @classmethod
    def _cuts(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < c < 1 for c in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"popularity_cuts must be strictly increasing shares in (0, 1), got {v}")
        return v


class ExplainSpec(_Strict):
    """"Why this item?" in the run (`promptrec.eval.explanations`): the top item served in
    retrieval mode to a seeded sample of ``users`` evaluated users (0: none) is explained with
    the settings' explainer and ``template``, and its faithfulness measured with ``trials``
    random removals beside the cited one."""

    users: int = Field(default=0, ge=0)
    template: str = "grounded"
    trials: int = Field(default=3, ge=1)


class Suite(_Strict):
    """One evaluation run, as declared in a suite file."""

    name: str
    description: str = ""
    seed: int = 0
    data: DataSpec = Field(default_factory=DataSpec)
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    grid: GridSpec = Field(default_factory=GridSpec)
    baselines: BaselineSpec = Field(default_factory=BaselineSpec)
    segments: SegmentSpec = Field(default_factory=SegmentSpec)
    explain: ExplainSpec = Field(default_factory=ExplainSpec)
    settings: dict[str, Any] = Field(default_factory=dict)
    source: str = Field(default="", exclude=True)  # the file's text, as read

    @model_validator(mode="after")
    def _check(self) -> "Suite":
        if not self.baselines.rankers and not self.grid.templates and not self.explain.users:
            raise ValueError("the suite runs nothing: no baselines and no templates")
        if "split" in self.settings:
            raise ValueError("[settings] may not set split: give the tie rule as [data] tie_rule (and tie_seed)")
        return self

    def with_overrides(self, *, tie_rule: str | None = None, tie_seed: int | None = None,
                       users: UserCount | None = None, llm_users: UserCount | None = None) -> "Suite":
        """This suite with command-line overrides applied and validated (another digest, so another
        run folder); None leaves a value as the file has it."""
        data = {k: v for k, v in (("tie_rule", tie_rule), ("tie_seed", tie_seed), ("users", users)) if v is not None}
        grid = {"users": llm_users} if llm_users is not None else {}
        if not data and not grid:
            return self
        raw = self.model_dump(exclude={"source"})
        raw["data"].update(data)
        raw["grid"].update(grid)
        try:
            suite = Suite.model_validate(raw)
        except ValidationError as exc:
            raise SuiteError(f"suite {self.name}: invalid override:\n{exc}") from exc
        return suite.model_copy(update={"source": self.source})

    @property
    def digest(self) -> str:
        """sha256 of the suite's non-default values (what a run folder is tied to): comments,
        key order and a new optional field in a later version do not change it."""
        return hashlib.sha256(self.model_dump_json(exclude_defaults=True).encode()).hexdigest()[:16]

    def key(self) -> SuiteKey:
        """The suite's values as an artifact key (to say how two suites differ)."""
        return SuiteKey(suite=json.loads(self.model_dump_json(exclude={"source"})))


class SuiteKey(ArtifactKey):
    """What a run folder is tied to: the non-default values of the suite it ran (`Suite.digest`
    is their short form)."""

    suite: dict[str, Any]


def parse_suite(text: str, name: str, origin: str = "<string>") -> Suite:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{origin}: not valid TOML: {exc}") from exc
    if not data:  # a 0-byte or comments-only file would otherwise run the whole default suite
        raise SuiteError(f"{origin}: the suite is empty; give at least its [data] section (see the smoke suite)")
    data.setdefault("name", name)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(f"{origin}: invalid suite:\n{exc}") from exc
    return suite.model_copy(update={"source": text})


def named_suites() -> dict[str, Path]:
    """The suites shipped with promptrec, by name."""
    folder = Path(str(resources.files("promptrec.eval") / "suites"))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def suite_path(name_or_path: str | Path) -> Path:
    """A suite file from a path, or the shipped suite of that name ("ml100k" or "ml100k.toml")."""
    path = Path(name_or_path)
    if path.is_file() or path.parent != Path("."):
        return path
    named = named_suites()
    stem = path.name.removesuffix(".toml")
    if stem in named:
        return named[stem]
    return path  # load_suite names it as a file that cannot be read


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file (or a shipped suite by name, see `named_suites`); unknown
    keys are errors (a typo must not pass silently)."""
    path = suite_path(path)
    if not path.is_file():
        raise SuiteError(f"cannot read suite {path}: no such file, and no shipped suite of that name "
                         f"(shipped: {', '.join(named_suites())})")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(f"cannot read suite {path}: {exc}") from exc
    return parse_suite(text, path.stem, str(path))
