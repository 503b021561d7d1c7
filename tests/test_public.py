"""Public mode through a running app (as on a Hugging Face Space: SPACE_ID set): every refusal is one sentence and
touches nothing on disk, the Stop button ends a run within 2 seconds, and the page opens on the shipped run."""

from __future__ import annotations

import json
import time

import psutil
import pytest
from gradio_client import Client

from tests.support import ROOT
from tests.support.app import running_app

pytestmark = pytest.mark.slow

DEFAULT = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def public_app(session_cache, tmp_path_factory):
    with running_app(session_cache, tmp_path_factory.mktemp("public-app"), args=("--no-warm-up",),
                     SPACE_ID="local/public-test") as app:
        yield app


def workers_of(pid: int) -> list[str]:
    """The worker processes the app has started (multiprocessing children)."""
    return [" ".join(p.cmdline()) for p in psutil.Process(pid).children(recursive=True)
            if "multiprocessing" in " ".join(p.cmdline())]


def sentence(result: dict) -> str:
    assert result["results"] == [], result
    error = result["error"]
    assert error and error.endswith(".") and "\n" not in error, error
    return error


def test_public_refusals_touch_nothing(public_app, tiny_llama, tiny_sd):
    client = Client(public_app["url"], verbose=False)
    local = str(tiny_llama)  # a real model folder on this server: must not be opened
    text = {"prompt": "Hello", "api_name": "/compare_text"}
    assert "does not open paths" in sentence(client.predict(model=local, **text))
    assert "onnx_dir" in sentence(client.predict(
        model=DEFAULT, backends=[{"backend": "onnxruntime", "onnx_dir": local}], **text))
    assert "6.9B parameters" in sentence(client.predict(model="databricks/dolly-v2-7b", **text))
    assert "Max new tokens is capped at 256" in sentence(client.predict(model=DEFAULT, max_new_tokens=4096, **text))
    assert "Timed repeats is capped at 3" in sentence(client.predict(model=DEFAULT, repeats=20, **text))
    assert "gated" in sentence(client.predict(model="meta-llama/Llama-2-7b-chat-hf", **text))
    image = {"prompt": "a red circle", "negative_prompt": "", "guidance_scale": 4.0, "seed": 0, "height": 0,
             "width": 0, "api_name": "/compare_image"}
    _gallery, result = client.predict(model=str(tiny_sd), backends="pytorch", steps=2, **image)
    assert "does not open paths" in sentence(result)
    _gallery, result = client.predict(model="scenes-64", backends="pytorch", steps=500, **image)
    assert "Steps are capped at 50" in sentence(result)
    _gallery, result = client.predict(model="scenes-64", steps=2, backends='[{"backend": "tensorrt", '
                                      '"engine_path": "/etc/unet.trt"}]', **image)
    assert "engine_path" in sentence(result)
    report = client.predict(model=local, candidate="onnxruntime", api_name="/check")
    assert report["broken"] and "does not open paths" in report["error"]
    with pytest.raises(Exception, match="diagnostics"):
        client.predict(api_name="/diagnostics")
    assert workers_of(public_app["pid"]) == []  # no preparation or backend worker ever started


def test_stop_ends_a_long_run_within_two_seconds_and_the_next_run_works(public_app, session_cache):
    client = Client(public_app["url"], verbose=False)
    short = {"prompt": "Why should one run machine learning models on-premises?", "model": DEFAULT,
             "backends": ["pytorch"], "warmup": 0, "api_name": "/compare_text"}
    first = client.predict(max_new_tokens=4, **short)  # loads the model: the long run below only generates
    assert first["error"] is None and first["results"][0]["error"] is None, first
    shown = json.dumps(first)  # what a visitor gets back names no folder of the server
    assert str(session_cache) not in shown and str(ROOT) not in shown and first["model"]["dir"] is None
    assert first["results"][0]["load"]["artifact_dir"] is None and first["results"][0]["log_tail"] == ""
    assert client.predict(api_name="/stop") == "You have no run in progress."
    job = client.submit(max_new_tokens=256, ignore_eos=True, **short)
    time.sleep(3)
    assert not job.done(), "the long run ended on its own before the Stop"
    workers = workers_of(public_app["pid"])
    asked = time.monotonic()
    assert "Stopped your run" in client.predict(api_name="/stop")
    result = job.result(timeout=30)
    took = time.monotonic() - asked
    assert took < 2.0, f"the run ended {took:.1f} s after Stop"
    assert result["results"][0]["error"] == "Stopped by you.", result
    # A stop is the visitor's, not a failure: no verdict, no BROKEN, what it had written kept.
    stopped = result["results"][0]
    assert result["phase"] == "stopped" and stopped["stopped"] and stopped["verdict"] is None, result
    assert stopped["text"], "the answer written until the stop was thrown away"
    assert set(workers) - set(workers_of(public_app["pid"])), "the generating worker was not ended"
    again = client.predict(max_new_tokens=4, **short)
    assert again["results"][0]["error"] is None and again["results"][0]["token_ids"] == \
        first["results"][0]["token_ids"]


@pytest.mark.browser
def test_the_page_opens_on_the_shipped_run_with_the_public_limits(public_app):
    from playwright.sync_api import sync_playwright

    from tests.support.browser import CHROMIUM_FLAGS, chromium_path

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        page.goto(public_app["url"])
        page.wait_for_function("document.querySelector('#run-status')?.innerText.includes('STORED RUN')",
                               timeout=60_000)
        status = page.locator("#run-status").inner_text()
        assert "Verdicts" in status and "MATCH" in status, status
        for name in ("pytorch", "onnxruntime"):
            assert page.locator(f"#answer-{name} textarea").input_value().strip()
            assert "MATCH" in page.locator(f"#panel-{name}").inner_text()
        assert "Public server" in page.locator("#public-limits").inner_text()
        assert page.get_by_label("Existing ONNX export (optional)").count() == 0  # no server paths to type
        page.get_by_role("tab", name="Image").click()
        page.wait_for_function("document.querySelector('#image-status')?.innerText.includes('STORED RUN')")
        page.locator("#image-onnxruntime img").first.wait_for(timeout=30_000)
        assert page.locator("#image-onnxruntime img").count() == 1
        browser.close()


def test_the_broken_example_runs_on_a_public_server(public_app, session_cache):
    """The server's own broken export passes the gate (a visitor's path would not) and names no server folder."""
    client = Client(public_app["url"], verbose=False)
    result = client.predict(broken=True, api_name="/example_text")
    assert result["error"] is None, result
    assert [r["verdict"]["kind"] for r in result["results"]] == ["MATCH", "GIBBERISH"]
    shown = json.dumps(result)
    assert str(session_cache) not in shown and str(ROOT) not in shown
