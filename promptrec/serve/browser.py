"""Drive the chat page in Debian's headless chromium through playwright (the dev extra): the
browser test and the README screenshot (``python -m promptrec.serve.browser URL OUT.png``).

playwright's own browser download needs the internet; this points it at the system browser.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ANSWER_TIMEOUT_MS = 300_000


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A playwright Browser over the system chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def converse(page: Any, url: str, user: str, follow_up: str | None = None, row: int = 0) -> None:
    """Open the page, recommend for `user`, press "why?" on a row, wait for the streamed answer
    (and for the answer to `follow_up`)."""
    page.goto(url.rstrip("/") + "/")
    page.wait_for_function("document.querySelectorAll('#users option').length > 0")
    page.fill("#user", user)
    page.click("#go")
    page.locator("#recs tbody tr").first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    page.locator("#recs tbody tr").nth(row).locator("button.why").click()
    page.wait_for_selector(".turn[data-done]", timeout=ANSWER_TIMEOUT_MS)
    if follow_up:
        page.fill("#question", follow_up)
        page.click("#ask")
        page.wait_for_selector(".turn:nth-child(2)[data-done]", timeout=ANSWER_TIMEOUT_MS)


def main(argv: list[str]) -> None:  # pragma: no cover - the README screenshot
    url, out, user = argv[0], argv[1], argv[2] if len(argv) > 2 else "196"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        converse(page, url, user, "What do they have in common?")
        page.screenshot(path=out, full_page=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
