"""The embedded image model (assets/image-model) draws what it is told, in PyTorch and in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from arena.catalog import DEFAULT_IMAGE_MODEL
from arena.image_metrics import psnr
from arena.scenes import Scene, score_image
from arena.types import BackendSpec, ImageRunRequest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SCENES = (
    Scene("circle", "red", "blue"),
    Scene("square", "yellow", "black", "small", "in the top left"),
    Scene("triangle", "white", "purple", "large", "at the bottom"),
)


def test_the_shipped_model_is_small_and_complete():
    model = ROOT / "assets" / "image-model"
    for part in ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json",
                 "text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                 "vae/diffusion_pytorch_model.safetensors"):
        assert (model / part).is_file(), part
    weights = sum(p.stat().st_size for p in model.rglob("*.safetensors"))
    assert weights <= 25 * 2**20


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: s.describe())
def test_both_backends_draw_the_prompt(arena, scene):
    request = ImageRunRequest(model=DEFAULT_IMAGE_MODEL, prompt=scene.describe(), seed=0,
                              backends=(BackendSpec("pytorch"), BackendSpec("onnxruntime")))
    result = arena.run_image_to_end(request)
    assert result.error is None, result.error
    torch_result, ort_result = result.results
    assert torch_result.error is None and ort_result.error is None, (torch_result.error, ort_result.error)
    assert torch_result.image.shape == (64, 64, 3)
    for backend in (torch_result, ort_result):
        verdict = score_image(backend.image, scene)
        assert verdict["ok"], (backend.spec.label, verdict)
    assert psnr(torch_result.image, ort_result.image) >= 35
