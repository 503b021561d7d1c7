"""The generation loops the TensorRT backend drives its engines with, held to the PyTorch reference on CPU.

Here the runner is an ONNX Runtime session over the same optimum export the engines are built from; on a GPU
the runner is a TensorRT engine and nothing else changes. So the KV-cache bookkeeping (past/present naming,
position ids, attention mask, stopping) and the diffusion arithmetic (guidance, scheduler scaling, VAE scaling)
are verified here for real; only engine building and execution need the GPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from arena.judging.image_metrics import psnr
from arena.types import PreparedImage
from backends.contract import GenerationSettings, ImageSettings
from backends.conversion.onnx_export import export_pipeline, export_text_model
from backends.hf import diffusers_generate, hf_generate
from backends.loops import OrtRunner, components_generate, kv_greedy_generate, kv_step_logits


@pytest.fixture(scope="module")
def llama_export(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("llama-onnx")
    export_text_model(str(tiny_llama), str(out), "fp32", "cpu")
    return out


@pytest.fixture(scope="module")
def sd_export(tiny_sd, tmp_path_factory):
    out = tmp_path_factory.mktemp("sd-onnx")
    export_pipeline(str(tiny_sd), str(out), "fp32", "cpu")
    return out


@pytest.mark.parametrize("ignore_eos", [True, False])
def test_kv_cache_loop_matches_transformers_generate(tiny_llama, llama_export, ignore_eos):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    prompt = tokenizer("My name is Arthur and I live in")["input_ids"]
    reference_model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    # With ignore_eos off, stop on a token the reference really produces, to exercise the early stop.
    eos = (tokenizer.eos_token_id,) if ignore_eos else (hf_generate(
        reference_model, prompt, GenerationSettings(12, (), None, ignore_eos=True), lambda t: None)[5],)
    settings = GenerationSettings(24, eos, tokenizer.pad_token_id, ignore_eos=ignore_eos)
    reference = hf_generate(reference_model, prompt, settings, lambda t: None)
    runner = OrtRunner(str(llama_export / "model.onnx"))
    config = json.loads((tiny_llama / "config.json").read_text())
    streamed: list[int] = []
    ids = kv_greedy_generate(runner, runner.input_names, config, prompt, settings, streamed.append)
    assert ids == reference == streamed
    assert len(ids) == (24 if ignore_eos else 6)


def test_cached_step_logits_are_the_models_along_its_answer(tiny_llama, llama_export):
    """The decode path the judge measures: the bare loop over the export's cache, and an HF-style model's forward
    with its cache (PyTorch here), each equal to one full pass over the same tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    from backends.torch_backend import PyTorchBackend

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    prompt, answer = [1, 40, 41, 42, 43], [50, 51, 52, 53, 54, 55]
    with torch.inference_mode():
        full = model(input_ids=torch.tensor([prompt + answer])).logits[0, len(prompt) - 1:-1].numpy()
    runner = OrtRunner(str(llama_export / "model.onnx"))
    config = json.loads((tiny_llama / "config.json").read_text())
    bare = kv_step_logits(runner, runner.input_names, config, prompt, answer)
    backend = PyTorchBackend()
    backend.model, backend.device = model, "cpu"
    cached = backend.cached_step_logits(prompt, answer)
    assert bare.shape == cached.shape == full.shape == (len(answer), config["vocab_size"])
    np.testing.assert_allclose(bare, full, atol=1e-4)
    np.testing.assert_allclose(cached, full, atol=1e-4)


def test_component_loop_matches_the_diffusers_pipeline(tiny_sd, sd_export):
    from diffusers import StableDiffusionPipeline
    from transformers import AutoTokenizer

    scheduler = json.loads((tiny_sd / "scheduler" / "scheduler_config.json").read_text())
    scheduler["_class_name"] = "EulerDiscreteScheduler"
    latents = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    model = PreparedImage(model_dir=str(tiny_sd), model_name="tiny-sd", source="local", fingerprint="x",
                          height=32, width=32, latents=latents, scheduler=json.dumps(scheduler))
    settings = ImageSettings("a red circle on a blue background", "", steps=6, guidance_scale=5.0)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None, requires_safety_checker=False)
    reference = diffusers_generate(pipe, model, settings, lambda p: None, lambda s: None)

    import diffusers

    phases, steps = [], []
    image = components_generate(
        OrtRunner(str(sd_export / "text_encoder" / "model.onnx")), OrtRunner(str(sd_export / "unet" / "model.onnx")),
        OrtRunner(str(sd_export / "vae_decoder" / "model.onnx")), AutoTokenizer.from_pretrained(tiny_sd / "tokenizer"),
        diffusers.EulerDiscreteScheduler.from_config(scheduler), pipe.vae.config.scaling_factor, model, settings,
        phases.append, steps.append)
    assert phases == ["text_encoder", "unet", "vae", "done"] and steps == list(range(6))
    assert image.shape == reference.shape == (32, 32, 3)
    assert psnr(image, reference) >= 35


def test_component_loop_reports_where_nans_first_appear(tiny_sd, sd_export):
    import diffusers
    import torch
    from transformers import AutoTokenizer

    scheduler = json.loads((tiny_sd / "scheduler" / "scheduler_config.json").read_text())
    model = PreparedImage(model_dir=str(tiny_sd), model_name="tiny-sd", source="local", fingerprint="x",
                          height=32, width=32, latents=np.zeros((1, 4, 8, 8), np.float32), scheduler="{}")
    unet = OrtRunner(str(sd_export / "unet" / "model.onnx"))
    calls = []

    def overflowing_unet(**inputs):  # an fp16 UNet that overflows on its third call
        calls.append(1)
        out = unet(**inputs)
        return {"out_sample": out["out_sample"] * (torch.inf if len(calls) == 3 else 1)}

    with pytest.raises(FloatingPointError, match="NaN/Inf first appeared in the latents after step 3"):
        components_generate(
            OrtRunner(str(sd_export / "text_encoder" / "model.onnx")), overflowing_unet,
            OrtRunner(str(sd_export / "vae_decoder" / "model.onnx")),
            AutoTokenizer.from_pretrained(tiny_sd / "tokenizer"),
            diffusers.EulerDiscreteScheduler.from_config(scheduler), 0.18215, model,
            ImageSettings("a red circle", "", steps=5, guidance_scale=1.0), lambda p: None, lambda s: None)


def test_the_diffusers_path_names_the_step_where_nans_appear(tiny_sd):
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None, requires_safety_checker=False)
    scheduler = json.loads((tiny_sd / "scheduler" / "scheduler_config.json").read_text())
    scheduler["_class_name"] = "EulerDiscreteScheduler"
    model = PreparedImage(model_dir=str(tiny_sd), model_name="tiny-sd", source="local", fingerprint="x",
                          height=32, width=32, latents=np.zeros((1, 4, 8, 8), np.float32),
                          scheduler=json.dumps(scheduler))
    forward, calls = pipe.unet.forward, []

    def overflowing(*args, **kwargs):  # an fp16 UNet that overflows on its second call
        calls.append(1)
        out = forward(*args, **kwargs)
        return (out[0] * (torch.inf if len(calls) == 2 else 1),) if isinstance(out, tuple) else out

    pipe.unet.forward = overflowing
    with pytest.raises(FloatingPointError, match="NaN/Inf first appeared in the latents after step 2"):
        diffusers_generate(pipe, model, ImageSettings("a red circle", "", steps=4, guidance_scale=3.0),
                           lambda p: None, lambda s: None)
