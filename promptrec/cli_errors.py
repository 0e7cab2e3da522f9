"""The one error boundary of promptrec's command lines (`promptrec ...` and its mountable
sub-apps such as `promptrec eval`): commands raise, this turns errors into messages and exit codes."""

from __future__ import annotations

from typing import Any, NoReturn

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from promptrec.config import describe_validation_error
from promptrec.errors import PromptrecError

err = Console(stderr=True)


def fail(exc: Exception) -> NoReturn:
    """Print one line naming what is wrong (an invalid setting: each field) and exit 2."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(describe_validation_error(exc))}", soft_wrap=True)
    raise typer.Exit(2)


class OneLineErrors(TyperGroup):
    """A typer group whose commands (sub-apps included) report a promptrec error, an invalid
    setting or a bad value as one line, exit 2. Give it as ``typer.Typer(cls=OneLineErrors)``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (PromptrecError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            fail(exc)
