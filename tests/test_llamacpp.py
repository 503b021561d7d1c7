"""The llama.cpp backend: GGUF files through llama-cpp-python, judged against the PyTorch reference.

Fast: its declarations (label, hub references, the install command, public mode), the shared contract
(`TestLlamaCppContract`, on the tiny Llama written as an F32 GGUF next to it), a GGUF of another vocabulary.
Slow: the embedded SmolLM2 through the core (PyTorch fp32 vs llama.cpp on the model's own Q4_1 GGUF) and through
the app's /compare_text (few tokens).

Without llama-cpp-python the tests that run it skip with the install command; in CI (`CI` set) they fail, since
`scripts/setup.sh --dev` installs it there."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import psutil
import pytest

from arena.preparing.cache import ArtifactCache
from arena.preparing.catalog import DEFAULT_TEXT_MODEL
from arena.public.policy import Policy
from arena.types import BackendSpec, PreparedText, TextRunRequest
from backends.contract import GenerationSettings, LoadContext
from backends.llamacpp_backend import LLAMACPP_INSTALL, LlamaCppBackend, gguf_type_name, parse_hub_gguf
from tests.support.backend_contract import BackendContract

PROMPT = "Why should one run machine learning models on-premises?"
INSTALLED = importlib.util.find_spec("llama_cpp") is not None


def require_llama_cpp() -> None:
    if not INSTALLED:
        message = f"llama-cpp-python is not installed: {LLAMACPP_INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it (setup.sh --dev): never skip there
        pytest.skip(message)


@pytest.fixture
def llama_cpp():
    require_llama_cpp()
    import llama_cpp

    return llama_cpp


def quiet(*_args, **_kwargs) -> None:
    pass


class TestLlamaCppContract(BackendContract):
    backend = "llamacpp"
    cpu_spec = {}  # the one .gguf in the model folder: the tiny Llama's own weights and vocabulary
    supports_image = False
    unavailable_env = {"llama_cpp": {"installed": False}}
    # The same F32 weights; llama.cpp keeps its KV cache in f16, hence not bit-equal (measured: 0.009).
    logits_atol = 5e-2

    @pytest.fixture(scope="class")
    @classmethod
    def tiny_llama(cls, tiny_llama_gguf):
        """The contract's tiny Llama, here with its F32 GGUF in the folder (llama.cpp runs GGUF files)."""
        return tiny_llama_gguf

    def test_options_are_well_formed_and_explain_what_is_missing(self):
        require_llama_cpp()  # compiled by setup.sh --dev: a developer's venv may lack it, CI never
        super().test_options_are_well_formed_and_explain_what_is_missing()


# --- no llama.cpp needed -------------------------------------------------------------------------------------
def test_label_names_the_ggufs_own_quantization():
    spec = BackendSpec.from_any("LLAMA.CPP")
    assert spec.backend == "llamacpp" and spec.get("gguf_file") is None and spec.label == "llama.cpp · Q4_1"
    mine = BackendSpec.from_any({"backend": "llamacpp", "gguf_file": "/models/x.Q8_0.gguf"})
    assert mine.get("gguf_file") == "/models/x.Q8_0.gguf" and mine.label == "llama.cpp · Q8_0 · user GGUF"
    hub = BackendSpec("llamacpp", gguf_file="bartowski/SmolLM2-135M-Instruct-GGUF:SmolLM2-135M-Instruct-Q4_K_M.gguf")
    assert hub.label == "llama.cpp · Q4_K_M · user GGUF"
    assert BackendSpec("llamacpp", gguf_file="/models/model.gguf").label == "llama.cpp · GGUF · user GGUF"
    assert BackendSpec.from_any({"backend": "llamacpp", "gguf_file": ""}).get("gguf_file") is None
    assert LlamaCppBackend.tasks == ("text",) and not LlamaCppBackend.enabled_by_default


def test_public_mode_refuses_a_gguf_file_but_runs_the_embedded_one():
    public = Policy(public=True)
    problem = public.refuse_spec(BackendSpec("llamacpp", gguf_file="/srv/models/x.gguf"))
    assert problem and "gguf_file" in problem and problem.endswith("."), problem
    assert public.refuse_spec(BackendSpec("llamacpp", gguf_file="owner/name:x.Q8_0.gguf"))
    assert public.refuse_spec(BackendSpec("llamacpp")) is None


