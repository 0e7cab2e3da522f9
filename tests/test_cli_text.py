"""Catalog text reaches the terminal as text: rich markup in a title is printed, not obeyed, and
control characters (escape sequences that clear the screen or retitle the window) are dropped."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from promptrec import cli
from promptrec.cli_errors import data_text
from promptrec.schema import Recommendation, RecommendationList

HOSTILE = ["Heat [/bold] (1995)", "[link=https://evil.example]Click[/link]", "Clear\x1b[2J\x1b]0;pwned\x07 me"]


def test_data_text_keeps_markup_as_text_and_drops_controls():
    assert data_text("[/bold]").plain == "[/bold]"
    assert data_text("a\x1b[2Jb\x07c\x9b").plain == "a[2Jbc"
    assert data_text("tab\tand\nnewline").plain == "tab\tand\nnewline"


def test_recommendations_with_hostile_titles_print_as_written(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buffer, width=200, force_terminal=True, color_system="standard"))
    result = RecommendationList(
        user_id="[bold]u1", strategy="letters", template="letters", template_hash="abc", model_id="m", calibrated=False,
        recommendations=[Recommendation(item_id=f"i{n}", title=t, rank=n + 1, probability=None, llm_score=None,
                                        retrieval_score=0.1, retrieval_rank=n + 1) for n, t in enumerate(HOSTILE)],
    )
    cli._print_recommendations(result)  # a rich MarkupError here was a traceback for every such user
    out = buffer.getvalue()
    assert "[/bold]" in out and "[link=https://evil.example]Click[/link]" in out and "[bold]u1" in out
    assert "\x1b[2J" not in out and "\x1b]0;" not in out and "\x07" not in out
    assert "\x1b]8;" not in out  # no terminal hyperlink


@pytest.mark.parametrize("message", ["unknown item '[/bold]'", "unknown item 'x\x1b[2J'"])
def test_error_lines_quote_data_safely(capsys, message):
    from typer import Exit

    from promptrec.cli_errors import fail
    from promptrec.errors import PromptrecError

    with pytest.raises(Exit):
        fail(PromptrecError(message))
    err = capsys.readouterr().err
    assert "error:" in err and "\x1b[2J" not in err and ("[/bold]" in err or "x[2J" in err)
