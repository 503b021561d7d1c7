"""Public mode's gate: every refusal is one sentence, given before any worker or file is touched."""

from __future__ import annotations

import pytest

from arena.public.policy import HUB_ID, Policy, PublicLimits, parse_limit_overrides
from arena.types import BackendSpec, ImageRunRequest, TextRunRequest


def hub(parameters=1e8, gated=False):
    calls = []

    def facts(model_id):
        calls.append(model_id)
        return {"parameters": parameters, "how": "from its safetensors metadata", "gated": gated}

    facts.calls = calls
    return facts


def text(model="smollm2-135m-instruct", **kwargs):
    return TextRunRequest(model=model, prompt=kwargs.pop("prompt", "hi"),
                          backends=kwargs.pop("backends", (BackendSpec("pytorch"),)), **kwargs)


def image(**kwargs):
    return ImageRunRequest(model=kwargs.pop("model", "scenes-64"), prompt="a red circle",
                           backends=(BackendSpec("pytorch"),), **kwargs)


def one_sentence(message: str) -> bool:
    return bool(message) and message.count(". ") == 0 and message.endswith(".")


@pytest.mark.parametrize("model", ["/etc/passwd", "../secrets", "~/models", "./assets/image-model", ".", "/",
                                   "a/b/c", "owner/../name", "C:\\models"])
def test_server_paths_are_refused_in_public_mode(model):
    facts = hub()
    problem = Policy(public=True, hub_facts=facts).refuse_text(text(model))
    assert problem and "does not open paths" in problem and one_sentence(problem), problem
    assert facts.calls == []  # refused from the string alone


def test_export_and_engine_paths_are_refused_in_public_mode():
    policy = Policy(public=True)
    problem = policy.refuse_text(text(backends=(BackendSpec("onnxruntime", onnx_dir="/srv/export"),)))
    assert "onnx_dir" in problem and one_sentence(problem)
    problem = policy.refuse_image(ImageRunRequest(model="scenes-64", prompt="x", backends=(
        BackendSpec("tensorrt", engine_path="/srv/unet.trt"),)))
    assert "engine_path" in problem and one_sentence(problem)


@pytest.mark.parametrize(("field", "value", "words"), [
    ("max_new_tokens", 4096, "Max new tokens is capped at 256"),
    ("repeats", 20, "Timed repeats is capped at 3"),
    ("warmup", 10, "Warm-up generations is capped at 2"),
    ("prompt", "x" * 5000, "The prompt's length is capped at 2000"),
    ("backends", tuple(BackendSpec("pytorch") for _ in range(5)), "up to 4 backends"),
])
def test_text_caps(field, value, words):
    problem = Policy(public=True).refuse_text(text(**{field: value}))
    assert words in problem and one_sentence(problem), problem


def test_image_caps():
    policy = Policy(public=True)
    assert "Steps are capped at 50" in policy.refuse_image(image(steps=200))
    assert "capped at 768 px" in policy.refuse_image(image(height=1024, width=1024))
    assert policy.refuse_image(image(steps=20)) is None


def test_model_size_cap_uses_the_catalog_or_the_hub_metadata_before_any_download():
    facts = hub(parameters=7.2e9)
    policy = Policy(public=True, hub_facts=facts, token_available=lambda: True)
    problem = policy.refuse_text(text("meta-llama/Llama-2-7b-chat-hf"))
    assert "6.7B parameters" in problem and "up to 1.5B" in problem and one_sentence(problem), problem
    assert facts.calls == []  # a catalog model's size is known without asking
    problem = policy.refuse_text(text("someone/big-model"))
    assert "7.2B parameters (from its safetensors metadata)" in problem, problem
    assert facts.calls == ["someone/big-model"]
    assert Policy(public=True, hub_facts=hub(parameters=3e8)).refuse_text(text("someone/small")) is None
    # The id Stability AI took down is the mirror's catalog entry, sized without asking the hub.
    moved = Policy(public=True, hub_facts=facts, limits=PublicLimits(max_parameters=1e9))
    assert "1.3B parameters" in moved.refuse_image(image(model="stabilityai/stable-diffusion-2-1"))
    assert facts.calls == ["someone/big-model"]


def test_unknown_size_is_refused_in_public_mode():
    def offline(model_id):
        raise OSError("no network")

    problem = Policy(public=True, hub_facts=offline).refuse_text(text("someone/model"))
    assert "cannot be read from the Hugging Face Hub" in problem and one_sentence(problem)