def test_hub_references_and_quantization_names():
    assert parse_hub_gguf("bartowski/SmolLM2-135M-Instruct-GGUF:SmolLM2-135M-Instruct-Q8_0.gguf") == (
        "bartowski/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct-Q8_0.gguf")
    assert parse_hub_gguf("/models/x.gguf") is None and parse_hub_gguf("owner/name") is None
    assert parse_hub_gguf("./a/b:c.gguf") is None
    assert gguf_type_name("3") == "Q4_1" and gguf_type_name(0) == "F32" and gguf_type_name(None) is None


def test_missing_library_gives_the_portable_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    assert LlamaCppBackend.collect_facts() == {"llama_cpp": {"installed": False}}
    problem = LlamaCppBackend.check_spec(BackendSpec("llamacpp"), {})
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install "llama-cpp-python[server]==0.3.36"' in problem


def test_images_are_refused_in_one_sentence(tmp_path):
    from arena.types import PreparedImage

    model = PreparedImage(model_dir=str(tmp_path), model_name="tiny-sd", source="local", fingerprint="x",
                          height=32, width=32, latents=None, scheduler="{}")
    with pytest.raises(Exception) as raised:
        LlamaCppBackend().load(model, BackendSpec("llamacpp"), LoadContext(ArtifactCache(tmp_path), quiet))
    message = str(raised.value)
    assert "no image pipeline" in message and "\n" not in message and message.endswith(".")


def test_a_folder_without_a_gguf_is_one_clear_sentence(tiny_llama, tmp_path):
    model = PreparedText(model_dir=str(tiny_llama), model_name="tiny-llama", source="local", rendered_prompt="",
                         prompt_token_ids=(1,), eos_token_ids=(2,), pad_token_id=2, context_length=128,
                         fingerprint="x")
    ctx = LoadContext(cache=ArtifactCache(tmp_path), progress=quiet)
    with pytest.raises(Exception, match="gguf_file option"):
        LlamaCppBackend().resolve_gguf(model, BackendSpec("llamacpp"), ctx)
    with pytest.raises(Exception, match="does not exist"):
        LlamaCppBackend().resolve_gguf(model, BackendSpec("llamacpp", gguf_file="/no/such.gguf"), ctx)


# --- a tiny GGUF written here from the tiny Llama ----------------------------------------------------------------
def test_stops_at_the_prepared_eos_unless_ignored(llama_cpp, tiny_llama_gguf, tmp_path):
    """The first greedy token, given as the EOS: generation stops there; with ignore_eos it is masked instead."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_gguf)
    rendered = "My name is Arthur and I live in"
    ids = tuple(tokenizer(rendered)["input_ids"])
    backend = LlamaCppBackend()
    free = PreparedText(model_dir=str(tiny_llama_gguf), model_name="tiny-llama", source="local",
                        rendered_prompt=rendered, prompt_token_ids=ids, eos_token_ids=(tokenizer.eos_token_id,),
                        pad_token_id=tokenizer.pad_token_id, context_length=128, fingerprint="tiny")
    ctx = LoadContext(cache=ArtifactCache(tmp_path), progress=quiet)
    backend.load(free, BackendSpec("llamacpp"), ctx)
    assert backend.runtime_info()["vocab_agrees"] and backend.runtime_info()["quantization"] == "F32"
    assert any("F32" in note and "model.gguf" in note for note in ctx.notes), ctx.notes
    first = backend.generate_text(list(ids), GenerationSettings(4, (tokenizer.eos_token_id,), None, ignore_eos=True),
                                  lambda _t: None)[0]
    assert backend.generate_text(list(ids), GenerationSettings(4, (first,), None), lambda _t: None) == [first]
    ignored = backend.generate_text(list(ids), GenerationSettings(4, (first,), None, ignore_eos=True),
                                    lambda _t: None)
    assert len(ignored) == 4 and first not in ignored
    backend.unload()


def test_other_vocabulary_is_said_and_the_answer_retokenized(llama_cpp, tiny_llama_gguf, tmp_path):
    """A GGUF whose vocabulary is not the reference's: llama.cpp tokenizes the prompt itself and says so."""
    rendered = "My name is Arthur and I live in"
    model = PreparedText(model_dir=str(tiny_llama_gguf), model_name="tiny-llama", source="local",
                         rendered_prompt=rendered, prompt_token_ids=(5, 6, 7, 8), eos_token_ids=(2,),
                         pad_token_id=2, context_length=128, fingerprint="tiny")
    backend = LlamaCppBackend()
    ctx = LoadContext(cache=ArtifactCache(tmp_path), progress=quiet)
    backend.load(model, BackendSpec("llamacpp"), ctx)
    assert not backend.runtime_info()["vocab_agrees"]
    assert any("Vocabularies disagree" in note for note in ctx.notes), ctx.notes
    ids = backend.generate_text([5, 6, 7, 8], GenerationSettings(8, (2,), 2, ignore_eos=True), lambda _t: None)
    assert ids  # in the reference tokenizer's vocabulary
    with pytest.raises(NotImplementedError):
        backend.forward_logits([5, 6, 7, 8])
    backend.unload()


