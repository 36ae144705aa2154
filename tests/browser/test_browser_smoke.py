"""The browser fixture itself: Chromium starts, renders, runs script."""

from __future__ import annotations

from playwright.sync_api import Browser


def test_chromium_renders_and_runs_script(browser: Browser) -> None:
    page = browser.new_page()
    try:
        page.set_content("<p id=p></p><script>document.getElementById('p').textContent = String(6 * 7)</script>")
        assert page.inner_text("#p") == "42"
    finally:
        page.close()
