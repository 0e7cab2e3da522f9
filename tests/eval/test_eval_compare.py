"""Paired comparisons and the `promptrec eval` command line, on real runs of a small
baselines-only suite (a MovieLens-100K slice; popularity and ALS need no vector index)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from promptrec.errors import PromptrecError
from promptrec.eval import compare_runs, parse_suite, render_comparison, run_suite
from promptrec.eval.cli import eval_app
from promptrec.eval.report import per_user_metrics
from promptrec.eval.runner import read_results
from promptrec.stats import paired_difference, paired_permutation_p

pytestmark = pytest.mark.integration

SUITE = """
seed = {seed}
[data]
dataset = "movielens-100k"
log_users = 60
k_core = [5, 5]
[protocol]
ks = [10]
metrics = ["ndcg", "recall", "mrr"]
bootstrap = 300
[baselines]
rankers = ["popularity", "als"]
[baselines.als]
factors = 16
iterations = 8
"""


@pytest.fixture(scope="module")
def runs(asset_settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    out = {}
    for seed in (0, 1):
        # seed 1 changes the ALS initialisation (and the user sample of the log: another slice)
        suite = parse_suite(SUITE.format(seed=seed), f"cmp{seed}")
        out[seed] = run_suite(suite, root / f"s{seed}", settings=asset_settings)
    # the same slice and users, another ALS (the suite seed also draws the log sample, so keep it)
    suite = parse_suite(SUITE.format(seed=0).replace("factors = 16", "factors = 24"), "cmp0b")
    out["b"] = run_suite(suite, root / "s0b", settings=asset_settings)
    # the same slice under the hash tie rule
    suite = parse_suite(SUITE.format(seed=0).replace('log_users = 60', 'log_users = 60\ntie_rule = "hash"'), "cmp0h")
    out["hash"] = run_suite(suite, root / "s0h", settings=asset_settings)
    return out


def test_two_rankers_of_one_run(runs):
    run = runs[0].run_dir
    comparison = compare_runs(run, run, "popularity", "als")
    (pair,) = comparison.pairs
    rows = read_results(run)
    pop = [r for r in rows if r["ranker"] == "popularity"]
    als = [r for r in rows if r["ranker"] == "als"]
    assert pair.users == len(pop) == len(als) and pair.users > 30
    expected = paired_difference(
        per_user_metrics(pop, ["ndcg@10"])["ndcg@10"], per_user_metrics(als, ["ndcg@10"])["ndcg@10"], 300, seed=0
    )
    got = next(d for d in pair.differences if d.metric == "ndcg@10")
    assert got.diff == pytest.approx(expected.diff) and got.low == pytest.approx(expected.low)
    assert got.mean_a == pytest.approx(runs[0].summary["rankers"][0]["metrics"]["ndcg@10"]["mean"])
    assert got.low <= got.diff <= got.high
    assert got.detectable == pytest.approx((got.high - got.low) / 2)
    assert got.p_value == pytest.approx(paired_permutation_p(
        per_user_metrics(pop, ["ndcg@10"])["ndcg@10"], per_user_metrics(als, ["ndcg@10"])["ndcg@10"], 300, seed=0))
    assert [d.metric for d in pair.differences] == ["ndcg@10", "recall@10", "mrr@10"]
    text = render_comparison(comparison)
    assert "B als vs A popularity" in text and "| ndcg@10 |" in text
    assert "tie rule id" in text and "permutation" in text
    row = next(line for line in text.splitlines() if line.startswith("| ndcg@10 |"))
    assert f"| {got.detectable:.4f} | {got.p_value:.3f} |" in row


def test_tie_rule_is_recorded_and_changes_the_split(runs):
    for key, rule in ((0, "id"), ("hash", "hash")):
        manifest = json.loads((runs[key].run_dir / "manifest.json").read_text())
        assert manifest["protocol"]["tie_rule"] == rule and manifest["settings"]["split"]["tie_rule"] == rule
        assert json.loads((runs[key].run_dir / "suite.json").read_text())["data"]["tie_rule"] == rule
        assert f"tie rule: **{rule}" in (runs[key].run_dir / "summary.md").read_text()
    targets = {key: {r["user_id"]: r["target"] for r in read_results(runs[key].run_dir) if r["ranker"] == "popularity"}
               for key in (0, "hash")}
    assert targets[0].keys() == targets["hash"].keys()  # the same users, some with another test item
    assert 0 < sum(targets[0][u] != targets["hash"][u] for u in targets[0]) < len(targets[0])
    with pytest.raises(PromptrecError, match="different targets"):
        compare_runs(runs[0].run_dir, runs["hash"].run_dir)


def test_compare_writes_a_table_and_a_chart(runs, tmp_path):
    from promptrec.eval.compare import write_comparison

    comparison = compare_runs(runs[0].run_dir, runs["b"].run_dir, metrics=["ndcg@10", "recall@10"], resamples=100)
    paths = write_comparison(comparison, tmp_path / "cmp")
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["markdown"].read_text()
    assert md.startswith(render_comparison(comparison)) and "![comparison](comparison.png)" in md
    assert json.loads(paths["json"].read_text())["pairs"][0]["differences"][0]["metric"] == "ndcg@10"
    result = CliRunner().invoke(eval_app, ["compare", str(runs[0].run_dir), str(runs["b"].run_dir), "-m", "ndcg@10",
                                           "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "| ndcg@10 |" in result.stdout and (tmp_path / "cli" / "comparison.png").is_file()


def test_two_runs_same_data(runs):
    comparison = compare_runs(runs[0].run_dir, runs["b"].run_dir, metrics=["ndcg@10"], resamples=200)
    pairs = {p.ranker_a: p for p in comparison.pairs}
    assert set(pairs) == {"popularity", "als"}
    pop = pairs["popularity"].differences[0]
    assert pop.diff == 0 and pop.p_value == 1.0  # popularity does not depend on ALS parameters
    als = pairs["als"].differences[0]
    assert als.low <= als.diff <= als.high and 0 <= als.p_value <= 1
    # deterministic for a seed
    again = compare_runs(runs[0].run_dir, runs["b"].run_dir, metrics=["ndcg@10"], resamples=200)
    assert again == comparison


def test_runs_on_different_data_cannot_be_paired(runs):
    with pytest.raises(PromptrecError, match="different targets|no user in common"):
        compare_runs(runs[0].run_dir, runs[1].run_dir)
    with pytest.raises(PromptrecError, match="no ranker 'bpr'"):
        compare_runs(runs[0].run_dir, runs[0].run_dir, "bpr")
    with pytest.raises(PromptrecError, match="unknown metric"):
        compare_runs(runs[0].run_dir, runs[0].run_dir, metrics=["map@10"])


def test_cli_compare(runs):
    cli = CliRunner()
    result = cli.invoke(eval_app, ["compare", str(runs[0].run_dir), str(runs["b"].run_dir), "--json", "-m", "recall@10"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {p["ranker_a"] for p in data["pairs"]} == {"popularity", "als"}
    assert all(p["differences"][0]["metric"] == "recall@10" for p in data["pairs"])
    result = cli.invoke(eval_app, ["compare", str(runs[0].run_dir), str(runs[0].run_dir), "--a", "popularity", "--b", "nope"])
    assert result.exit_code == 2 and "no ranker 'nope'" in result.output


def test_cli_default_command_runs_a_suite_when_mounted(runs, tmp_path):
    """`promptrec eval SUITE` (no `run`), through an app that mounts eval_app as `eval`; on a
    finished run folder it continues with nothing to do and rewrites the report."""
    run_dir = tmp_path / "copy"
    shutil.copytree(runs[0].run_dir, run_dir)
    (run_dir / "summary.md").unlink()
    suite_file = tmp_path / "cmp0.toml"
    suite_file.write_text(SUITE.format(seed=0))
    app = typer.Typer()
    app.add_typer(eval_app, name="eval")

    @app.command()
    def other() -> None:  # a second command, so `eval` stays a subcommand
        pass

    result = CliRunner().invoke(app, ["eval", str(suite_file), "--out", str(run_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "0 rows written" in result.output and "| als |" in result.output
    assert (run_dir / "summary.md").is_file()
    rows = read_results(run_dir)
    assert len(rows) == len(read_results(runs[0].run_dir))
    assert np.isclose(
        json.loads((run_dir / "summary.json").read_text())["rankers"][1]["metrics"]["ndcg@10"]["mean"],
        runs[0].summary["rankers"][1]["metrics"]["ndcg@10"]["mean"],
    )
    result = CliRunner().invoke(app, ["eval", "report", str(run_dir)])
    assert result.exit_code == 0 and "# Evaluation" in result.output


def test_only_some_rankers_now_the_rest_later(runs, asset_settings, tmp_path):
    suite = parse_suite(SUITE.format(seed=0), "cmp0")
    first = run_suite(suite, tmp_path / "r", settings=asset_settings, only=["als"], limit=10)
    rows = read_results(first.run_dir)
    assert not first.complete and {r["ranker"] for r in rows} == {"als"} and len(rows) == 10
    # the first 10 of the seeded run order: a seeded sample, not the 10 smallest ids
    full = [r["user_id"] for r in read_results(runs[0].run_dir) if r["ranker"] == "als"]
    assert [r["user_id"] for r in rows] == full[:10] and full != sorted(full, key=int)
    done = run_suite(suite, tmp_path / "r", settings=asset_settings)
    assert done.complete and done.written == len(read_results(runs[0].run_dir)) - 10
    assert {r["name"]: r["metrics"] for r in done.summary["rankers"]} == {
        r["name"]: r["metrics"] for r in runs[0].summary["rankers"]}
    with pytest.raises(PromptrecError, match="--only 'bpr'"):
        run_suite(suite, tmp_path / "r", settings=asset_settings, only=["bpr"])


def test_cli_overrides_make_another_suite(runs, tmp_path):
    suite_file = tmp_path / "cmp0.toml"
    suite_file.write_text(SUITE.format(seed=0))
    result = CliRunner().invoke(eval_app, ["run", str(suite_file), "--out", str(tmp_path / "h"), "--quiet",
                                           "--tie-rule", "hash", "--only", "popularity"])
    assert result.exit_code == 0, result.output
    assert "tie rule: **hash (seed 0)**" in result.stdout
    same = [r for r in read_results(runs["hash"].run_dir) if r["ranker"] == "popularity"]
    assert read_results(tmp_path / "h") == [{**r, "latency_s": got["latency_s"]} for r, got in
                                            zip(same, read_results(tmp_path / "h"))]
    result = CliRunner().invoke(eval_app, ["run", str(suite_file), "--out", str(tmp_path / "x"), "--tie-rule", "random"])
    assert result.exit_code == 2 and "tie_rule" in result.output


def test_the_cli_takes_a_shipped_suite_by_name():
    """`promptrec eval ml100k` (README) names a shipped suite, not a file in the working folder."""
    app = typer.Typer()
    app.add_typer(eval_app, name="eval")

    @app.command()
    def other() -> None:
        pass

    named = CliRunner().invoke(app, ["eval", "smoke", "--tie-rule", "sideways"])  # read, then refused
    assert named.exit_code == 2 and "does not exist" not in named.output and "sideways" in named.output, named.output
    unknown = CliRunner().invoke(app, ["eval", "run", "no-such-suite"])
    assert unknown.exit_code == 2 and "no shipped suite of that name (shipped: " in " ".join(unknown.output.split())
