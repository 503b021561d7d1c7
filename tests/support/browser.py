"""Browser-test support: Debian's chromium driven by Playwright, and the phone layout's checks after a run."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def chromium_path() -> str:
    path = os.environ.get("ARENA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        message = "Debian's chromium is not installed: sudo apt-get install -y chromium (make test does this)."
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run the browser test, never skip it
        pytest.skip(message)
    return path


# Whatever sticks out of the screen sideways, except inside a box that scrolls sideways (the run's link) and the
# charts (their own sizing, issue 34 point 5). The page's scrollWidth alone misses it: Gradio's container clips what
# is wider than the screen (a 1,345 px column read scrollWidth 390).
OUT_OF_SCREEN = """() => {
  const vw = document.documentElement.clientWidth, out = [];
  for (const e of document.querySelectorAll('.gradio-container *')) {
    if (e.closest('.js-plotly-plot') || e.closest('.visually-hidden')) continue;  // Gradio's 1-px tab-measuring copy
    const r = e.getBoundingClientRect();
    if (!r.width || !r.height || (r.left >= -1 && r.right <= vw + 1)) continue;
    let box = e.parentElement;
    while (box && !['auto', 'scroll'].includes(getComputedStyle(box).overflowX)) box = box.parentElement;
    const b = box && box.getBoundingClientRect();
    if (b && b.left >= -1 && b.right <= vw + 1 && box.closest('.gradio-container')) continue;
    out.push(`${e.tagName}#${e.id}.${String(e.className).slice(0, 40)}: ${Math.round(r.left)}..${Math.round(r.right)}`);
  }
  return out;
}"""

RUN_LABEL = """() => {
  const button = document.querySelector('#run-text'), range = document.createRange();
  range.selectNodeContents(button);
  const r = range.getBoundingClientRect();
  return {text: button.innerText.trim(), left: r.left, right: r.right, width: r.width};
}"""


def assert_fits_the_phone(page, when: str) -> None:
    """Nothing wider than the screen, Run's label shown whole, the status line inside the screen."""
    width = page.evaluate("document.documentElement.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width, when
    assert page.evaluate(OUT_OF_SCREEN) == [], when
    for selector in ("#run-text", "#stop-text", "#run-status", "#share-text", "#prompt", "#panel-pytorch"):
        box = page.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (when, selector, box)
    label = page.evaluate(RUN_LABEL)
    assert label["text"] == "Run" and label["width"] > 0 and 0 <= label["left"] and label["right"] <= width, \
        (when, label)
    status = page.locator("#run-status")
    assert status.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), (when, status.inner_text())
