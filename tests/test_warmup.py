"""Start-up preparation: the default runs happen in the background through the same core, with a status line."""

from __future__ import annotations

from arena.running.warmup import WarmUp, default_requests
from arena.types import BackendSpec, TextRunRequest


def test_warm_up_prepares_in_the_background_and_says_when_ready(arena, tiny_llama):
    request = TextRunRequest(model=str(tiny_llama), prompt="Hello", backends=(BackendSpec("pytorch"),),
                             max_new_tokens=2, warmup=0)
    warm_up = WarmUp(arena, [request])
    assert "Preparing" in warm_up.status() and not warm_up.done
    assert warm_up.start().wait(300)
    assert warm_up.status().startswith("✅ Default models ready"), warm_up.status()


def test_warm_up_reports_what_went_wrong(arena):
    missing = TextRunRequest(model="/no/such/model", prompt="Hello", backends=(BackendSpec("pytorch"),))
    warm_up = WarmUp(arena, [missing]).start()
    assert warm_up.wait(120)
    assert "⚠️" in warm_up.status() and "does not exist" in warm_up.status()


def test_the_default_warm_up_covers_both_default_models():
    text, image = default_requests()
    assert text.model == "smollm2-135m-instruct" and image.model == "scenes-64"
    assert {b.backend for b in text.backends} == {b.backend for b in image.backends} == {"pytorch", "onnxruntime"}
