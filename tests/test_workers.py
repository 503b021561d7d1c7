"""The worker harness against real child processes: values, progress, errors, segfaults, timeouts."""

import time
from pathlib import Path

import pytest

from arena.running.workers import (
    Hosted,
    MemoryLimit,
    RunStopped,
    Worker,
    WorkerCrashed,
    WorkerFailed,
    WorkerOverBudget,
    WorkerOverMemory,
    run_isolated,
)


@pytest.fixture
def toy(tmp_path):
    worker = Worker("toy", "tests.support.helpers:Toy", init_args=(100,), log_dir=tmp_path)
    yield worker
    worker.stop()


def test_call_returns_value_and_forwards_progress(toy):
    events = []
    assert toy.call("add", 1, 2, progress=lambda f, d: events.append((f, d))) == 103
    assert events == [(1 / 3, "step 1"), (2 / 3, "step 2"), (1.0, "step 3")]
    assert toy.call("count") == 1  # the same long-lived process kept its state


def test_a_hosted_object_is_called_like_itself_and_a_wrong_call_never_crosses_the_pipe(toy):
    from tests.support.helpers import Toy

    hosted = Hosted(toy, Toy)
    assert hosted.add(1, 2) == 103 and toy.starts == 1
    with pytest.raises(AttributeError, match="no method 'ad'"):
        hosted.ad(1, 2)
    with pytest.raises(AttributeError, match="no method '_secret'"):
        hosted._secret()
    with pytest.raises(TypeError):
        hosted.add(1)  # checked against Toy.add's signature here, not in the worker
    assert hosted.count() == 1  # the wrong calls never reached the worker


def test_exception_is_a_value_and_the_worker_survives(toy):
    pid = toy.call("pid")
    with pytest.raises(WorkerFailed, match="ValueError: bad input, clearly explained"):
        toy.call("fail")
    assert toy.call("pid") == pid


def test_segfault_becomes_a_clear_error_and_the_worker_restarts(toy):
    first = toy.call("pid")
    with pytest.raises(WorkerCrashed) as info:
        toy.call("crash")
    assert "SIGSEGV" in str(info.value) and "'crash'" in str(info.value)
    assert "about to touch address zero" in info.value.log_tail
    second = toy.call("pid")
    assert second != first and toy.starts == 2


def test_timeout_stops_the_worker(toy):
    with pytest.raises(WorkerCrashed, match="did not finish 'sleep' within 1 s"):
        toy.call("sleep", 30, timeout=1)
    assert toy.call("add", 0, 0) == 100


def test_stop_ends_the_process(toy):
    toy.call("pid")
    toy.stop()
    assert not toy.is_alive()


def test_run_isolated_reports_success_failure_and_crash(tmp_path):
    out = tmp_path / "out.txt"
    run_isolated("tests.support.helpers:isolated_ok", str(out), description="toy export")
    assert out.read_text() == "done"
    with pytest.raises(WorkerCrashed, match="toy export failed: RuntimeError: exporter said no"):
        run_isolated("tests.support.helpers:isolated_raise", description="toy export")
    with pytest.raises(WorkerCrashed) as refused:  # a user's sentence from the target is shown as it is
        run_isolated("tests.support.helpers:isolated_refuse", description="toy export")
    assert str(refused.value) == "The toy exporter cannot export ToyForCausalLM (toy): its cache is not a KV cache."
    log = tmp_path / "log.txt"
    log.write_text("")
    with pytest.raises(WorkerCrashed, match="toy export crashed: the process was killed by SIGSEGV"):
        run_isolated("tests.support.helpers:segfault", description="toy export", log_path=Path(log))


def test_stop_ends_the_call_and_everything_it_started_within_a_second(toy, tmp_path):
    """The Stop button's mechanism: a set cancel event kills the worker and its children (an export)."""
    import os
    import threading
    import time

    import psutil

    pid_file = tmp_path / "child.pid"
    first = toy.call("pid")
    cancel = threading.Event()
    stopper = threading.Timer(1.0, cancel.set)
    stopper.start()
    start = time.monotonic()
    with pytest.raises(RunStopped, match="Stopped"):
        toy.call("sleep_with_child", 60, str(pid_file), cancel=cancel)
    took = time.monotonic() - start - 1.0
    assert took < 1.0, f"stopping took {took:.2f} s"
    for pid in (int(pid_file.read_text()), first):  # SIGKILL lands within moments; a zombie has stopped too
        deadline = time.monotonic() + 2
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, f"process {pid} still runs"
            time.sleep(0.05)
    assert toy.call("pid") not in (first, os.getpid())  # the next call gets a fresh worker
    with pytest.raises(RunStopped):  # a run already stopped does not start its next call
        toy.call("pid", cancel=cancel)


