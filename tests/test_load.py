"""Load sweeps (`arena.serving`, docs/load.md).

Fast: the figures from clock readings (percentiles, throughput, goodput), the request's levels and refusals, the
public refusal through the API function. Slow: real servers started here on loopback (tests/support/servers.py):
llama.cpp's server (llama-cpp-python, queueing concurrent requests) swept through the CLI with PyTorch as the
reference; `transformers serve` with continuous batching, whose total throughput rises from 1 to 2 users; then the
llama.cpp server killed mid-sweep. Few prompts, few tokens, levels 1 and 2: the timings are not the point.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from arena.public.policy import Policy
from arena.serving.api import load_sweep_values
from arena.serving.metrics import LevelFigures, Objectives, RequestRecord
from arena.serving.report import report_csv, report_markdown
from arena.serving.request import LoadRunRequest
from arena.serving.sweep import PUBLIC_REFUSAL, run_sweep
from tests.support.servers import llama_cpp_server, transformers_serve

SERVER = {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1"}


def record(i: int, start: float, ttft: float, end: float, tokens: int = 5, error: str | None = None):
    return RequestRecord(prompt_index=i, start_s=start, end_s=end, ttft_s=None if error else ttft,
                         output_tokens=0 if error else tokens, error=error)


def test_figures_from_clock_readings():
    records = [record(0, 0.0, 0.2, 1.0), record(1, 0.0, 0.4, 2.0), record(0, 1.0, 0.1, 1.5),
               record(1, 2.0, 0.0, 2.5, error="The server failed (HTTP 500: boom).")]
    figures = LevelFigures.from_records(records, Objectives(ttft_s=0.3, itl_s=0.25), expected_tokens=5)
    assert (figures.requests, figures.completed, figures.failed) == (4, 3, 1)
    assert figures.failures == {"The server failed (HTTP 500: boom).": 1}
    assert figures.duration_s == pytest.approx(2.5) and figures.output_tokens == 15
    assert figures.output_tokens_per_s == pytest.approx(6.0) and figures.requests_per_s == pytest.approx(1.2)
    # ITL = (e2e - ttft) / (tokens - 1): 0.2, 0.4, 0.1 s
    assert figures.itl_s.p50 == pytest.approx(0.2) and figures.itl_s.max == pytest.approx(0.4)
    assert figures.ttft_s.p50 <= figures.ttft_s.p90 <= figures.ttft_s.p99 <= figures.ttft_s.max
    assert figures.e2e_s.p50 == pytest.approx(1.0)
    # good: TTFT ≤ 0.3 s and ITL ≤ 0.25 s: the first and the third (the second's TTFT is 0.4 s; the fourth failed)
    assert figures.goodput_share == pytest.approx(0.5) and figures.goodput_requests_per_s == pytest.approx(0.8)
    assert figures.output_tokens_per_s_per_user == pytest.approx((5 + 2.5 + 10) / 3)
    assert figures.objectives == "TTFT ≤ 0.3 s, ITL ≤ 250 ms"


def test_the_request_says_what_is_wrong_in_one_sentence():
    assert LoadRunRequest(backends=(SERVER,)).levels() == ("concurrency", (1, 2, 4, 8))
    assert LoadRunRequest(backends=(SERVER,), rates="0.5, 2").levels() == ("rate", (0.5, 2.0))
    assert LoadRunRequest(backends=(SERVER,), concurrency="1,x").refuse() == \
        "The concurrency levels are numbers separated by commas (like 1,2,4,8), not 'x'."
    assert LoadRunRequest(backends=(SERVER,), concurrency="1,1.5").refuse() == \
        "Each concurrency level is a whole number above 0, not '1.5'."
    assert LoadRunRequest().refuse().startswith("Give the server to sweep")
    assert LoadRunRequest(backends=(SERVER,), requests=0).refuse() == "Requests per level must be between 1 and " \
        "10000, not 0."
    with pytest.raises(ValueError, match=r"measures servers \(openai with base_url=...\), not .pytorch."):
        LoadRunRequest(backends=("pytorch",))
    assert len(LoadRunRequest(backends=(SERVER,)).prompt_list()) == 4
    assert LoadRunRequest(backends=(SERVER,), prompts="a\n\n b ").prompt_list() == ("a", "b")


def test_public_mode_refuses_every_sweep_before_anything_runs():
    public = SimpleNamespace(policy=Policy(public=True))  # nothing else of the arena may be touched
    values = {"backends": [SERVER], "concurrency": "1,2"}
    assert load_sweep_values(public, values)["error"] == PUBLIC_REFUSAL
    assert run_sweep(public, LoadRunRequest(backends=(SERVER,)))["error"] == PUBLIC_REFUSAL
    assert "load generator" in PUBLIC_REFUSAL


# --- real servers -----------------------------------------------------------------------------------------------
FEW = {"prompts": "Why should one run machine learning models on-premises?\nWrite a short poem about the sea.",
       "max_new_tokens": 8, "warmup": 1}


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    # Queueing, not interrupting: llama-cpp-python's default (--interrupt_requests True) ends a stream when
    # another request arrives, which a sweep reports as answers cut short (docs/load.md).
    with llama_cpp_server(tmp_path_factory.mktemp("llama"), "--interrupt_requests", "False") as server:
        yield server


def ordered(latency: dict) -> bool:
    return latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]


@pytest.mark.slow
def test_llama_cpp_server_sweep_through_the_cli_judged_against_pytorch(llama_server, session_cache, tmp_path,
                                                                      capsys):
    from arena.__main__ import main

    url, _ = llama_server
    code = main(["load", "--backend", f"openai:base_url={url}", "--concurrency", "1,2", "--requests", "2",
                 "--prompts", FEW["prompts"], "--max-new-tokens", "8", "--cache-dir", str(session_cache),
                 "--report", str(tmp_path)])
    table = capsys.readouterr().out
    sweep = json.loads((tmp_path / "arena-load.json").read_text())
    assert code == 0, table
    server = sweep["servers"][0]
    assert server["error"] is None and [lv["level"] for lv in server["levels"]] == [1, 2]
    assert sweep["reference"]["label"].startswith("PyTorch") and len(sweep["reference"]["answers"]) == 2
    for level in server["levels"]:
        f = level["figures"]
        assert (f["completed"], f["failed"], f["output_tokens"]) == (2, 0, 16), f
        assert ordered(f["ttft_s"]) and ordered(f["itl_s"]) and ordered(f["e2e_s"])
        assert f["ttft_s"]["max"] < f["e2e_s"]["max"] and f["output_tokens_per_s"] > 0
        assert level["verdict"]["kind"] in ("MATCH", "DRIFT"), level["verdict"]  # Q4_1 against fp32
        assert len(level["answers"]) == 2 and all(len(a["token_ids"]) == 8 for a in level["answers"])
        assert {"busy", "reasons", "others_share"} <= set(level["machine"])
    # llama-cpp-python runs one request at a time: at 2 users the second waits its turn (TTFT includes the queue)
    one, two = (lv["figures"] for lv in server["levels"])
    assert two["ttft_s"]["max"] > one["ttft_s"]["min"]
    assert "1 user " in table and "2 users" in table and "TTFT p50/p90/p99 ms" in table
    from ui.load_tab import render

    shown = render(sweep)  # the Load tab's chart (TTFT and ITL p50/p90, total tok/s) and summary table
    assert len(shown["figure"].data) == 5 and len(shown["rows"]) == 2 and shown["status"].startswith("Done.")
    assert len(report_csv(sweep).splitlines()) == 3 and "| endpoint | level |" in report_markdown(sweep)
    assert (tmp_path / "arena-load.md").read_text().count("python -m arena load") == 1
    print(f"\n{table}")


@pytest.mark.slow
def test_transformers_serve_batches_two_users_for_more_total_throughput(arena, tmp_path_factory):
    from arena.types import TextRunRequest

    model_dir = arena.prepare_text(TextRunRequest(prompt="Hi", backends=())).model_dir
    # Continuous batching, its KV cache kept small: unbounded, it took 13 GB of this machine's memory on CPU.
    with transformers_serve(tmp_path_factory.mktemp("serve"), "--continuous-batching", "--cb-num-blocks", "64",
                            "--cb-max-batch-tokens", "256") as (url, _):
        request = LoadRunRequest(backends=({"backend": "openai", "base_url": url, "model": model_dir},),
                                 concurrency="1,2", requests=4, reference="off", **FEW)
        # The gain is ~10-60% on 2 shared cores, inside one sweep's noise: up to three sweeps, each printed; the
        # server must show it in one of them.
        for attempt in range(3):
            sweep = run_sweep(arena, request)
            server = sweep["servers"][0]
            assert sweep["error"] is None and server["error"] is None, sweep
            one, two = (lv["figures"] for lv in server["levels"])
            print(f"\nsweep {attempt + 1}: {one['output_tokens_per_s']:.1f} tok/s at 1 user, "
                  f"{two['output_tokens_per_s']:.1f} at 2")
            if two["output_tokens_per_s"] > one["output_tokens_per_s"]:
                break
    assert one["completed"] == two["completed"] == 4, server
    assert two["output_tokens_per_s"] > one["output_tokens_per_s"], (one, two)
    assert server["levels"][0]["verdict"]["kind"] == "MATCH"  # its own first level: the baseline
    print(f"\ntransformers serve (continuous batching): {one['output_tokens_per_s']:.1f} tok/s at 1 user, "
          f"{two['output_tokens_per_s']:.1f} at 2; second level: {server['levels'][1]['verdict']['reason']}")


@pytest.mark.slow
def test_a_server_killed_mid_sweep_gives_reasons_and_keeps_the_levels_measured(arena, llama_server):
    """Last in this module: it kills the module's llama.cpp server."""
    url, process = llama_server
    second_level = threading.Event()

    def watch(_fraction, description: str) -> None:
        if "2 user(s): 1 of" in description:
            second_level.set()

    result: dict = {}
    request = LoadRunRequest(backends=({"backend": "openai", "base_url": url},), concurrency="1,2,4", requests=4,
                             reference="off", **(FEW | {"max_new_tokens": 24}))
    sweeper = threading.Thread(target=lambda: result.update(run_sweep(arena, request, watch)))
    sweeper.start()
    assert second_level.wait(180), "the sweep never reached its second level"
    os.killpg(process.pid, signal.SIGKILL)
    sweeper.join(180)
    server = result["servers"][0]
    first, second = server["levels"][:2]
    assert first["figures"]["completed"] == 4 and first["figures"]["failed"] == 0  # kept as measured
    assert second["figures"]["failed"] >= 1, second["figures"]
    reasons = list(second["figures"]["failures"])
    assert all(r.startswith((f"The server at {url} stopped answering after", f"Nothing answers at {url}",
                             f"The server at {url} closed the connection")) for r in reasons), reasons
    assert all("\n" not in r and r.endswith("?") for r in reasons), reasons
    assert "failed to reach the server" in (server["stopped_early"] or ""), server
    print(f"\nkilled mid-sweep: {second['figures']['failures']}; {server['stopped_early']}")