def test_gated_models_need_a_token_before_the_run_starts_in_every_mode():
    for public in (False, True):
        policy = Policy(public=public, token_available=lambda: False, limits=PublicLimits(max_parameters=1e10))
        problem = policy.refuse_text(text("meta-llama/Llama-2-7b-chat-hf"))
        assert "gated" in problem and "HF_TOKEN" in problem and one_sentence(problem), problem
    with_token = Policy(public=True, token_available=lambda: True, limits=PublicLimits(max_parameters=1e10))
    assert with_token.refuse_text(text("meta-llama/Llama-2-7b-chat-hf")) is None
    gated_hub = Policy(public=True, hub_facts=hub(gated=True), token_available=lambda: False)
    assert "gated" in gated_hub.refuse_text(text("someone/gated"))


def test_local_mode_changes_nothing_for_a_local_user():
    facts = hub()
    policy = Policy.local()
    policy._hub_facts = facts
    assert policy.refuse_text(text("/home/me/model", max_new_tokens=4096, repeats=20, warmup=10,
                                   backends=(BackendSpec("onnxruntime", onnx_dir="/home/me/export"),))) is None
    assert policy.refuse_image(image(model="/home/me/pipe", steps=200, height=2048, width=2048)) is None
    assert facts.calls == [] and policy.describe() == ""


def test_limits_come_from_the_environment_and_flags():
    limits = PublicLimits.from_settings({"ARENA_MAX_NEW_TOKENS": "32", "ARENA_MAX_PARAMETERS": "5e8"},
                                        parse_limit_overrides(["max_steps=10"]))
    assert (limits.max_new_tokens, limits.max_parameters, limits.max_steps) == (32, 5e8, 10)
    assert "32 new tokens" in Policy(public=True, limits=limits).describe()
    for bad in ({"max_new_tokens": "many"}, {"max_steps": "0"}, {"speed": "1"}):
        with pytest.raises(ValueError):
            PublicLimits.from_settings({}, bad)
    with pytest.raises(ValueError):
        parse_limit_overrides(["max_steps"])


def test_hub_ids_are_names_not_paths():
    assert all(HUB_ID.fullmatch(m) for m in ("gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct", "a.b/c_d-1"))
    assert not any(HUB_ID.fullmatch(m) for m in ("/abs", "../up", "a/../b", "~", ".hidden", "a//b", "a/b/c", "",
                                                 "a/b\n", "a/b\x00"))


def test_hub_facts_are_read_from_the_hubs_own_model_info(monkeypatch):
    """The metadata the size cap reads, in huggingface_hub's own ModelInfo shape (the Hub is unreachable here)."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import ModelInfo

    from arena.public.policy import hub_model_facts

    answers = {
        "with/safetensors": ModelInfo(id="with/safetensors", safetensors={"parameters": {"BF16": 7e9}, "total": 7e9},
                                      gated="manual", siblings=[{"rfilename": "model.safetensors", "size": 14e9}]),
        "only/bin": ModelInfo(id="only/bin", gated=False, siblings=[
            {"rfilename": "pytorch_model-00001.bin", "size": 2e9}, {"rfilename": "pytorch_model-00002.bin",
                                                                     "size": 1e9}, {"rfilename": "README.md",
                                                                                    "size": 5e3}]),
        "no/weights": ModelInfo(id="no/weights", siblings=[{"rfilename": "config.json", "size": 600}]),
    }
    asked = []

    def model_info(self, repo_id, files_metadata=False, **_):
        asked.append((repo_id, files_metadata))
        return answers[repo_id]

    monkeypatch.setattr(HfApi, "model_info", model_info)
    assert hub_model_facts("with/safetensors") == {"parameters": 7e9, "how": "from its safetensors metadata",
                                                   "gated": True}
    facts = hub_model_facts("only/bin")
    assert facts["parameters"] == 1.5e9 and "3.0 GB of weight files" in facts["how"] and not facts["gated"]
    assert hub_model_facts("no/weights")["parameters"] is None
    assert all(files for _, files in asked)  # file sizes are asked for: they are the fallback
    problem = Policy(public=True).refuse_text(text("no/weights"))
    assert "no weight files" in problem and one_sentence(problem)


def test_public_results_name_no_server_folder():
    run = {"model": {"name": "m", "dir": "/srv/cache/models/abc"}, "results": [
        {"load": {"artifact_dir": "/srv/cache/onnx/x", "provider": "CPU"}, "log_tail": "Traceback ... /srv/app/x.py",
         "error": "The onnxruntime worker was killed while reading /srv/cache/onnx/x/model.onnx."}]}
    shown = Policy(public=True).redact(run, ("/srv/cache", "/srv/app"))
    assert shown["model"] == {"name": "m", "dir": None}
    assert shown["results"][0]["load"] == {"artifact_dir": None, "provider": "CPU"}
    assert shown["results"][0]["log_tail"] == "" and "/srv" not in shown["results"][0]["error"]
    assert Policy.local().redact(run, ("/srv/cache",)) == run  # a local user sees everything (but secrets)
