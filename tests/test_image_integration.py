"""The image path through the whole core on a tiny random Stable Diffusion pipeline built here."""

from __future__ import annotations

import numpy as np
import pytest

from arena.core import Arena
from arena.judging.image_metrics import psnr
from arena.types import BackendSpec, ImageRunRequest

BOTH = (BackendSpec("pytorch"), BackendSpec("onnxruntime"))


def run(arena: Arena, model, backends=BOTH, **kwargs):
    request = ImageRunRequest(model=str(model), prompt=kwargs.pop("prompt", "a red circle on a blue background"),
                              backends=tuple(backends), steps=kwargs.pop("steps", 4), seed=kwargs.pop("seed", 0),
                              **kwargs)
    return arena.run_image_to_end(request)


def test_pytorch_and_onnxruntime_draw_the_same_image(arena, tiny_sd):
    result = run(arena, tiny_sd)
    assert result.error is None, result.error
    torch_result, ort_result = result.results
    assert torch_result.error is None and ort_result.error is None, (torch_result.error, ort_result.error)
    assert torch_result.image.shape == (32, 32, 3) and torch_result.image.dtype == np.uint8
    assert psnr(torch_result.image, ort_result.image) >= 35
    timings = torch_result.timings
    assert len(timings.step_times_s) == 4 and timings.unet_s > 0 and timings.vae_s > 0
    assert timings.text_encoder_s + timings.unet_s + timings.vae_s <= timings.total_s + 1e-6
    assert ort_result.load.provider == "CPUExecutionProvider" and ort_result.load.export_cached is not None

    again = run(arena, tiny_sd, backends=(BackendSpec("onnxruntime"),))
    assert again.results[0].load.export_cached is True
    assert np.array_equal(again.results[0].image, ort_result.image)  # same seed, same latents, same image

    other_seed = run(arena, tiny_sd, backends=(BackendSpec("pytorch"),), seed=1)
    assert not np.array_equal(other_seed.results[0].image, torch_result.image)


def test_a_users_pipeline_export_is_checked(arena, tiny_sd, tmp_path):
    export = run(arena, tiny_sd, backends=(BackendSpec("onnxruntime"),)).results[0].load.artifact_dir
    result = run(arena, tiny_sd, backends=(BackendSpec("pytorch"), BackendSpec("onnxruntime", onnx_dir=export)))
    reference, user = result.results
    assert user.error is None and user.load.export_cached is None
    assert psnr(reference.image, user.image) >= 35
    broken = run(arena, tiny_sd, backends=(BackendSpec("onnxruntime", onnx_dir=str(tmp_path)),))
    assert "is not a Stable Diffusion ONNX export: missing text_encoder/model.onnx" in broken.results[0].error


def test_an_export_by_diffusers_conversion_script_is_checked(arena, tiny_sd, tmp_path):
    from tests.support.tiny_models import export_like_diffusers_script

    export = export_like_diffusers_script(tiny_sd, tmp_path / "diffusers-onnx")
    result = run(arena, tiny_sd, backends=(BackendSpec("pytorch"), BackendSpec("onnxruntime", onnx_dir=str(export))))
    reference, user = result.results
    assert user.error is None, user.error
    assert "diffusers conversion-script layout" in user.load.notes
    assert user.load.provider == "CPUExecutionProvider" and len(user.timings.step_times_s) == 4
    assert psnr(reference.image, user.image) >= 35