# --- the embedded SmolLM2 model through the arena ------------------------------------------------------------
@pytest.mark.slow
def test_embedded_gguf_against_pytorch_in_the_arena(llama_cpp, arena):
    request = TextRunRequest(model=DEFAULT_TEXT_MODEL, prompt=PROMPT,
                             backends=(BackendSpec("pytorch"), BackendSpec("llamacpp")), max_new_tokens=24)
    *_, result = arena.run_text(request)
    assert result.error is None, result.error
    torch_result, llama = result.results
    assert torch_result.error is None and llama.error is None, (llama.error, llama.log_tail[-2000:])
    assert torch_result.verdict.kind == "MATCH" and not torch_result.verdict.broken
    assert llama.verdict is not None and not llama.verdict.broken, llama.verdict
    assert llama.verdict.kind in ("MATCH", "DRIFT")
    metrics = llama.verdict.metrics
    assert metrics["agreement"] >= 0.25 and metrics["logits"] is not None, metrics
    # Q4_1 in llama.cpp vs its own dequantized weights in fp32 PyTorch: the same first answer token.
    assert llama.token_ids[:1] == torch_result.token_ids[:1]
    assert llama.timings.tokens_per_s > 0 and llama.timings.ttft_s > 0
    assert llama.load.load_s > 0 and "Q4_1" in llama.load.provider and llama.spec.label == "llama.cpp · Q4_1"
    assert any("Q4_1" in note and "embedded" in note for note in llama.load.notes), llama.load.notes
    assert not any("disagree" in note for note in llama.load.notes)
    assert llama.load.threads and llama.load.export_cached is None
    assert llama.load.precision == "Q4_1" and llama.verdict.metrics["precision"] == "Q4_1"  # judged at 4 bits


@pytest.mark.slow
def test_compare_text_api_runs_llamacpp(llama_cpp, app_server):
    from gradio_client import Client

    client = Client(app_server["url"], verbose=False)
    result = client.predict(prompt=PROMPT, backends=["pytorch", "llamacpp"], max_new_tokens=12,
                            api_name="/compare_text")
    assert result["error"] is None, result["error"]
    torch_result, llama = result["results"]
    assert llama["error"] is None, (llama["error"], llama["log_tail"])
    assert llama["label"] == "llama.cpp · Q4_1" and "Q4_1" in llama["provider"]
    assert llama["verdict"]["kind"] in ("MATCH", "DRIFT") and not llama["verdict"]["broken"], llama["verdict"]
    assert llama["verdict"]["metrics"]["agreement"] is not None
    assert llama["timings"]["tokens_per_s"] > 0 and llama["text"].strip()
    # llama.cpp's native library lives in its worker, never in the UI process.
    app = psutil.Process(app_server["pid"])
    assert "libllama" not in Path(f"/proc/{app.pid}/maps").read_text()
    assert any("libllama" in Path(f"/proc/{c.pid}/maps").read_text() for c in app.children(recursive=True))
