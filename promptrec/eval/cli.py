"""`promptrec eval ...`: run a suite, compare runs, rewrite a report.

Mount it with ``app.add_typer(eval_app, name="eval")``. Then

    promptrec eval ml100k            # = promptrec eval run ml100k
    promptrec eval run ml100k --out runs/ml100k --limit 50
    promptrec eval run ml100k --only baselines            # the LLM rows in a later session
    promptrec eval run ml100k --engine ray --actors 4     # the LLM rows on a Ray actor pool
    promptrec eval run ml100k --tie-rule hash --out runs/ml100k-hash
    promptrec eval compare runs/a runs/b [--a RANKER] [--b RANKER] [--metric ndcg@10] [--json] [--out DIR]
    promptrec eval report runs/ml100k          # recompute summary.{json,md} and the PNGs
    promptrec eval applicability ml100k ml1m bookcrossing runs/shop   # where the LLM helps, one page
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import click
import typer

from promptrec.cli_errors import OneLineErrors


class _DefaultRunGroup(OneLineErrors):
    """`promptrec eval SUITE ...` means `promptrec eval run SUITE ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(
    cls=_DefaultRunGroup,
    help="Offline evaluation: `promptrec eval SUITE` runs a suite (a shipped suite's name, or a file).",
    no_args_is_help=True,
)


@eval_app.command("run")
def run(
    suite: str = typer.Argument(..., help="A shipped suite's name (ml100k, ml100k-new-users, ml100k-new-items, ml1m, bookcrossing, smoke) or a suite file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<suite name>)."),
    fresh: bool = typer.Option(False, "--fresh", help="Start the run folder over instead of continuing it."),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, help="Only N users of each ranker, the first of its seeded order (a seeded sample)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    only: Optional[list[str]] = typer.Option(
        None, "--only", help='Run only this ranker now (repeatable; "baselines" or "llm" for a group, "explain" for the explanations); the rest later.'),
    tie_rule: Optional[str] = typer.Option(None, "--tie-rule", help='Override data.tie_rule: "id" or "hash".'),
    tie_seed: Optional[int] = typer.Option(None, "--tie-seed", help="Override data.tie_seed (the hash rule's seed)."),
    users: Optional[str] = typer.Option(None, "--users", help='Override data.users: "all" or a sample size.'),
    llm_users: Optional[str] = typer.Option(
        None, "--llm-users", help='Override grid.users (the LLM rankers\' users): "all" or a sample size.'),
    batch_users: int = typer.Option(
        8, "--batch-users", min=1, help="Users per grouped LLM call (the vLLM backends batch them); speed only."),
    engine: str = typer.Option(
        "local", "--engine", help='"local", or "ray": the LLM rows on a Ray Data actor pool (the baselines and calibration here).'),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray: join the cluster at host:port, ray://host:10001 or auto (default: start a local one)."),
    actors: int = typer.Option(2, "--actors", min=1, help="Ray: actors in the pool (each loads the model once)."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="Torch threads per worker (this process, or each Ray actor); torch and BLAS alike."),
) -> None:
    """Run (or continue) a suite; writes per-user JSONL, summary.{json,md} and PNGs into the run folder.

    The overrides make another suite (another digest): give it its own --out folder."""
    from promptrec.eval.runner import run_suite
    from promptrec.eval.suite import load_suite

    def count(value: Optional[str]):
        return value if value in (None, "all") else int(value) if value.isdigit() else value

    logging.getLogger("promptrec").setLevel(logging.WARNING)
    loaded = load_suite(suite).with_overrides(tie_rule=tie_rule, tie_seed=tie_seed, users=count(users),
                                              llm_users=count(llm_users))
    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"must be local or ray, got {engine!r}", param_hint="--engine")
    result = run_suite(loaded, out, fresh=fresh, limit=limit, progress=not quiet, only=only,
                       batch_users=batch_users, engine=engine, address=address, actors=actors, threads=threads)
    typer.echo((result.run_dir / "summary.md").read_text(encoding="utf-8"))
    state = "complete" if result.complete else "partial"
    typer.echo(f"{state} run in {result.run_dir} ({result.written} rows written in this session)", err=True)


@eval_app.command("compare")
def compare(
    run_a: Path = typer.Argument(..., help="Run folder A (the reference).", exists=True, file_okay=False),
    run_b: Path = typer.Argument(..., help="Run folder B (may be A itself, with --a and --b)."),
    a: Optional[str] = typer.Option(None, "--a", help="Ranker of run A (default: every ranker both runs have)."),
    b: Optional[str] = typer.Option(None, "--b", help="Ranker of run B (default: the same name as --a)."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", "-m", help="e.g. ndcg@10 (repeatable; default: the suite's)."),
    resamples: Optional[int] = typer.Option(None, "--resamples", min=10, help="Bootstrap resamples (default: the suite's)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Bootstrap seed (default: the suite's)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of Markdown."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write comparison.{md,json,png} (table and chart) here."),
) -> None:
    """Paired differences B − A over the shared users: bootstrap intervals, permutation p-values."""
    from promptrec.eval.compare import compare_runs, render_comparison, write_comparison

    result = compare_runs(run_a, run_b, a, b, metric or None, resamples, seed=seed)
    if out is not None:
        paths = write_comparison(result, out)
        typer.echo(f"wrote {paths['markdown']} and {paths['chart']}", err=True)
    if as_json:
        print(json.dumps(result.model_dump(mode="json"), indent=1))
    else:
        typer.echo(render_comparison(result))


@eval_app.command("applicability")
def applicability_command(
    targets: list[str] = typer.Argument(..., help="Suites (shipped names or files; run first, resumable) or run folders."),
    out: Path = typer.Option(Path("runs/applicability"), "--out", "-o", help="Where the page goes."),
    runs: Path = typer.Option(Path("runs"), "--runs", help="Where the suites' run folders are (runs/<suite name>)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """One page over several scenarios: where each ranker wins, ties or loses against retrieval, per
    segment, and what it costs per user."""
    from promptrec.eval.applicability import applicability, render_applicability, resolve_runs, write_applicability
    from promptrec.eval.runner import run_suite

    logging.getLogger("promptrec").setLevel(logging.WARNING)
    folders = resolve_runs(targets, runs, run=lambda suite, folder: run_suite(suite, folder, progress=not quiet))
    report = applicability(folders)
    paths = write_applicability(report, out)
    typer.echo(render_applicability(report))
    typer.echo(f"wrote {paths['markdown']}", err=True)


@eval_app.command("report")
def report(run_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="A run folder.")) -> None:
    """Recompute a run's summary from its JSONL and rewrite summary.{json,md} and the PNGs."""
    from promptrec.eval.report import summarize, write_report

    paths = write_report(run_dir, summarize(run_dir))
    typer.echo(paths["markdown"].read_text(encoding="utf-8"))
