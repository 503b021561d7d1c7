""""See a broken conversion": the server's own broken exports of the default models give a broken verdict through
the API and the UI, the good ones beside them MATCH, and public mode trusts exactly the server-made folders."""

from __future__ import annotations

import time

import pytest

from arena.public.policy import Policy
from arena.types import BackendSpec


def test_public_mode_trusts_only_the_server_made_folders(tmp_path):
    policy = Policy(public=True)
    made = str(tmp_path / "demo-broken-text" / "abc")
    assert "onnx_dir" in policy.refuse_spec(BackendSpec("onnxruntime", onnx_dir=made))
    policy.trust_path(made)
    assert policy.refuse_spec(BackendSpec("onnxruntime", onnx_dir=made)) is None
    for typed in (str(tmp_path), made + "/..", made + "x", "/etc"):
        assert "onnx_dir" in policy.refuse_spec(BackendSpec("onnxruntime", onnx_dir=typed)), typed


@pytest.mark.slow
def test_examples_through_the_api(app_server):
    from gradio_client import Client

    client = Client(app_server["url"], verbose=False)
    broken = client.predict(broken=True, api_name="/example_text")
    assert broken["error"] is None, broken
    kinds = [r["verdict"]["kind"] for r in broken["results"]]
    assert kinds[0] == "MATCH" and broken["results"][1]["verdict"]["broken"], kinds
    assert kinds[1] == "GIBBERISH", broken["results"][1]["verdict"]
    good = client.predict(broken=False, api_name="/example_text")
    assert [r["verdict"]["kind"] for r in good["results"]] == ["MATCH", "MATCH"]
    # An example this server has run answers with that result at once, saying when it ran.
    start = time.monotonic()
    again = client.predict(broken=True, api_name="/example_text")
    assert time.monotonic() - start < 10 and again["kept_at"], again["kept_at"]  # (the first may be kept too:
    # the browser tests before this one run the same example on the same server)
    assert [r["verdict"] for r in again["results"]] == [r["verdict"] for r in broken["results"]]

    image = client.predict(broken=True, api_name="/example_image")
    assert [r["verdict"]["kind"] for r in image["results"]] == ["MATCH", "NAN"], image["results"][1]["verdict"]
    good_image = client.predict(broken=False, api_name="/example_image")
    assert [r["verdict"]["kind"] for r in good_image["results"]] == ["MATCH", "MATCH"]


@pytest.mark.slow
@pytest.mark.browser
def test_broken_example_in_the_browser(app_server):
    """The text tab's broken example (its export already made by the API test or made now): GIBBERISH next to
    MATCH in the panels; then the image tab's broken example: NAN next to MATCH."""
    from playwright.sync_api import sync_playwright

    from tests.support.app import SCREENSHOTS
    from tests.support.browser import CHROMIUM_FLAGS, chromium_path

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        page.goto(app_server["url"])
        page.wait_for_selector("#demo-broken-text")
        for button, expected in (("#demo-broken-text", "GIBBERISH"),):  # the good one: through the API above
            page.click(button)  # the API test above ran it: its kept result answers at once (else it runs live)
            page.wait_for_function(f"document.querySelector('#run-status')?.innerText.includes('{expected}')",
                                   timeout=600_000)
            page.wait_for_function("document.querySelector('#share-text')?.innerText.includes('Link')",
                                   timeout=60_000)
            status = page.locator("#run-status").inner_text()
            assert expected in status, status
            assert "MATCH" in page.locator("#panel-pytorch").inner_text()
        # The example's result on a phone: nothing wider than the screen (its export folder is in no link).
        from tests.support.browser import assert_fits_the_phone

        assert "/" not in page.locator("#share-text").inner_text().split("?run=")[-1]
        assert "settings" not in page.locator("#share-text").inner_text()
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(1000)
        assert_fits_the_phone(page, "after the broken example")
        page.set_viewport_size({"width": 1500, "height": 1200})
        page.get_by_role("tab", name="Image").click()
        page.click("#demo-broken-image")
        page.wait_for_function("document.querySelector('#image-status')?.innerText.includes('NAN')", timeout=600_000)
        page.wait_for_function("document.querySelector('#share-image')?.innerText.includes('Link')", timeout=60_000)
        status = page.locator("#image-status").inner_text()
        assert "NAN" in status and "MATCH" in status, status
        # Point 5 of issue 20: no empty boxes, and the broken backend is not silently left out of the chart.
        # It draws no image (its decoder gave NaN): its panel says why instead of showing empty boxes, and the
        # chart names it among the backends it could not time.
        assert not page.locator("#image-onnxruntime").is_visible() and not page.locator("#image-slider").is_visible()
        assert "NaN" in page.locator("#image-metrics-onnxruntime").inner_text()
        page.locator("#image-latency-chart .main-svg").first.wait_for(timeout=30_000)
        assert "Not timed, the run failed: ONNX Runtime" in page.locator("#image-latency-chart").inner_text()
        page.wait_for_timeout(500)
        page.screenshot(path=str(SCREENSHOTS / "broken-image.png"), full_page=True)
        browser.close()


def test_public_view_hides_the_demo_folder_in_load_notes(tmp_path):
    """A trusted export's folder is named in the result's load notes (a tuple): public mode hides it too."""
    from arena.types import LoadInfo

    folder = str(tmp_path / "demo-broken-text" / "abc")
    shown = Policy(public=True).redact({"load": LoadInfo(notes=(f"user export {folder}",)).to_dict()},
                                       (str(tmp_path),))
    assert shown["load"]["notes"] == ["user export …/demo-broken-text/abc"]
