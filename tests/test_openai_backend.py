"""The OpenAI-compatible backend.

Fast tests: the request it sends and shows (the key never in it), and one sentence for each failure, against a
small stdlib HTTP server here that answers like vLLM (token ids in the stream) or fails on purpose.
The shared backend contract (`TestOpenAIContract`: declarations, specs, public-mode gate; no local model).
Slow tests: two real servers a user would run, on loopback, each started once for this module, compared with
PyTorch on the default model through the app's /compare_text (few tokens): llama.cpp's server (llama-cpp-python) on
the embedded GGUF, and `transformers serve` on the materialized model; then the llama.cpp server is killed mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from arena.preparing.cache import ArtifactCache
from arena.public.policy import ENDPOINTS_VARIABLE
from arena.running.host import load_context
from arena.types import BackendSpec, PreparedText
from backends.contract import GenerationSettings, LoadContext
from backends.openai_backend import OpenAIBackend, ServerError
from tests.support.app import free_port
from tests.support.backend_contract import BackendContract
from tests.support.servers import llama_cpp_server, transformers_serve

SECRET = "sk-test-0123456789abcdef"
PROMPT_IDS = tuple(range(100, 130))
ANSWER_IDS = [11, 12, 13, 14, 15]


class TestOpenAIContract(BackendContract):
    backend = "openai"
    cpu_spec = {"base_url": "http://127.0.0.1:8000/v1"}
    supports_image = False
    unavailable_env = {"httpx": {"installed": False}}
    local_model = False
    local_model_skip = "a client of a server: the fake- and real-server tests below run it"


def one_sentence(message: str) -> bool:
    return bool(message) and "\n" not in message and message.endswith((".", "?")) and SECRET not in message


class FakeServer(BaseHTTPRequestHandler):
    """Answers like vLLM: /v1/models, and /v1/completions streaming token ids; or fails as ``mode`` says."""

    mode = "ok"
    seen: list = []

    def log_message(self, *args):
        pass

    def _json(self, code: int, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "served/model"}, {"id": "other/model"}]})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, dict(self.headers), body))
        mode = type(self).mode
        if mode == "401":
            return self._json(401, {"error": {"message": "Invalid API key", "code": 401}})
        if mode == "500":
            return self._json(500, {"error": {"message": "CUDA out of memory", "code": 500}})
        if mode == "slow":
            time.sleep(1.5)
        if body.get("model") != "served/model":
            return self._json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                              "type": "NotFoundError", "code": 404}})
        if self.path != "/v1/completions" or not isinstance(body.get("prompt"), list):
            return self._json(400, {"error": {"message": "unsupported"}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for token in ANSWER_IDS[:body["max_tokens"]]:
            event = {"choices": [{"index": 0, "text": f"<{token}>", "token_ids": [token],
                                  "logprobs": {"tokens": [f"token_id:{token}"], "token_logprobs": [-0.1]},
                                  "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that gave up (the timeout test) is expected


@pytest.fixture
def fake_server():
    FakeServer.mode, FakeServer.seen = "ok", []
    server = QuietServer(("127.0.0.1", 0), FakeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def prepared() -> PreparedText:
    return PreparedText(model_dir="/nonexistent", model_name="m", source="local", rendered_prompt="<prompt>",
                        prompt_token_ids=PROMPT_IDS, eos_token_ids=(2,), pad_token_id=2, context_length=2048,
                        fingerprint="f", user_prompt="Hi", prompt_format="chat")


def load(spec: dict, tmp_path) -> tuple[OpenAIBackend, LoadContext]:
    backend = OpenAIBackend()
    # As a worker's host makes it: the operator's configured endpoints (ARENA_ENDPOINTS) come in the context.
    ctx = load_context(ArtifactCache(tmp_path), lambda *a, **k: None)
    backend.load(prepared(), BackendSpec.from_any({"backend": "openai", **spec}), ctx)
    return backend, ctx


def test_token_ids_come_from_the_server_and_the_key_is_never_shown(fake_server, tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_TEST_KEY", SECRET)
    backend, ctx = load({"base_url": fake_server, "model": "served/model", "api_key_env": "ARENA_TEST_KEY"},
                        tmp_path)
    assert "token ids from the server" in ctx.notes and "prompt sent as the prepared token ids" in ctx.notes[0]
    seen: list[int] = []
    settings = GenerationSettings(5, (2,), 2, ignore_eos=True)
    assert backend.generate_text(list(PROMPT_IDS), settings, seen.append) == ANSWER_IDS == seen
    path, headers, body = FakeServer.seen[-1]
    assert path == "/v1/completions" and headers["Authorization"] == f"Bearer {SECRET}"
    assert body["prompt"] == list(PROMPT_IDS) and body["temperature"] == 0 and body["stream"] is True
    assert body["ignore_eos"] is True and body["logit_bias"] == {"2": -100} and body["max_tokens"] == 5
    shown = backend.run_notes[0]
    assert shown.startswith(f"request: POST {fake_server}/completions · Authorization: Bearer *** · ")
    assert '"prompt": [100, 101, 102, 103, 104, 105, 106, 107, "… 22 more ids"]' in shown
    everything = json.dumps([ctx.notes, backend.run_notes, backend.runtime_info()])
    assert SECRET not in everything and "ARENA_TEST_KEY set" in everything
    with pytest.raises(NotImplementedError):
        backend.forward_logits(list(PROMPT_IDS))
    backend.unload()


def test_empty_model_takes_the_only_served_one_or_says_which_to_pick(fake_server, tmp_path):
    with pytest.raises(ServerError) as error:
        load({"base_url": fake_server}, tmp_path)
    assert "serves 2 models (served/model, other/model): pick one" in str(error.value)
    assert one_sentence(str(error.value))


@pytest.mark.parametrize(("mode", "spec", "words"), [
    ("ok", {"model": "missing/model"}, "does not serve model 'missing/model' (HTTP 404: The model `missing/model` "
                                       "does not exist); it serves: served/model, other/model."),
    ("401", {"model": "served/model"}, "refused the request (HTTP 401: Invalid API key): set the environment "
                                       "variable OPENAI_API_KEY."),
    ("500", {"model": "served/model"}, "failed (HTTP 500: CUDA out of memory)."),
    ("slow", {"model": "served/model"}, "sent nothing for 0.5 s (timeout): is it overloaded or stuck?"),
])
def test_each_failure_is_one_sentence(fake_server, tmp_path, monkeypatch, mode, spec, words):
    import backends.openai_backend as module

    monkeypatch.setattr(module, "READ_TIMEOUT_S", 0.5)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    FakeServer.mode = mode
    with pytest.raises(ServerError) as error:
        load({"base_url": fake_server, **spec}, tmp_path)
    message = str(error.value)
    assert message == f"The server at {fake_server} {words}", message
    assert one_sentence(message)


def test_connection_refused_and_bad_urls(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ServerError) as error:
        load({"base_url": url}, tmp_path)
    assert str(error.value) == f"Nothing answers at {url} (connection refused): is the server running?"
    spec = BackendSpec.from_any({"backend": "openai", "base_url": "file:///etc/passwd"})
    assert "is not an http(s) URL" in OpenAIBackend.check_spec(spec, {})
    assert "Give the server's base URL" in OpenAIBackend.check_spec(BackendSpec.from_any("openai"), {})
    assert spec.label == "OpenAI-compatible server · file:///etc/passwd"
    named = BackendSpec.from_any({"backend": "server", "base_url": "vllm", "model": "m", "api_key_env": "MY_KEY"})
    assert named.backend == "openai" and named.label == "OpenAI-compatible server · m · vllm"  # never the key


def test_a_configured_endpoint_is_used_by_name_and_shown_by_name(fake_server, tmp_path, monkeypatch):
    monkeypatch.setenv(ENDPOINTS_VARIABLE, f"fake={fake_server.removesuffix('/v1')}")
    backend, _ctx = load({"base_url": "fake", "model": "served/model"}, tmp_path)
    assert backend.runtime_info()["provider"] == "served/model at endpoint 'fake'"
    backend.generate_text(list(PROMPT_IDS), GenerationSettings(2, (2,), 2), lambda t: None)
    assert fake_server not in json.dumps(backend.run_notes) and "POST endpoint 'fake'/completions" in \
        backend.run_notes[0]


# --- real servers through the app -------------------------------------------------------------------------------
DEFAULT = "smollm2-135m-instruct"
PROMPT = "Why should one run machine learning models on-premises?"


def judged(result: dict) -> list[dict]:
    assert result["error"] is None, result
    return result["results"]


RUN = {"prompt": PROMPT, "model": DEFAULT, "max_new_tokens": 8, "warmup": 0, "api_name": "/compare_text"}


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """llama.cpp's server (llama-cpp-python) on the embedded GGUF, once for this module: (url, process)."""
    with llama_cpp_server(tmp_path_factory.mktemp("llama")) as server:
        yield server


