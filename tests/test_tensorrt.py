"""The GPU-free parts of the TensorRT backend: precision plans per TensorRT version, optimization profiles, engine
cache keys, the builder set-up, profile checks for a user's engine, and what a machine without TensorRT is told.

The builder set-up, engine build and runner are checked against the real TensorRT 10 and 11 Python bindings in
tests/test_tensorrt_bindings.py. Building and running engines needs a GPU (tests/test_backend_contract.py, marked
gpu).
"""

from __future__ import annotations

import json

import pytest

from arena.errors import ArenaError
from backends.conversion.tensorrt_build import engine_cache_fields, onnx_digest, precision_plan
from backends.conversion.tensorrt_profiles import (
    check_profile_covers,
    image_profiles,
    llm_profiles,
    to_ort_trt_options,
)
from backends.tensorrt_backend import TensorRTBackend

LLAMA_7B = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_size": 4096}
SD21 = {"unet": {"in_channels": 4, "cross_attention_dim": 1024},
        "vae": {"latent_channels": 4, "block_out_channels": [128, 256, 512, 512]}}


@pytest.mark.parametrize(("version", "precision", "component", "vae_fp32", "expected"), [
    ("10.13.3", "fp32", "unet", False, ("fp32", (), False)),
    ("10.13.3", "fp16", "unet", False, ("fp32", ("FP16",), False)),  # weak typing: the flag on the fp32 graph
    ("10.13.3", "fp16", "vae_decoder", True, ("fp32", (), False)),  # VAE kept in fp32: no flag
    ("11.4.0", "fp16", "unet", False, ("fp16", (), True)),  # strongly typed: precision from the fp16 graph
    ("11.4.0", "fp16", "vae_decoder", True, ("fp32", (), True)),
    ("11.4.0", "fp16", "vae_decoder", False, ("fp16", (), True)),
    ("11.4.0", "fp32", "decoder", False, ("fp32", (), True)),
])
def test_precision_plan_per_version(version, precision, component, vae_fp32, expected):
    plan = precision_plan(version, precision, component, vae_fp32)
    assert (plan.onnx_dtype, plan.builder_flags, plan.strongly_typed) == expected


def test_upcast_attention_keeps_the_softmax_in_fp32():
    ten = precision_plan("10.13.3", "fp16", "unet", upcast_attention=True)
    assert ten.builder_flags == ("FP16",) and ten.fp32_layer_types == ("SOFTMAX",)
    eleven = precision_plan("11.4.0", "fp16", "unet", upcast_attention=True)
    assert eleven.onnx_dtype == "fp32" and "upcast attention" in eleven.note
    assert precision_plan("10.13.3", "fp16", "text_encoder", upcast_attention=True).fp32_layer_types == ()
    assert precision_plan("10.13.3", "fp32", "unet", upcast_attention=True).fp32_layer_types == ()


def test_precision_plan_refuses_what_it_cannot_build():
    with pytest.raises(ArenaError, match="TensorRT 8.6.1 is not supported.*10 and 11"):
        precision_plan("8.6.1", "fp16")
    with pytest.raises(ArenaError, match="bf16"):
        precision_plan("10.13.3", "bf16")


def test_llm_profiles_cover_prefill_and_decode():
    profiles = llm_profiles(LLAMA_7B, max_total_tokens=512, opt_prompt_tokens=64)
    assert len(profiles) == 3 + 2 * 32
    assert profiles["input_ids"] == ((1, 1), (1, 64), (1, 512))
    assert profiles["attention_mask"] == ((1, 1), (1, 64), (1, 512))
    # An empty cache for the prefill, up to every earlier token for the last decode step.
    assert profiles["past_key_values.31.value"] == ((1, 32, 0, 128), (1, 32, 64, 128), (1, 32, 511, 128))
    gqa = llm_profiles({"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                        "hidden_size": 64}, 128, input_names=("input_ids", "attention_mask",
                                                              "past_key_values.0.key", "past_key_values.0.value",
                                                              "past_key_values.1.key", "past_key_values.1.value"))
    assert "position_ids" not in gqa and gqa["past_key_values.1.key"][2] == (1, 2, 127, 16)
    with pytest.raises(ArenaError, match="num_hidden_layers"):
        llm_profiles({"hidden_size": 8}, 64)


