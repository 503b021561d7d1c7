"""Results people keep and share, in a real browser: two text runs (the first filled from a link), History
compares them and offers the Markdown and JSON reports, and the link shown after a run fills a fresh page."""

from __future__ import annotations

import json
import statistics
from urllib.parse import urlencode

import pytest

from tests.support.browser import CHROMIUM_FLAGS, chromium_path

pytestmark = [pytest.mark.slow, pytest.mark.browser]

FIRST, SECOND = "Why should one run machine learning models on-premises?", "Write a haiku about GPUs."


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def run_and_wait(page) -> None:
    """Press Run in the Text tab and wait until the run is judged and its links are shown."""
    page.click("#run-text")
    page.wait_for_function("!document.querySelector('#share-text')?.innerText.includes('Link')", timeout=30_000)
    page.wait_for_function("document.querySelector('#share-text')?.innerText.includes('Link to this result')",
                           timeout=600_000)
    assert "Verdicts" in page.locator("#run-status").inner_text()


def download(page, container: str, suffix: str) -> str:
    with page.expect_download() as info:
        page.locator(f"{container} tr").filter(has_text=suffix).first.locator("a").first.click()
    return open(info.value.path(), encoding="utf-8").read()


def test_two_runs_history_reports_and_link(app_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1500, "height": 1200}, accept_downloads=True)
    settings = {"tab": "text", "model": "smollm2-135m-instruct", "prompt": FIRST, "max_new_tokens": "8",
                "warmup": "0", "backends": json.dumps(["pytorch", "onnxruntime"])}
    page.goto(app_server["url"] + "?" + urlencode(settings))
    page.wait_for_function("document.querySelector('#link-note')?.innerText.includes('filled in')", timeout=60_000)
    assert page.locator("#prompt textarea").input_value() == FIRST
    run_and_wait(page)
    page.locator("#prompt textarea").fill(SECOND)
    run_and_wait(page)
    assert page.locator("#downloads-text tr").filter(has_text=".md").count() == 1
    link = page.locator("#share-text a").filter(has_text="settings").first.get_attribute("href")
    assert "max_new_tokens=8" in link and "tab=text" in link
    result_link = page.locator("#share-text a").filter(has_text="result").first.get_attribute("href")
    assert "?run=" in result_link and len(result_link.split("?run=")[1]) == 38, result_link
    second_answer = page.locator("#answer-onnxruntime textarea").input_value()

    # History: both runs, newest first, compared side by side; run A's reports downloaded.
    page.get_by_role("tab", name="History").click()
    page.wait_for_function(f"['{FIRST[:20]}', '{SECOND[:20]}'].every((p) => "
                           "document.querySelector('#history-table')?.innerText.includes(p))", timeout=30_000)
    page.wait_for_function("document.querySelector('#history-comparison')?.innerText.includes('Run B')",
                           timeout=30_000)
    comparison = page.locator("#history-comparison").inner_text()
    assert SECOND in comparison and FIRST in comparison and "ONNX Runtime" in comparison and "MATCH" in comparison
    page.locator("#history-downloads tr").filter(has_text=".md").first.wait_for(timeout=30_000)
    markdown = download(page, "#history-downloads", ".md")
    for part in ("### Verdicts", "**MATCH**", "### Environment", "onnxruntime 1.", "torch 2.", "### Reproduce",
                 "python -m arena text --model smollm2-135m-instruct", "--max-new-tokens 8", SECOND[:20]):
        assert part in markdown, part
    report = json.loads(download(page, "#history-downloads", ".json"))
    assert report["run"]["request"]["prompt"] == SECOND
    for stats, result in zip(report["statistics"], report["run"]["results"], strict=True):
        stamps = result["timings"]["token_times_s"]
        assert stats["new_tokens"] == len(stamps) == result["num_new_tokens"]
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        assert stats["inter_token_s"]["median"] == pytest.approx(statistics.median(gaps))

    # The link, opened in a fresh page (a new browser context: nothing shared), fills the same settings.
    fresh = browser.new_context().new_page()
    fresh.goto(link)
    fresh.wait_for_function("document.querySelector('#link-note')?.innerText.includes('filled in')",
                            timeout=60_000)
    assert fresh.locator("#prompt textarea").input_value() == SECOND
    assert fresh.locator("#enable-onnxruntime input[type=checkbox]").is_checked()
    assert fresh.locator("#enable-pytorch input[type=checkbox]").is_checked()
    assert fresh.get_by_label("Max new tokens").first.input_value() == "8"
    fresh.close()

    # The result link, in a fresh context: the run's answers and verdicts at once, nothing run, its form filled.
    fresh = browser.new_context().new_page()
    fresh.goto(result_link)
    fresh.wait_for_function("document.querySelector('#run-status')?.innerText.includes('LINKED RESULT')",
                            timeout=60_000)
    assert "Verdicts" in fresh.locator("#run-status").inner_text()
    assert fresh.locator("#answer-onnxruntime textarea").input_value() == second_answer
    assert "MATCH" in fresh.locator("#panel-onnxruntime").inner_text()
    assert "ONNX Runtime" in fresh.locator("#summary-text").inner_text()
    assert fresh.locator("#prompt textarea").input_value() == SECOND
    fresh.goto(result_link.split("?run=")[0] + "?run=20260101-000000000000-0123456789abcdef")
    fresh.wait_for_function("document.querySelector('#link-note')?.innerText.includes('not kept')", timeout=60_000)
    fresh.close()

    # "Run A again": back to the Text tab with run A's settings, and a third run starts by itself.
    page.get_by_role("tab", name="History").click()
    page.click("#history-again")
    page.wait_for_function("!document.querySelector('#share-text')?.innerText.includes('Link')", timeout=30_000)
    assert page.locator("#prompt textarea").input_value() == SECOND
    page.wait_for_function("document.querySelector('#share-text')?.innerText.includes('Link to these settings')",
                           timeout=300_000)
