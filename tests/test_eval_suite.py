"""Suite files: the shipped ones validate and name existing templates; mistakes are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptrec.eval import SuiteError, build_rankers, load_suite, parse_suite

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "eval").glob("*.toml"))


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
    assert load_suite(ROOT / "eval/ml100k.toml").data.users == "all"
    ml1m = load_suite(ROOT / "eval/ml1m.toml")
    assert ml1m.data.dataset == "movielens-1m" and isinstance(ml1m.data.users, int)


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
    ],
)
def test_invalid_suites_are_errors(text, message):
    with pytest.raises(SuiteError, match=message):
        parse_suite(text, "bad", "bad.toml")


def test_strategy_filter_and_unknown_template():
    suite = parse_suite("[grid]\ntemplates = ['letters', 'yesno']\nstrategies = ['yesno']\n", "s")
    llm = [r for r in build_rankers(suite) if r.kind == "llm"]
    assert [r.strategy for r in llm] == ["yesno"]
    with pytest.raises(Exception, match="no-such-template"):
        build_rankers(parse_suite("[grid]\ntemplates = ['no-such-template']\n", "s"))
