"""What promptrec's command lines (`promptrec ...` and its mountable sub-apps such as `promptrec
eval`) share: the one error boundary (commands raise, it turns errors into messages and exit codes)
and the one way to print text that comes from data (titles, ids, messages naming them)."""

from __future__ import annotations

import re
from typing import Any, NoReturn

import click
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from promptrec.config import describe_validation_error
from promptrec.errors import PromptrecError

err = Console(stderr=True)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0/C1 controls, ESC among them; tab and newline kept


def data_text(value: Any, style: str = "") -> Text:
    """Text from data (a title, an id, a message quoting them) for the terminal: printed as it is,
    never read as rich markup ("[/bold]", "[link=...]"), with control characters (escape
    sequences that clear the screen or set the window title) removed."""
    return Text(_CONTROL.sub("", str(value)), style=style)


def fail(exc: Exception) -> NoReturn:
    """Print one line naming what is wrong (an invalid setting: each field) and exit 2."""
    err.print(Text("error: ", style="bold red") + data_text(describe_validation_error(exc)), soft_wrap=True)
    raise typer.Exit(2)


class OneLineErrors(TyperGroup):
    """A typer group whose commands (sub-apps included) report a promptrec error, an invalid
    setting or a bad value as one line, exit 2. Give it as ``typer.Typer(cls=OneLineErrors)``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (PromptrecError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            fail(exc)
