"""The PyTorch reference is fp32 whatever dtype its checkpoint was saved in: transformers 5 (and diffusers) load a
checkpoint in its own dtype unless one is asked for, so the backend asks for its precision and checks it got it."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from arena.errors import ArenaError
from arena.preparing.cache import ArtifactCache
from arena.types import BackendSpec, PreparedImage, PreparedText
from backends.contract import LoadContext
from backends.torch_backend import PyTorchBackend, dtype_problem


def quiet(*_args, **_kwargs) -> None:
    pass


def saved_dtypes(path: Path) -> set[str]:
    """The tensor dtypes a safetensors file's header declares."""
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    return {info["dtype"] for name, info in header.items() if name != "__metadata__"}


def half_copy(source: Path, out: Path, dtype_name: str) -> Path:
    """``source``'s model saved in ``dtype_name`` (its tokenizer files copied as they are)."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(source, out)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model.to(getattr(torch, dtype_name)).save_pretrained(out, safe_serialization=True)
    return out


def prepared(folder: Path) -> PreparedText:
    return PreparedText(model_dir=str(folder), model_name=folder.name, source="local", rendered_prompt="",
                        prompt_token_ids=(1, 5, 9), eos_token_ids=(2,), pad_token_id=2, context_length=128,
                        fingerprint="x")


@pytest.mark.parametrize("dtype_name, saved", [("bfloat16", "BF16"), ("float16", "F16")])
def test_a_half_precision_checkpoint_loads_as_the_fp32_reference(tiny_llama, tmp_path, dtype_name, saved):
    import torch
    from transformers import AutoModelForCausalLM

    folder = half_copy(tiny_llama, tmp_path / f"tiny-{dtype_name}", dtype_name)
    assert saved_dtypes(folder / "model.safetensors") == {saved}
    # The premise: left to itself, transformers 5 loads the checkpoint's own dtype.
    assert AutoModelForCausalLM.from_pretrained(folder).dtype == getattr(torch, dtype_name)

    backend = PyTorchBackend()
    spec = BackendSpec("pytorch", device="cpu", precision="fp32")
    assert PyTorchBackend.can_be_reference(spec.to_dict())
    backend.load(prepared(folder), spec, LoadContext(cache=ArtifactCache(tmp_path / "cache"), progress=quiet))
    assert {p.dtype for p in backend.model.parameters()} == {torch.float32}
    assert backend.model.dtype == torch.float32
    # The same numbers as the half weights widened by hand: fp32 arithmetic on the checkpoint's values.
    widened = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype_name)).float().eval()
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    with torch.inference_mode():
        assert torch.equal(backend.model(input_ids=ids).logits, widened(input_ids=ids).logits)


def test_bf16_asked_for_an_fp32_checkpoint_is_bf16(tiny_llama, tmp_path):
    import torch

    backend = PyTorchBackend()
    backend.load(prepared(tiny_llama), BackendSpec("pytorch", device="cpu", precision="bf16"),
                 LoadContext(cache=ArtifactCache(tmp_path / "cache"), progress=quiet))
    assert {p.dtype for p in backend.model.parameters()} == {torch.bfloat16}


def test_a_load_that_ignores_the_asked_dtype_is_refused(tiny_llama, tmp_path, monkeypatch):
    """Should a loader ever drop the dtype (as `dtype="auto"` would), the reference refuses to run in the
    checkpoint's precision: one sentence naming what it got."""
    import torch
    import transformers

    folder = half_copy(tiny_llama, tmp_path / "tiny-bf16", "bfloat16")
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda path, **kwargs: real(path, **{**kwargs, "dtype": "auto"}))
    with pytest.raises(ArenaError) as raised:
        PyTorchBackend().load(prepared(folder), BackendSpec("pytorch", device="cpu", precision="fp32"),
                              LoadContext(cache=ArtifactCache(tmp_path / "cache"), progress=quiet))
    message = str(raised.value)
    assert "bfloat16 (e.g. " in message and "where float32 was asked for" in message and "\n" not in message
    assert dtype_problem(torch.nn.Linear(2, 2), torch.float32, "x") is None


def test_an_fp16_pipeline_loads_as_the_fp32_reference(tiny_sd, tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    folder = tmp_path / "sd-fp16"
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    assert saved_dtypes(folder / "unet" / "diffusion_pytorch_model.safetensors") == {"F16"}
    model = PreparedImage(model_dir=str(folder), model_name="tiny-sd-fp16", source="local", fingerprint="x",
                          height=32, width=32, latents=None, scheduler="{}")
    backend = PyTorchBackend()
    backend.load(model, BackendSpec("pytorch", device="cpu", precision="fp32"),
                 LoadContext(cache=ArtifactCache(tmp_path / "cache"), progress=quiet))
    for name in ("text_encoder", "unet", "vae"):
        assert {p.dtype for p in getattr(backend.model, name).parameters()} == {torch.float32}, name
