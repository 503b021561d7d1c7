"""What a model-server backend needs from the contract, shown with a server-like backend that needs no server
(tests/support/helpers.py `EchoServerBackend`): the prompt's text in every generation's settings, its run notes in the
panel, warm-up settings that keep them, "url" options as the operator's endpoints by name in public mode, secrets
hidden there, a "Run" box that starts unticked, no place in the Image tab, verdicts for a precision the arena does
not know, and the shared contract with the local-model tests skipped."""

from __future__ import annotations

import gradio as gr
import pytest

from arena.judging.verdicts import judge_text
from arena.public.policy import ENDPOINTS_VARIABLE, Policy, configured_endpoints
from arena.registry import register
from arena.types import BackendSpec, PreparedText, TextRunRequest
from tests.support.backend_contract import BackendContract
from tests.support.helpers import EchoServerBackend

register("echo-server", "tests.support.helpers:EchoServerBackend")


class TestEchoServer(BackendContract):
    backend = "echo-server"
    cpu_spec = {"base_url": "http://127.0.0.1:8000/v1"}
    supports_image = False
    unavailable_env = None
    local_model = False


def one_sentence(message: str) -> bool:
    return bool(message) and "\n" not in message and message.endswith(".") and message.count(". ") == 0


class Decoder:
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def test_the_host_hands_over_the_prompt_text_and_appends_the_run_notes(tmp_path):
    from arena.running.host import BackendHost

    host = BackendHost("tests.support.helpers:EchoServerBackend", str(tmp_path))
    host._tokenizers["/model"] = Decoder()
    prepared = PreparedText(model_dir="/model", model_name="m", source="local", rendered_prompt="<|user|>Hi",
                            prompt_token_ids=(1, 2), eos_token_ids=(0,), pad_token_id=0, context_length=64,
                            fingerprint="f", user_prompt="Hi", prompt_format="chat")
    spec = BackendSpec("echo-server", base_url="http://127.0.0.1:8000/v1")
    request = TextRunRequest(model="m", prompt="Hi", backends=(spec,), max_new_tokens=3, warmup=1)
    result = host.run_text(prepared, spec, request, lambda *a, **k: None)
    warm, timed = host.backend.seen
    assert (timed.rendered_prompt, timed.user_prompt, timed.prompt_format) == ("<|user|>Hi", "Hi", "chat")
    assert warm.max_new_tokens == 2 and warm.user_prompt == "Hi" and warm.eos_token_ids == (0,)
    assert result.token_ids == (5, 6, 7) and result.first_logits is None  # no logits: the comparison is skipped
    assert result.load.notes == ("connected to http://127.0.0.1:8000/v1", "request: chat prompt 'Hi', 3 tokens")
    again = host.run_text(prepared, spec, request, lambda *a, **k: None)  # loaded once: this run's notes only
    assert again.load.notes == ("connected to http://127.0.0.1:8000/v1", "model already loaded",
                                "request: chat prompt 'Hi', 3 tokens")


def test_public_mode_calls_only_the_operators_endpoints_by_name(monkeypatch):
    public = Policy(public=True)

    def refuse(**options):
        return public.refuse_spec(BackendSpec("echo-server", **options))

    monkeypatch.delenv(ENDPOINTS_VARIABLE, raising=False)
    problem = refuse(base_url="http://127.0.0.1:8000/v1")
    assert "configured no endpoint" in problem and "base_url" in problem and one_sentence(problem)
    monkeypatch.setenv(ENDPOINTS_VARIABLE, "vllm=http://10.0.0.5:8000/v1, llama = http://10.0.0.6:8080/v1,bad")
    assert configured_endpoints() == {"vllm": "http://10.0.0.5:8000/v1", "llama": "http://10.0.0.6:8080/v1"}
    for url in ("http://169.254.169.254/latest", "http://10.0.0.5:8000/v1", "llama2"):  # typed, raw, unknown
        problem = refuse(base_url=url)
        assert "by name (vllm, llama), never an address or a name a visitor makes up" in problem, problem
        assert one_sentence(problem) and "10.0.0" not in problem
    assert refuse(base_url="llama", model="smollm2") is None
    problem = refuse(base_url="vllm", key_env="HF_TOKEN")
    assert "key_env" in problem and "secret" in problem and one_sentence(problem)
    assert refuse(base_url="vllm", key_env="ECHO_KEY") is None  # the default
    problem = refuse()  # two endpoints: the visitor names one
    assert "vllm, llama" in problem and one_sentence(problem)
    monkeypatch.setenv(ENDPOINTS_VARIABLE, "only=http://10.0.0.5:8000/v1")
    assert refuse() is None  # the only one
    assert "Model servers: only." in public.describe()
    assert Policy.local().refuse_spec(BackendSpec("echo-server", base_url="http://127.0.0.1:1/v1",
                                                  key_env="MY_KEY")) is None


