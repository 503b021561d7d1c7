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


def test_the_app_warms_up_by_default_locally_too():
    from app import parse_args

    assert parse_args([]).warm_up is True and parse_args(["--no-warm-up"]).warm_up is False


def test_a_run_that_arrives_during_the_start_up_preparation_waits_for_it_and_says_so(arena, tiny_llama):
    import threading
    import time

    seen: list[str] = []
    request = TextRunRequest(model=str(tiny_llama), prompt="hi", backends=(BackendSpec("pytorch"),),
                             max_new_tokens=2, warmup=0)
    arena._run_lock.acquire()  # as the warm-up's run holds it while it prepares
    arena.busy_with = "the start-up preparation of the default models"
    try:
        visitor = threading.Thread(target=arena.run_text_to_end, args=(request, lambda _f, d: seen.append(d)))
        visitor.start()
        deadline = time.monotonic() + 30
        while not any(d.startswith("Waiting for the start-up preparation") for d in seen):
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
        assert visitor.is_alive()  # it waits: it does not prepare a second time beside the warm-up
    finally:
        arena.busy_with = None
        arena._run_lock.release()
    visitor.join(300)
    assert not visitor.is_alive()
