"""The command line through typer's runner, on a real tmp index built from a MovieLens slice
(`slice_env`: PROMPTREC_DATASET names the slice's folder, PROMPTREC_INDEX_DIR a tmp folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptrec.cli import app
from promptrec.index_layout import IndexLayout

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert text.startswith("error:"), result.output
    for needle in needles:
        assert needle in text, (needle, result.output)


# ----------------------------------------------------------------------------- errors, no index needed


@pytest.mark.parametrize("command", [["index"], ["candidates", "1"], ["recommend", "1"], ["calibrate"],
                                     ["why", "1", "2"], ["chat", "1"]])
def test_bad_settings_are_one_line_errors_in_every_command(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text('[ranker]\ntemplatee = "letters"\n')
    monkeypatch.setenv("PROMPTREC_CONFIG", str(tmp_path / "bad.toml"))
    _one_line_error(invoke(*command), "ranker.templatee", "unknown key", "bad.toml")
    (tmp_path / "bad.toml").write_text('n_candidates = 10\n[ranker\ntemplate = "letters"\n')
    _one_line_error(invoke(*command), "bad.toml", "invalid TOML", "line 2")
    monkeypatch.setenv("PROMPTREC_CONFIG", str(tmp_path / "missing.toml"))
    _one_line_error(invoke(*command), "PROMPTREC_CONFIG", "missing.toml")


def test_invalid_values_are_errors_not_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROMPTREC_CONFIG", raising=False)
    monkeypatch.setenv("PROMPTREC_RETRIEVAL__WEIGHTS", '{"transitions": 0, "behaviour": 0, "text": 0}')
    _one_line_error(invoke("candidates", "1"), "every fusion weight is 0")
    monkeypatch.delenv("PROMPTREC_RETRIEVAL__WEIGHTS")
    monkeypatch.setenv("PROMPTREC_RANKER__TIMEOUT_S", "0")
    _one_line_error(invoke("recommend", "1"), "ranker.timeout_s")
    monkeypatch.delenv("PROMPTREC_RANKER__TIMEOUT_S")
    monkeypatch.setenv("PROMPTREC_RANKER__TEMPLATEE", "letters")
    _one_line_error(invoke("recommend", "1"), "PROMPTREC_RANKER__TEMPLATEE")
    monkeypatch.delenv("PROMPTREC_RANKER__TEMPLATEE")
    for args in (["candidates", "1", "-n", "0"], ["recommend", "1", "-k", "0"]):
        result = invoke(*args)
        assert result.exit_code == 2 and "greater than or equal to 1" in " ".join(result.output.split())


def test_python_dash_m_runs(allow_subprocess):
    out = subprocess.run([sys.executable, "-m", "promptrec", "--help"], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "recommend" in out.stdout and "calibrate" in out.stdout


# ----------------------------------------------------------------------------- the main jobs on a slice


@pytest.mark.integration
def test_index_candidates_recommend_calibrate_why_chat(slice_env):
    result = invoke("index")
    assert result.exit_code == 0, result.output
    assert "index for" in result.output and IndexLayout(Path(slice_env["PROMPTREC_INDEX_DIR"])).live().manifest.is_file()

    result = invoke("candidates", "1", "-n", "5", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert len(found["candidates"]) == 5 and found["user_id"] == "1"
    assert not set(c["item_id"] for c in found["candidates"]) & set(found["history"])

    # a filter that matches nothing is an error that suggests the right case
    _one_line_error(invoke("candidates", "1", "--genre", "comedy"), "matches no item", "genre_Comedy")
    result = invoke("candidates", "1", "-n", "5", "--genre", "Comedy", "--json")
    assert result.exit_code == 0 and len(json.loads(result.stdout)["candidates"]) == 5

    _one_line_error(invoke("candidates", "nobody"), "unknown user 'nobody'")

    result = invoke("recommend", "1", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    served = json.loads(result.stdout)
    assert len(served["recommendations"]) == 3 and not served["degraded"] and not served["calibrated"]

    result = invoke("calibrate", "--users", "40")
    assert result.exit_code == 0, result.output
    assert "calibration fitted on" in result.output and "retrieval calibration" in result.output
    result = invoke("recommend", "1", "-k", "3", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["calibrated"]

    # ranker.mode = "retrieval": the calibrate step fitted its layer too; no LLM is asked
    os.environ["PROMPTREC_RANKER__MODE"] = "retrieval"
    try:
        listed = json.loads(invoke("recommend", "1", "-k", "3", "--json").stdout)
        assert listed["mode"] == "retrieval" and listed["calibrated"] and listed["model_id"] == ""
        assert all(r["llm_score"] is None and r["probability"] is not None for r in listed["recommendations"])
        shown = invoke("recommend", "1", "-k", "3")
        assert shown.exit_code == 0 and "no LLM call" in " ".join(shown.output.split())
    finally:
        del os.environ["PROMPTREC_RANKER__MODE"]

    item = served["recommendations"][0]["item_id"]
    result = invoke("why", "1", item, "--json")
    assert result.exit_code == 0, result.output
    assert item in result.stdout

    result = invoke("chat", "1", input="quit\n")
    assert result.exit_code == 0, result.output
    assert "Chat about user 1" in result.output

    # a damaged index file is a one-line error naming it and the fix; --rebuild mends it
    manifest = IndexLayout(Path(slice_env["PROMPTREC_INDEX_DIR"])).live().transitions
    manifest.write_bytes(manifest.read_bytes()[:100])
    _one_line_error(invoke("candidates", "1"), "transitions.npz", "promptrec index --rebuild")
    assert invoke("index", "--rebuild").exit_code == 0
    assert invoke("candidates", "1", "--json").exit_code == 0

    layout = IndexLayout(Path(slice_env["PROMPTREC_INDEX_DIR"]))
    before = layout.live().sequential_checkpoint.stat().st_mtime_ns
    result = invoke("train", "retriever")
    assert result.exit_code == 0, result.output
    assert "sequential retriever for" in result.output and "best validation NDCG@10" in result.output
    assert layout.live().sequential_checkpoint.stat().st_mtime_ns > before  # trained again, not loaded


@pytest.mark.integration
def test_llm_timeout_exits_cleanly_with_the_right_banner(slice_env):
    assert invoke("index").exit_code == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROMPTREC_RANKER__TIMEOUT_S": "0.001", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "promptrec", "recommend", "1", "-k", "3"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert "terminate called" not in out.stderr
    assert out.returncode == 0, out.stderr[-2000:]
    assert "the LLM failed" in out.stdout and "retrieval order shown" in out.stdout
