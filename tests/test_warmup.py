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
    arena.exclusive().acquire()  # as the warm-up's run holds it while it prepares
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
        arena.exclusive().release()
    visitor.join(300)
    assert not visitor.is_alive()


def test_the_app_serves_once_the_default_text_models_are_ready_except_on_a_space(monkeypatch):
    from app import parse_args

    monkeypatch.delenv("SPACE_ID", raising=False)
    assert parse_args([]).serve_when_ready is True
    assert parse_args(["--no-serve-when-ready"]).serve_when_ready is False
    monkeypatch.setenv("SPACE_ID", "someone/arena")  # a Space's page answers at once and shows the progress
    assert parse_args([]).serve_when_ready is False


def test_a_visitors_run_goes_before_the_next_background_step():
    """The run lock: a background step (the warm-up's) waits while a visitor's run is under way or waits, so a
    click during the start-up preparation waits for the step under way at most."""
    import threading
    import time

    from arena.running.runlock import BACKGROUND, RunLock

    lock, order = RunLock(), []

    def background_steps() -> None:
        BACKGROUND.set(True)
        for i in range(3):
            with lock:
                order.append(f"background {i}")
                time.sleep(0.05)

    def visitor_run() -> None:
        with lock.visitor_run():
            for i in range(3):
                with lock:
                    order.append(f"visitor {i}")
                time.sleep(0.02)  # between its steps (a yield to the page): no background step slips in

    lock.acquire()  # the background's step under way when the visitor clicks
    background = threading.Thread(target=background_steps)
    background.start()
    visitor = threading.Thread(target=visitor_run)
    visitor.start()
    deadline = time.monotonic() + 10
    while lock._visitors_waiting != 1:  # both wait now: the visitor for its first step, the background for its own
        assert time.monotonic() < deadline
        time.sleep(0.01)
    lock.release()
    background.join(5)
    visitor.join(5)
    assert order == ["visitor 0", "visitor 1", "visitor 2", "background 0", "background 1", "background 2"], order


def test_prepare_runs_the_warm_up_to_the_end_and_prints_its_phases(arena, tiny_llama):
    """`python -m arena prepare`'s warm-up, in the foreground; the app serves once the first request is ready
    (`wait_first`), before the ones after it."""
    from arena.types import ImageRunRequest

    text = TextRunRequest(model=str(tiny_llama), prompt="Hello", backends=(BackendSpec("pytorch"),),
                          max_new_tokens=2, warmup=0)
    image = ImageRunRequest(model="/no/such/pipeline", prompt="a red square", backends=(BackendSpec("pytorch"),))
    lines: list[str] = []
    first_ready_during_the_image: list[bool] = []
    warm_up = WarmUp(arena, [text, image])

    def report(line: str) -> None:
        lines.append(line)
        if "image" in line and not first_ready_during_the_image:
            first_ready_during_the_image.append(warm_up.wait_first(0))

    warm_up._report = report
    problems = warm_up.run()
    assert first_ready_during_the_image == [True], lines
    assert len(problems) == 1 and problems[0].startswith("image: ") and "does not exist" in problems[0], problems
    assert any("PyTorch" in line for line in lines) and lines[-1].startswith("⚠️"), lines


def test_preload_starts_the_workers_with_their_imports_and_names_what_is_missing(arena, tmp_path):
    from arena.core import Arena
    from arena.running.host import BackendHost

    fresh = Arena(cache_dir=tmp_path, environment=arena.environment())  # no worker yet
    try:
        assert fresh.worker_pids() == {}
        for thread in fresh.preload((BackendSpec("pytorch"),)):
            thread.join(120)
        pids = fresh.worker_pids()
        assert set(pids) == {"prepare", "pytorch-cpu"} and all(pids.values()), pids  # started, with their imports
        assert fresh._backend_worker(BackendSpec("pytorch")).preload() == []
    finally:
        fresh.close()

    host = BackendHost.__new__(BackendHost)  # a backend whose runtime is not installed
    host.backend = type("Missing", (), {"preload_modules": ("no_such_runtime_module",)})()
    assert host.preload() == ["import no_such_runtime_module: ModuleNotFoundError: No module named "
                              "'no_such_runtime_module'"]
