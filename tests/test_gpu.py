"""PyTorch on CUDA against the CPU reference, through the whole core (workers, verdicts), and the NaN guard.

- Text: CUDA fp32, fp16 and bf16 on the tiny Llama against CPU fp32 (token agreement, first-step logits).
- Images: the embedded Scenes 64px model on CUDA fp32, fp16, fp16 with the VAE in fp32, and bf16 against the CPU
  image (PSNR, SSIM, verdict, and the named colors where they belong).
- The NaN guard on forced fp16 overflows: a copy of the embedded model whose VAE decoder input convolution is
  scaled up (fp16 overflows in the VAE; fp32, and fp16 with the VAE in fp32, do not), and one whose UNet output
  is scaled up (the latents overflow at the first step). The run must stop and name the VAE or the step.

The figures are recorded with ``record_property``; scripts/gpu_check.py reads them from pytest's JUnit XML into
docs/gpu-report.md. Every test here skips, with the reason, where CUDA cannot run.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from arena.preparing.catalog import IMAGE_CATALOG
from arena.types import BackendSpec, ImageRunRequest, TextRunRequest

pytestmark = pytest.mark.gpu

CPU_REFERENCE = BackendSpec("pytorch")
SCENES = IMAGE_CATALOG[0]
PROMPT = "a red circle on a blue background"


def skip_without_cuda(arena, spec: BackendSpec) -> None:
    problem = arena._backend_cls(spec.backend).check_spec(spec, arena.environment())
    if problem:
        pytest.skip(f"needs CUDA: {problem}")


def image_request(model: str, *backends: BackendSpec, prompt: str = PROMPT) -> ImageRunRequest:
    return ImageRunRequest(model=model, prompt=prompt, backends=(CPU_REFERENCE, *backends), steps=SCENES.steps,
                           guidance_scale=SCENES.guidance_scale, seed=0)


def record_load(record_property, result) -> None:
    if result.load is not None:
        record_property("provider", result.load.provider)
        if result.load.gpu_memory_mb:
            record_property("gpu_memory_mb", round(result.load.gpu_memory_mb))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_pytorch_cuda_text_matches_the_cpu_reference(arena, tiny_llama, precision, record_property):
    spec = BackendSpec("pytorch", device="cuda", precision=precision)
    skip_without_cuda(arena, spec)
    request = TextRunRequest(model=str(tiny_llama), prompt="My name is Arthur and I live in", prompt_format="plain",
                             backends=(CPU_REFERENCE, spec), max_new_tokens=16, ignore_eos=True)
    result = arena.run_text_to_end(request)
    assert result.error is None, result.error
    reference, cuda = result.results
    assert reference.error is None and cuda.error is None, (reference.error, cuda.error)
    same = sum(a == b for a, b in zip(cuda.token_ids, reference.token_ids, strict=True))
    logits = cuda.verdict.metrics.get("logits") or {}
    record_property("tokens_equal", f"{same}/{len(reference.token_ids)}")
    record_property("logits_max_abs_error", f"{logits.get('max_abs', float('nan')):.3g}")
    record_property("tokens_per_s", f"{cuda.timings.decode_tokens_per_s:.0f}")
    record_load(record_property, cuda)
    assert "cuda" in cuda.load.provider
    from arena.judging.verdicts import TEXT_TOLERANCES

    abs_tol, rel_tol = TEXT_TOLERANCES[precision]
    assert logits["max_abs"] <= abs_tol or logits["max_rel"] <= rel_tol, logits
    if precision == "fp32":
        assert cuda.token_ids == reference.token_ids
    else:  # half precision may flip a near-tie later on (recorded above); the first token must agree
        assert cuda.token_ids[:1] == reference.token_ids[:1], (cuda.token_ids, reference.token_ids)


GPU_IMAGE_SPECS = [
    BackendSpec("pytorch", device="cuda"),
    BackendSpec("pytorch", device="cuda", precision="fp16"),
    BackendSpec("pytorch", device="cuda", precision="fp16", vae_fp32=True),
    BackendSpec("pytorch", device="cuda", precision="bf16"),
]


@pytest.mark.parametrize("spec", GPU_IMAGE_SPECS, ids=[s.label.split(" · ", 1)[1].replace(" · ", "-")
                                                       .replace(" ", "_") for s in GPU_IMAGE_SPECS])
def test_embedded_image_model_on_cuda_matches_the_cpu_image(arena, spec, record_property):
    from arena.preparing.scenes import Scene, score_image

    skip_without_cuda(arena, spec)
    scene = Scene("circle", "red", "blue")
    result = arena.run_image_to_end(image_request(SCENES.key, spec, prompt=scene.describe()))
    assert result.error is None, result.error
    reference, cuda = result.results
    assert reference.error is None and cuda.error is None, (reference.error, cuda.error)
    metrics = cuda.verdict.metrics
    record_property("verdict", cuda.verdict.kind)
    record_property("psnr_db", "inf (identical)" if metrics.get("psnr_db") is None else metrics["psnr_db"])
    record_property("ssim", metrics.get("ssim"))
    record_property("unet_loop_s", f"{cuda.timings.unet_s:.3f}")
    record_load(record_property, cuda)
    assert np.isfinite(cuda.image).all() and cuda.image.std() > 0
    assert cuda.verdict.kind == "MATCH", cuda.verdict.reason
    assert score_image(cuda.image, scene)["ok"], score_image(cuda.image, scene)


def overheated_copy(tmp_path, component: str, prefix: str, factor: float):
    """The embedded pipeline with one layer's weights and bias scaled by ``factor`` (fine in fp32, not fp16)."""
    import torch
    from safetensors.torch import load_file, save_file

    from arena.preparing.prepare import REPO_ROOT

    folder = tmp_path / f"{component}-overflows"
    shutil.copytree(REPO_ROOT / SCENES.embedded_dir, folder)
    weights_file = folder / component / "diffusion_pytorch_model.safetensors"
    weights = load_file(weights_file)
    scaled = [name for name in weights if name.startswith(prefix)]
    assert scaled, prefix
    for name in scaled:
        weights[name] = (weights[name].to(torch.float32) * factor).to(weights[name].dtype)
    save_file(weights, weights_file)
    return folder


