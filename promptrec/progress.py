"""The one progress-bar helper: a `ProgressFn` (stage, advance, total) drawing one rich bar per
stage on stderr, used by the command line and the evaluation runner alike."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

ProgressFn = Callable[[str, int, int], None]


@contextlib.contextmanager
def progress_bars(width: int = 16, remaining: bool = False) -> Iterator[ProgressFn]:
    """Yield a `ProgressFn`; stage names are cut to ``width``; ``remaining`` adds an ETA column.
    A stage's status after " | " (e.g. "sequential model | epoch 3, loss 6.1") is shown beside
    its bar, and the bar is the stage before it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn(f"{{task.description:<{width}}}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if remaining:
        columns.append(TimeRemainingColumn())
    columns.append(TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        tasks: dict[str, object] = {}

        def report(stage: str, advance: int, total: int) -> None:
            stage, _, status = stage.partition(" | ")
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage[:width], total=total, status="")
            progress.update(tasks[stage], advance=advance, total=total,  # type: ignore[arg-type]
                            **({"status": status} if status else {}))

        yield report
