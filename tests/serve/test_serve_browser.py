"""The chat page in a real headless browser: Debian's chromium, driven by playwright, against a
real uvicorn on loopback serving the ML-100K slice with SmolLM2. scripts/setup.sh installs the
browser; without it the test is skipped, except under CI=true where that is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from serve_support import CONVERSATION_OPTIONS, LoopbackServer, slice_recommender

from promptrec.serve import create_app
from promptrec.serve.browser import CHROMIUM, chromium, converse

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    with chromium() as browser:
        yield browser


def test_the_page_recommends_streams_an_answer_and_takes_a_follow_up(
    browser, ml_slice, asset_settings, tmp_path_factory, tmp_path
):
    rec = slice_recommender(ml_slice, asset_settings, tmp_path_factory)
    with LoopbackServer(create_app(rec, conversation_options=CONVERSATION_OPTIONS)) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        converse(page, server.url, "1", follow_up="What do they have in common?")
        rows = page.locator("#recs tbody tr")
        assert rows.count() == 10
        first_title = rows.first.locator(".title").inner_text()
        assert first_title == rec.recommend("1", 10).recommendations[0].title

        why, follow = page.locator(".turn").nth(0), page.locator(".turn").nth(1)
        assert why.get_attribute("data-done") in ("ok", "trimmed", "regenerated", "fallback")
        assert int(why.get_attribute("data-pieces")) >= 1  # streamed, a whole sentence at a time
        assert why.locator(".answer").inner_text().strip()
        assert f"Evidence: {first_title}" in why.locator(".evidence h3").inner_text()
        related = why.locator(".evidence li.related")
        assert related.count() >= 1
        history_titles = {rec.item(i).display_title() for i in rec.history("1")}
        assert any(related.first.inner_text().startswith(title + ",") for title in history_titles)

        assert follow.locator(".question").inner_text() == "What do they have in common?"
        assert follow.get_attribute("data-done") != "error" and follow.locator(".answer").inner_text().strip()
        page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)

        page.fill("#request", "no comedy")  # refine the list in words, in the same conversation
        page.click("#refine-go")
        page.wait_for_selector("#recs tbody tr[data-refined]", timeout=60_000)
        refined = page.locator("#recs tbody tr[data-refined]")
        assert refined.count() == 10 and "no Comedy" in page.locator("#rec-note").inner_text()
        ids = [refined.nth(n).get_attribute("data-item") for n in range(refined.count())]
        assert all("Comedy" not in rec.item(i).genres for i in ids)
        assert "not Comedy" in refined.first.locator(".reasons").inner_text()
