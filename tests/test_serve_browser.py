"""The chat page in a real headless browser: Debian's chromium, driven by playwright, against a
real uvicorn on loopback serving the ML-100K slice with SmolLM2. scripts/setup.sh installs the
browser; without it the test is skipped, except under CI=true where that is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from serve_support import CHROMIUM, CHROMIUM_ARGS, CONVERSATION_OPTIONS, LoopbackServer, slice_recommender

from promptrec.serve import create_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_the_page_recommends_streams_an_answer_and_takes_a_follow_up(browser, ml_slice, asset_settings, tmp_path):
    rec = slice_recommender(ml_slice, asset_settings, tmp_path / "index")
    with LoopbackServer(create_app(rec, conversation_options=CONVERSATION_OPTIONS)) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server.url + "/")
        page.wait_for_function("document.querySelectorAll('#users option').length === 40")
        page.fill("#user", "1")
        page.click("#go")
        rows = page.locator("#recs tbody tr")
        rows.first.wait_for()
        assert rows.count() == 10
        first_title = rows.first.locator(".title").inner_text()
        assert first_title == rec.recommend("1", 10).recommendations[0].title

        rows.first.locator("button.why").click()
        turn = page.locator(".turn").first
        page.wait_for_function("document.querySelector('.turn .answer').textContent.length > 0")  # streamed in
        page.wait_for_selector(".turn[data-done]", timeout=120_000)
        assert turn.get_attribute("data-done") in ("ok", "regenerated", "fallback")
        assert turn.locator(".answer").inner_text().strip()
        assert f"Evidence: {first_title}" in turn.locator(".evidence h3").inner_text()
        related = turn.locator(".evidence li.related")
        assert related.count() >= 1
        history_titles = {rec.item(i).display_title() for i in rec.history("1")}
        assert any(related.first.inner_text().startswith(title + ",") for title in history_titles)

        page.fill("#question", "What do they have in common?")
        page.click("#ask")
        page.wait_for_selector(".turn:nth-child(2)[data-done]", timeout=120_000)
        second = page.locator(".turn").nth(1)
        assert second.locator(".question").inner_text() == "What do they have in common?"
        assert second.get_attribute("data-done") != "error" and second.locator(".answer").inner_text().strip()
        page.screenshot(path=str(os.environ.get("PROMPTREC_SERVE_SCREENSHOT") or tmp_path / "serve.png"), full_page=True)