@pytest.fixture(scope="module")
def transformers_server(tmp_path_factory):
    """`transformers serve`, once for this module (it loads a model folder on its first request): the URL."""
    with transformers_serve(tmp_path_factory.mktemp("serve")) as (url, _process):
        yield url


@pytest.fixture(scope="module")
def client(app_server):
    from gradio_client import Client

    return Client(app_server["url"], verbose=False)


@pytest.mark.slow
def test_llama_cpp_server_against_pytorch(client, llama_server):
    llama_url, _ = llama_server
    # No model name: the only one it serves.
    result = client.predict(backends=["pytorch", {"backend": "openai", "base_url": llama_url}], **RUN)
    reference, served = judged(result)
    assert reference["verdict"]["kind"] == "MATCH" and served["error"] is None, served
    assert served["verdict"]["kind"] in ("MATCH", "DRIFT"), served["verdict"]  # Q4_1 vs its fp32 dequantization
    assert served["timings"]["ttft_s"] > 0 and served["timings"]["tokens_per_s"] > 0
    assert served["verdict"]["metrics"]["agreement"] >= 0.25 and served["text"].strip()
    assert served["label"] == f"OpenAI-compatible server · {llama_url}"
    notes = "; ".join(served["load"]["notes"])
    assert "request: POST " + llama_url in notes and '"repeat_penalty": 1.0' in notes
    assert "Bearer" not in notes or "Bearer ***" in notes
    print(f"\nllama.cpp: {served['verdict']['kind']} ({served['verdict']['reason']}); TTFT "
          f"{served['timings']['ttft_s'] * 1000:.0f} ms, {served['timings']['tokens_per_s']:.1f} tok/s; "
          f"PyTorch {reference['timings']['tokens_per_s']:.1f} tok/s; {notes}")


