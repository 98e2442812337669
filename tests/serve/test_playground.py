"""The playground page (``GET /``) in a real browser: Debian's chromium driven by Playwright for Python.

``make test`` installs chromium (``apt-get install chromium``) when /usr/bin/chromium is
missing; Playwright's own browser download is never used. Set ``ARLM_SCREENSHOT_DIR`` to
keep the screenshots (the README's comes from here).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_generate_hover_and_score(browser, server, lms, tmp_path):
    shots = Path(os.environ.get("ARLM_SCREENSHOT_DIR", tmp_path))
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        page.goto(server.url + "/")
        page.fill("#apikey", server.api_key)
        page.dispatch_event("#apikey", "change")
        page.wait_for_function("document.querySelectorAll('#model option').length === 2")
        page.select_option("#model", "ngram")
        page.fill("#prompt", "em")
        page.fill("#temperature", "1")
        page.fill("#seed", "3")
        page.fill("#max_tokens", "20")
        page.click("#generate")
        page.wait_for_function("document.getElementById('gen-status').textContent.includes('tokens generated')",
                               timeout=30000)
        generated = page.locator("#gen-out .tok:not(.prompt)")
        assert generated.count() >= 1
        # the same request through the API: the page's numbers must be the API's
        api = httpx.post(server.url + "/v1/completions", headers=server.headers(), timeout=30, json={
            "model": "ngram", "prompt": "em", "echo": True, "logprobs": 5, "temperature": 1.0, "seed": 3,
            "max_tokens": 20}).json()["choices"][0]
        assert page.inner_text("#gen-out").replace("↵", "") .startswith(api["text"][:2])
        lp = api["logprobs"]
        for k in (0, 1):  # first generated token by mouse, prompt's second token by keyboard focus
            if k == 0:
                generated.first.hover()
                idx = 2
            else:
                page.locator("#gen-out .tok.prompt").nth(1).focus()
                idx = 1
            tip = page.locator("#tip")
            tip.wait_for(state="visible")
            assert tip.locator(".p").inner_text() == f"{math.exp(lp['token_logprobs'][idx]):.4f}"
            rows = tip.locator("tr").count()
            assert rows >= 5  # the top alternatives with their probabilities
        page.screenshot(path=str(shots / "playground-generate.png"))

        text = "emmaoliviaava"
        page.click("#tab-score")
        page.fill("#score-text", text)
        page.click("#score")
        page.locator("#bpc").wait_for(state="visible")
        want = -lms["ngram"].log_prob(text, eos=False) / (math.log(2) * len(text))
        assert page.inner_text("#bpc") == f"{want:.4f}"
        assert page.locator("#score-out .tok").count() == len(text)
        page.locator("#score-out .tok").nth(3).hover()
        page.screenshot(path=str(shots / "playground-score.png"))

        page.set_viewport_size({"width": 390, "height": 844})  # a phone
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        page.click("#tab-generate")
        assert page.locator("#generate").is_visible()
        page.screenshot(path=str(shots / "playground-phone.png"))
    finally:
        page.close()
