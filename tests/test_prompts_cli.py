"""`promptrec prompts list|show|copy`, the prompts_dir setting and `promptrec --version`."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import promptrec
from promptrec.cli import app
from promptrec.ranker.prompts import PromptError, default_prompts_dir, load_template


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROMPTREC_PROMPTS_DIR", raising=False)
    return CliRunner()


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"promptrec {promptrec.__version__}"


def test_copy_then_prompts_dir_uses_yours_first(runner, tmp_path, monkeypatch):
    result = runner.invoke(app, ["prompts", "copy", "letters", "mine"])
    assert result.exit_code == 0, result.output
    copy = tmp_path / "mine" / "rerank" / "letters.j2"
    assert copy.read_text() == (default_prompts_dir() / "rerank" / "letters.j2").read_text()
    again = runner.invoke(app, ["prompts", "copy", "letters", "mine"])
    assert again.exit_code == 2 and "--force" in again.output
    copy.write_text(copy.read_text().replace("You are", "You are a careful"), encoding="utf-8")
    mine = load_template("letters", tmp_path / "mine")
    assert mine.path == copy and mine.hash != load_template("letters").hash
    assert load_template("yesno", tmp_path / "mine").path.is_relative_to(default_prompts_dir())  # the package's
    monkeypatch.setenv("PROMPTREC_PROMPTS_DIR", str(tmp_path / "mine"))
    listed = runner.invoke(app, ["prompts", "list"])
    assert listed.exit_code == 0 and listed.output.count("package") == 3  # letters is yours now
    shown = runner.invoke(app, ["prompts", "show", "letters"])
    assert "a careful" in shown.output


def test_show_an_unknown_template_or_kind_is_one_line(runner):
    result = runner.invoke(app, ["prompts", "show", "nope"])
    assert result.exit_code == 2 and "no rerank template 'nope'" in result.output and "letters" in result.output
    assert runner.invoke(app, ["prompts", "show", "letters", "--kind", "other"]).exit_code == 2


def test_a_template_path_with_another_suffix_says_so(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("{# strategy: letters #}\n", encoding="utf-8")
    with pytest.raises(PromptError, match=r"ends in \.j2"):
        load_template(path)