def test_nan_guard_names_the_vae_when_an_fp16_vae_overflows(arena, tmp_path, record_property):
    fp16 = BackendSpec("pytorch", device="cuda", precision="fp16")
    upcast = BackendSpec("pytorch", device="cuda", precision="fp16", vae_fp32=True)
    skip_without_cuda(arena, fp16)
    model = overheated_copy(tmp_path, "vae", "decoder.conv_in.", 1e5)
    result = arena.run_image_to_end(image_request(str(model), fp16, upcast))
    assert result.error is None, result.error
    reference, broken, kept = result.results
    assert reference.error is None, reference.error  # fp32 on the CPU: no overflow
    record_property("fp16_verdict", f"{broken.verdict.kind}: {broken.verdict.reason}")
    record_property("vae_fp32_verdict", f"{kept.verdict.kind}: {kept.verdict.reason}")
    assert broken.verdict.kind == "NAN" and "VAE decoder output" in broken.error, broken.error
    assert kept.error is None and kept.verdict.kind == "MATCH", (kept.error, kept.verdict)


def test_nan_guard_names_the_step_when_the_fp16_latents_overflow(arena, tmp_path, record_property):
    fp16 = BackendSpec("pytorch", device="cuda", precision="fp16")
    skip_without_cuda(arena, fp16)
    model = overheated_copy(tmp_path, "unet", "conv_out.", 1e6)
    result = arena.run_image_to_end(image_request(str(model), fp16))
    assert result.error is None, result.error
    reference, broken = result.results
    assert reference.error is None, reference.error
    record_property("fp16_verdict", f"{broken.verdict.kind}: {broken.verdict.reason}")
    assert broken.verdict.kind == "NAN" and "latents after step 1" in broken.error, broken.error