def test_poisson_arrivals_and_a_short_answer_against_a_small_stdlib_server(tmp_path):
    """The open loop's arrivals (seeded exponential gaps, the first at once) and the rule that an answer shorter
    than asked fails its request, against the vLLM-like stdlib server of tests/test_openai_backend.py."""
    from arena.serving.sweep import _run_level
    from backends.contract import GenerationSettings
    from tests.test_openai_backend import ANSWER_IDS, PROMPT_IDS, FakeServer, QuietServer, load

    FakeServer.mode, FakeServer.seen = "ok", []
    server = QuietServer(("127.0.0.1", 0), FakeServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend, _ = load({"base_url": f"http://127.0.0.1:{server.server_address[1]}/v1", "model": "served/model"},
                          tmp_path)
        full = backend.request_body(list(PROMPT_IDS), GenerationSettings(len(ANSWER_IDS), (2,), 2, ignore_eos=True))
        records = _run_level(backend, [full], "rate", 5.0, 6, 7, None, lambda done: None, None)
        assert [r.output_tokens for r in records] == [len(ANSWER_IDS)] * 6 and all(r.ok for r in records)
        starts = [r.start_s for r in records]
        gaps = np.random.default_rng(7).exponential(1 / 5.0, size=6)
        # spread as drawn (the first at once), not all at once; a busy machine only delays them
        assert starts[-1] - starts[0] >= 0.8 * (gaps.sum() - gaps[0])
        # The server has only 5 tokens: asked for 8 with EOS ignored, the answer is short and has no finish reason.
        short = _run_level(backend, [full | {"max_tokens": 8}], "concurrency", 2, 2, 0, None, lambda done: None, None)
        assert [r.error for r in short] == ["The server ended the answer after 5 of 8 tokens with finish reason "
                                            "None although EOS is ignored: it cut the answer short."] * 2
        backend.unload()
    finally:
        server.shutdown()
        server.server_close()