@pytest.mark.slow
def test_transformers_serve_on_the_materialized_model_matches_pytorch(client, transformers_server):
    url = transformers_server
    # The server loads a model on its first request: the folder the arena materialized the default model in.
    model_dir = client.predict(backends=["pytorch"], **(RUN | {"max_new_tokens": 1}))["model"]["dir"]
    result = client.predict(backends=["pytorch", {"backend": "openai", "base_url": url, "model": model_dir}], **RUN)
    reference, served = judged(result)
    assert served["error"] is None, served
    assert served["verdict"]["kind"] == "MATCH", served["verdict"]  # the same fp32 weights, the same rules
    assert served["token_ids"] == reference["token_ids"]
    assert served["timings"]["ttft_s"] > 0 and served["timings"]["tokens_per_s"] > 0
    notes = "; ".join(served["load"]["notes"])
    # transformers 5's server also answers /completions, which the client prefers (the server tokenizes the very
    # prompt text the arena rendered); transformers 4's answered /chat/completions only
    assert ("to /completions" in notes or "/chat/completions" in notes), notes
    assert "re-tokenized with the reference tokenizer" in notes, notes
    print(f"\ntransformers serve: {served['verdict']['kind']} ({served['verdict']['reason']}); TTFT "
          f"{served['timings']['ttft_s'] * 1000:.0f} ms, {served['timings']['tokens_per_s']:.1f} tok/s")


@pytest.mark.slow
def test_llama_cpp_server_killed_mid_run_is_one_sentence_and_the_app_keeps_answering(client, llama_server):
    """Last in this module: it kills the module's llama.cpp server."""
    import psutil

    llama_url, server = llama_server
    job = client.submit(backends=[{"backend": "openai", "base_url": llama_url}],
                        **(RUN | {"max_new_tokens": 400, "ignore_eos": True}))
    busy = psutil.Process(server.pid)
    start = sum(busy.cpu_times()[:2])
    deadline = time.monotonic() + 60
    while sum(busy.cpu_times()[:2]) - start < 1.5 and time.monotonic() < deadline and not job.done():
        time.sleep(0.1)
    assert not job.done(), job.result()
    os.killpg(server.pid, signal.SIGKILL)
    killed = judged(job.result(timeout=60))[0]
    assert killed["verdict"]["kind"] == "ERROR" and one_sentence(killed["error"]), killed
    assert killed["error"].startswith(f"The server at {llama_url} stopped answering after "), killed["error"]
    print(f"\nkilled mid-run: {killed['error']}")
    again = client.predict(backends=["pytorch", {"backend": "openai", "base_url": llama_url}],
                           **(RUN | {"max_new_tokens": 2}))
    reference, gone = judged(again)
    assert reference["error"] is None and gone["verdict"]["kind"] == "ERROR"
    assert gone["error"] == f"Nothing answers at {llama_url} (connection refused): is the server running?"