def test_the_same_profiles_feed_onnx_runtime_tensorrt_provider():
    options = to_ort_trt_options(llm_profiles(LLAMA_7B, 512))
    assert options["trt_profile_min_shapes"].startswith("input_ids:1x1,position_ids:1x1,attention_mask:1x1,")
    assert "past_key_values.0.key:1x32x0x128" in options["trt_profile_min_shapes"]
    assert "past_key_values.31.value:1x32x511x128" in options["trt_profile_max_shapes"]
    assert options["trt_profile_opt_shapes"].count(",") == 3 + 2 * 32 - 1


def test_image_profiles_for_stable_diffusion_2_1():
    unet = image_profiles("unet", SD21, 768, 768, 77)
    assert unet["sample"] == ((1, 4, 96, 96), (2, 4, 96, 96), (2, 4, 96, 96))  # batch 2: classifier-free guidance
    assert unet["encoder_hidden_states"][2] == (2, 77, 1024)
    assert image_profiles("vae_decoder", SD21, 768, 512, 77) == {"latent_sample": ((1, 4, 96, 64),) * 3}
    assert image_profiles("text_encoder", SD21, 768, 768, 77) == {"input_ids": ((1, 77),) * 3}
    with pytest.raises(ArenaError, match="divisible by 8 but are 770 and 768"):
        image_profiles("unet", SD21, 770, 768, 77)


def test_engine_cache_key_changes_with_everything_an_engine_depends_on(tmp_path):
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"graph")
    (tmp_path / "model.onnx_data").write_bytes(b"weights")
    digest = onnx_digest(graph)
    (tmp_path / "model.onnx_data").write_bytes(b"weights, changed")
    assert onnx_digest(graph) != digest  # external data counts
    plan = precision_plan("10.13.3", "fp16")
    profiles = llm_profiles(LLAMA_7B, 512)
    base = engine_cache_fields(digest, "10.13.3", "NVIDIA H100 80GB HBM3", "9.0", profiles, plan)
    variants = [
        engine_cache_fields("other", "10.13.3", "NVIDIA H100 80GB HBM3", "9.0", profiles, plan),
        engine_cache_fields(digest, "11.4.0", "NVIDIA H100 80GB HBM3", "9.0", profiles, plan),
        engine_cache_fields(digest, "10.13.3", "NVIDIA A10G", "8.6", profiles, plan),
        engine_cache_fields(digest, "10.13.3", "NVIDIA H100 80GB HBM3", "9.0", llm_profiles(LLAMA_7B, 1024), plan),
        engine_cache_fields(digest, "10.13.3", "NVIDIA H100 80GB HBM3", "9.0", profiles,
                            precision_plan("10.13.3", "fp32")),
    ]
    keys = {json.dumps(fields, sort_keys=True) for fields in [base, *variants]}
    assert len(keys) == 6
    assert json.loads(json.dumps(base)) == base  # plain JSON: it goes into the cache manifest


def test_a_users_engine_must_cover_the_run():
    engine = {"sample": ((1, 4, 64, 64), (2, 4, 64, 64), (2, 4, 96, 96)), "timestep": ((1,), (2,), (2,))}
    assert check_profile_covers({"sample": (2, 4, 96, 96), "timestep": (2,)}, engine) == []
    problems = check_profile_covers({"sample": (2, 4, 128, 128), "encoder_hidden_states": (2, 77, 1024)}, engine)
    assert problems == ["'sample' (2, 4, 128, 128) is outside the engine's profile (1, 4, 64, 64)..(2, 4, 96, 96)",
                        "the engine has no input 'encoder_hidden_states'"]


@pytest.mark.parametrize(("env", "expected"), [
    ({"tensorrt": {"installed": False}, "torch": {"cuda_available": False}},
     "TensorRT cannot be imported (the tensorrt package is not installed). Install: `bash scripts/setup.sh "
     "--gpu"),
    ({"tensorrt": {"installed": True, "version": "8.6.1"}, "torch": {"cuda_available": True}},
     "TensorRT 8.6.1 is installed; this backend needs TensorRT 10 or 11."),
    ({"tensorrt": {"installed": True, "version": "10.13.3"},
      "torch": {"installed": True, "version": "2.13.0+cpu", "cuda_build": None, "cuda_available": False}},
     "TensorRT needs a CUDA GPU and a CUDA build of torch (torch 2.13.0+cpu is a CPU-only build). Install: `pip "
     "install --force-reinstall torch==2.13.0"),
])
def test_unavailable_tensorrt_says_why_and_how_to_install(env, expected):
    assert TensorRTBackend.availability(env).sentence().startswith(expected)
    assert all(not c.availability.ok for c in TensorRTBackend.options(env)["precision"])