def test_stop_kills_a_busy_worker_and_it_never_starts_again(toy):
    """The app shutting down mid-run: stop() does not wait for the call; the caller gets WorkerCrashed, and a
    later call (the run moving on to its next step) does not start a new process that would outlive the app."""
    import threading
    import time

    toy.call("pid")
    failures = []

    def busy():
        try:
            toy.call("sleep", 60)
        except WorkerCrashed as exc:
            failures.append(str(exc))

    caller = threading.Thread(target=busy)
    caller.start()
    time.sleep(0.5)
    started = time.monotonic()
    toy.stop()
    caller.join(10)
    assert time.monotonic() - started < 5 and not caller.is_alive() and len(failures) == 1, failures
    with pytest.raises(WorkerCrashed, match="stopped: the app is shutting down"):
        toy.call("pid")
    assert not toy.is_alive() and toy.starts == 1


def test_a_closed_arena_starts_no_worker(tmp_path):
    from arena.core import Arena
    from arena.types import BackendSpec, TextRunRequest

    arena = Arena(cache_dir=tmp_path, environment={"cpu_count": 1})
    arena.close()
    result = arena.run_text_to_end(TextRunRequest(model="any", prompt="hi", backends=(BackendSpec("pytorch"),)))
    assert result.error == "The app is shutting down: no new worker starts." and arena.worker_pids() == {}


def test_stop_answers_once_the_stopped_run_has_ended(tmp_path):
    import threading
    import time

    from arena.core import Arena

    arena = Arena(cache_dir=tmp_path, environment={"cpu_count": 1})
    ended_at = []

    def run():  # a run as the UI and API hold it: the block ends a little after the stop signal
        with arena.stoppable("visitor") as cancel:
            cancel.wait(10)
            time.sleep(0.3)
            ended_at.append(time.monotonic())

    thread = threading.Thread(target=run)
    thread.start()
    while "visitor" not in arena.stops:
        time.sleep(0.01)
    assert arena.stop("someone else") is None
    assert arena.stop("visitor") is True
    answered = time.monotonic()
    thread.join(5)
    assert ended_at and ended_at[0] <= answered, "Stop answered before the run had ended"
    assert arena.stop("visitor") is None and "visitor" not in arena.stops
    arena.close()


def test_a_stop_that_times_out_says_the_run_is_still_stopping(tmp_path):
    import threading
    import time

    from arena.core import Arena

    arena = Arena(cache_dir=tmp_path, environment={"cpu_count": 1})
    release = threading.Event()

    def run():  # a run that does not look at its stop signal yet (say, waiting for the cores)
        with arena.stoppable("visitor"):
            release.wait(10)

    thread = threading.Thread(target=run)
    thread.start()
    while "visitor" not in arena.stops:
        time.sleep(0.01)
    assert arena.stop("visitor", wait_s=0.2) is False
    assert arena.stop("visitor", wait_s=0.2) is False  # a second stop of the same run: still stopping, not "no run"
    release.set()
    thread.join(5)
    assert arena.stop("visitor") is None
    arena.close()


def test_a_worker_over_its_memory_limit_is_stopped_with_a_sentence_and_the_next_call_runs(toy):
    limit = MemoryLimit(limit=400 << 20, what="The toy", why="a test's limit")
    start = time.monotonic()
    with pytest.raises(WorkerOverMemory) as caught:
        toy.call("hog", 50, 100, memory_limit=limit)  # 5 GB asked for, 50 MB at a time
    message = str(caught.value)
    assert message.startswith("The toy used ") and "over its limit of 0.4 GB on this server (a test's limit)" in message
    assert time.monotonic() - start < 10
    assert toy.peak_rss < 600 << 20, toy.peak_rss  # sampled every 0.1 s: stopped within a step or two of the line
    assert toy.call("add", 1, 2) == 103  # a fresh worker


def test_the_kernel_refuses_a_worker_memory_past_its_data_limit(tmp_path):
    worker = Worker("capped", "tests.support.helpers:Toy", log_dir=tmp_path, data_limit=600 << 20)
    try:
        limit = MemoryLimit(limit=8 << 30, what="The capped toy")
        words = "The capped toy asked for more memory than its limit of 0.6 GB on this server allows"
        with pytest.raises(WorkerOverMemory, match=words):
            worker.call("hog", 2048, 1, memory_limit=limit)  # one 2 GB allocation: no sample sees it, the kernel does
        assert worker.call("add", 1, 2) == 3
    finally:
        worker.stop()


def test_a_budgeted_step_stuck_in_native_code_is_stopped_at_its_budget(toy):
    start = time.monotonic()
    with pytest.raises(WorkerOverBudget, match="Matching the repository's pattern took longer than its budget of 1 s"):
        toy.call("spin_in_native_code", 1.0)
    assert time.monotonic() - start < 3
    assert toy.call("add", 1, 2) == 103