def options_of(cls):
    return {cls.name: {"title": cls.title, "availability": cls.availability({}), "options": cls.options({}),
                       "fields": cls.Options.fields_info(), "tasks": cls.tasks,
                       "enabled_by_default": cls.enabled_by_default}}


def test_the_ui_offers_endpoint_names_in_public_mode_and_starts_unticked(monkeypatch):
    from ui.controls import build_backend_controls, reference_dropdown

    monkeypatch.setenv(ENDPOINTS_VARIABLE, "vllm=http://10.0.0.5:8000/v1,llama=http://10.0.0.6:8080/v1")
    options = options_of(EchoServerBackend)
    with gr.Blocks():
        local = build_backend_controls(options, "", "text")[0]
        public = build_backend_controls(options, "", "text", allow_paths=False)[0]
        image = build_backend_controls(options, "image-", "image", allow_paths=False)
        image_reference = reference_dropdown(options, "image-reference", "image")
        text_reference = reference_dropdown(options, "text-reference", "text")
    assert local.enabled.value is False and public.enabled.value is False  # it needs a server the user runs
    assert list(local.widgets) == ["base_url", "model", "key_env"]
    assert all(isinstance(w, gr.Textbox) for w in local.widgets.values())
    assert list(public.widgets) == ["base_url", "model"]  # no secret's variable on a public server
    endpoint = public.widgets["base_url"]
    assert isinstance(endpoint, gr.Dropdown) and endpoint.value == "vllm"
    assert [c[1] for c in endpoint.choices] == ["vllm", "llama"] and "10.0.0" not in str(endpoint.choices)
    assert image == []  # text only: not in the Image tab
    assert [c[1] for c in image_reference.choices] == ["auto"]
    assert [c[1] for c in text_reference.choices] == ["auto", "echo-server"]
    monkeypatch.delenv(ENDPOINTS_VARIABLE)
    with gr.Blocks():
        public = build_backend_controls(options, "", "text", allow_paths=False)[0]
    assert list(public.widgets) == ["model"]  # no endpoint configured: nothing to pick


@pytest.mark.parametrize("precision", ["server", "q4_k_m", "fp32"])
def test_verdicts_take_a_precision_the_arena_does_not_know(precision):
    text, ids = "Running models locally keeps data private.", [10, 11, 12, 13, 14, 15, 16]
    same = judge_text(text, ids, precision, reference_ids=ids)
    assert same.kind == "MATCH" and "identical tokens (7)" in same.reason
    logits = {"max_abs": 0.5, "max_rel": 0.5}
    drift = judge_text(text, ids[:3] + [20, 21, 22, 23], precision, reference_ids=ids, logits=logits,
                       reference_precision="fp32")
    if precision == "fp32":  # the reference's own precision: logits over tolerance and other tokens are WRONG
        assert drift.kind == "WRONG" and drift.broken, drift
    else:  # a precision the arena does not know is judged with fp32's tolerance, never as a crash
        assert drift.kind == "DRIFT" and "diverges at token 4" in drift.reason and precision in drift.reason
