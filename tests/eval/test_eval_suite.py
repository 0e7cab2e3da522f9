"""Suite files: the shipped ones validate and name existing templates; mistakes are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptrec.eval import SuiteError, build_rankers, load_suite, parse_suite
from promptrec.eval.suite import named_suites

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(named_suites().values())


def test_the_three_suites_are_shipped():
    assert {p.stem for p in SHIPPED} >= {"ml100k", "ml1m", "smoke"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_suites_validate(path):
    suite = load_suite(path)
    assert suite.name == path.stem
    assert suite.source == path.read_text()
    rankers = build_rankers(suite)  # loads every template: a missing one fails here
    names = [r.name for r in rankers]
    assert len(names) == len(set(names))
    for r in rankers:
        if r.kind == "llm":
            assert r.describe()["template_hash"]


def test_ml100k_is_all_users_and_ml1m_a_sample():
    ml100k = load_suite("ml100k")
    assert ml100k.data.users == "all" and ml100k.grid.users == "all"  # the LLM rows too
    ml1m = load_suite("ml1m")
    assert ml1m.data.dataset == "movielens-1m" and isinstance(ml1m.data.users, int) and ml1m.data.users >= 1000
    assert ml1m.grid.users == "all"  # every ranker on the same stated sample


def test_defaults_and_digest():
    a = parse_suite("[baselines]\nrankers = ['popularity']\n", "a")
    assert a.protocol.ks == [10] and a.protocol.n_candidates == 20 and a.data.split == "temporal-loo"
    assert a.digest == parse_suite("# a comment\n[baselines]\nrankers = ['popularity']\n", "a").digest
    assert a.digest != parse_suite("seed = 1\n[baselines]\nrankers = ['popularity']\n", "a").digest


@pytest.mark.parametrize(
    "text, message",
    [
        ("[data]\nuserz = 3\n", "userz"),
        ("[data]\nusers = 0\n", "positive integer"),
        ("[data]\nusers = true\n", "positive integer"),
        ("[protocol]\nmetrics = ['ndcg', 'map']\n", "unknown metric"),
        ("[protocol]\nks = [0]\n", "k must be"),
        ("[baselines]\nrankers = ['bpr']\n", "bpr"),
        ("[baselines]\nrankers = []\n", "runs nothing"),
        ("[grid]\nstrategies = ['pairwise']\n", "pairwise"),
        ("not toml ===", "not valid TOML"),
        ("[data]\ntie_rule = 'random'\n", "tie_rule"),
        ("[settings]\nsplit = { tie_rule = 'hash' }\n", "may not set split"),
        ("[segments]\nhistory_edges = [20, 5]\n", r"bad\.toml(.|\n)*segments\.history_edges(.|\n)*strictly increasing"),
        ("[segments]\nhistory_edges = [5, 5]\n", r"segments\.history_edges(.|\n)*no overlap"),
        ("[segments]\npopularity_cuts = [0.2, 1.5]\n", r"segments\.popularity_cuts(.|\n)*in \(0, 1\)"),
        ("[segments]\nmin_users = 1\n", r"segments\.min_users"),
        ("[segments]\nbuckets = [5]\n", r"segments\.buckets"),
    ],
)
def test_invalid_suites_are_errors(text, message):
    with pytest.raises(SuiteError, match=message):
        parse_suite(text, "bad", "bad.toml")


def test_segments_label_and_assign_users():
    from promptrec.eval.segments import assign_segments, history_labels, popularity_labels

    suite = parse_suite("[baselines]\nrankers = ['popularity']\n", "s")
    assert history_labels([5, 20, 100]) == ["≤5", "6-20", "21-100", ">100"]
    assert popularity_labels([0.2, 0.5]) == ["head (top 20%)", "torso (next 30%)", "tail (last 50%)"]
    facts = {"a": {"history_length": 5, "target_popularity_quantile": 0.0},
             "b": {"history_length": 6, "target_popularity_quantile": 0.2},
             "c": {"history_length": 101, "target_popularity_quantile": 0.99}}
    groups = assign_segments(facts, suite.segments)
    assert groups["all users"] == {"all": ["a", "b", "c"]}
    assert groups["history length"] == {"≤5": ["a"], "6-20": ["b"], "21-100": [], ">100": ["c"]}
    assert list(groups["target popularity"].values()) == [["a"], ["b"], ["c"]]


def test_strategy_filter_and_unknown_template():
    suite = parse_suite("[grid]\ntemplates = ['letters', 'yesno']\nstrategies = ['yesno']\n", "s")
    llm = [r for r in build_rankers(suite) if r.kind == "llm"]
    assert [r.strategy for r in llm] == ["yesno"]
    with pytest.raises(Exception, match="no-such-template"):
        build_rankers(parse_suite("[grid]\ntemplates = ['no-such-template']\n", "s"))


def test_tie_rule_overrides_and_settings():
    from promptrec.eval.runner import run_protocol, suite_settings

    suite = load_suite("ml100k")
    assert suite.data.tie_rule == "id" and suite.with_overrides(tie_rule="id").digest == suite.digest
    hashed = suite.with_overrides(tie_rule="hash", tie_seed=2, llm_users=150)
    assert hashed.digest != suite.digest and hashed.source == suite.source
    assert (hashed.data.tie_rule, hashed.data.tie_seed, hashed.grid.users) == ("hash", 2, 150)
    assert suite_settings(hashed).split.model_dump() == {"tie_rule": "hash", "tie_seed": 2}
    assert suite_settings(suite).split.tie_rule == "id"
    protocol = run_protocol(hashed)
    assert (protocol["tie_rule"], protocol["tie_seed"], protocol["n_candidates"]) == ("hash", 2, 20)
    assert "hash of (timestamp, user, item) with seed 2" in protocol["text"]
    assert run_protocol(suite)["tie_seed"] is None and "by item id" in run_protocol(suite)["text"]
    with pytest.raises(SuiteError, match="invalid override"):
        suite.with_overrides(users=0)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_an_empty_suite_file_is_an_error_not_the_default_suite(tmp_path, text):
    path = tmp_path / "empty.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SuiteError, match=r"empty\.toml: the suite is empty"):
        load_suite(path)


def test_the_shop_example_suite_is_valid():
    """`examples/shop/suite.toml`, a scenario of the applicability page, parses and names its files."""
    suite = load_suite(ROOT / "examples" / "shop" / "suite.toml")
    assert suite.name == "shop-example" and suite.data.catalog.path.name == "catalog.jsonl"
    assert suite.settings == {"domain": {"preset": "shop"}}