def test_optimum_layout_with_another_exporters_habits_is_checked(arena, tiny_sd, tmp_path):
    """optimum-cli's layout (configs beside the graphs, a StableDiffusionPipeline model_index) holding graphs with a
    UNet that takes one timestep per batch row and a text encoder taking int32 ids: the ONNX Runtime pipeline feeds
    each graph what it declares, and the picture matches the reference."""
    import shutil

    from tests.support.tiny_models import export_like_diffusers_script

    export = export_like_diffusers_script(tiny_sd, tmp_path / "per-row-timestep")
    for part, source in (("text_encoder", "text_encoder"), ("unet", "unet"), ("vae_decoder", "vae")):
        shutil.copyfile(tiny_sd / source / "config.json", export / part / "config.json")
    shutil.copyfile(tiny_sd / "model_index.json", export / "model_index.json")
    result = run(arena, tiny_sd, backends=(BackendSpec("pytorch"), BackendSpec("onnxruntime", onnx_dir=str(export))))
    reference, user = result.results
    assert user.error is None, user.error
    assert "diffusers conversion-script layout" not in user.load.notes
    assert psnr(reference.image, user.image) >= 35 and user.verdict.kind == "MATCH", user.verdict


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": " "}, "The prompt is empty"),
    ({"height": 30, "width": 32}, "height and width have to be divisible by 4 but are 30 and 32."),
    ({"steps": 0}, "Steps must be between 1 and"),
])
def test_bad_image_input_is_one_sentence(arena, tiny_sd, kwargs, message):
    result = run(arena, tiny_sd, **kwargs)
    assert result.results == () and message in result.error


def test_a_folder_that_is_not_a_pipeline_is_explained(arena, tiny_llama):
    assert "has no model_index.json" in run(arena, tiny_llama).error


@pytest.mark.slow
def test_the_shipped_model_draws_what_it_is_told_in_both_backends(arena):
    """The embedded Scenes 64px model: the named colors where they belong, PyTorch and ONNX Runtime alike."""
    from arena.preparing.catalog import IMAGE_CATALOG
    from arena.preparing.scenes import Scene, score_image

    entry = IMAGE_CATALOG[0]
    scenes = [Scene("circle", "red", "blue"), Scene("square", "yellow", "black", "small", "in the top left"),
              Scene("triangle", "white", "purple", "large", "at the bottom")]
    for index, scene in enumerate(scenes):
        result = run(arena, entry.key, prompt=scene.describe(), steps=entry.steps,
                     guidance_scale=entry.guidance_scale, seed=index)
        assert result.error is None and result.prepared.source == "embedded", result.error
        torch_result, ort_result = result.results
        assert torch_result.error is None and ort_result.error is None, (torch_result.error, ort_result.error)
        for image in (torch_result.image, ort_result.image):
            assert image.shape == (64, 64, 3)
            assert score_image(image, scene)["ok"], (scene.describe(), score_image(image, scene))
        assert psnr(torch_result.image, ort_result.image) >= 35
        assert [r.verdict.kind for r in result.results] == ["MATCH", "MATCH"]


GPU_IMAGE_SPECS = [
    (BackendSpec("pytorch", device="cuda"), 30),
    (BackendSpec("pytorch", device="cuda", precision="fp16", vae_fp32=True), 20),
    (BackendSpec("onnxruntime", provider="CUDAExecutionProvider"), 30),
    (BackendSpec("onnxruntime", provider="TensorrtExecutionProvider"), 30),
    (BackendSpec("tensorrt"), 30),
    (BackendSpec("tensorrt", precision="fp16", vae_fp32=True), 20),
]


@pytest.mark.gpu
@pytest.mark.parametrize(("spec", "min_psnr"), GPU_IMAGE_SPECS,
                         ids=[s.label.replace(" · ", "-").replace(" ", "_") for s, _ in GPU_IMAGE_SPECS])
def test_gpu_image_paths_match_the_cpu_reference(arena, tiny_sd, spec, min_psnr):
    problem = arena._backend_cls(spec.backend).check_spec(spec, arena.environment())
    if problem:
        pytest.skip(f"needs the GPU stack: {problem}")
    reference, result = run(arena, tiny_sd, backends=(BackendSpec("pytorch"), spec)).results
    assert result.error is None, result.error
    assert np.isfinite(result.image).all() and result.image.std() > 0  # not a black (NaN) square
    assert psnr(reference.image, result.image) >= min_psnr
