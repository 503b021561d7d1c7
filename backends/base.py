"""The Backend contract: what every runtime implements so the core can load it, run it and compare it.

Rules every backend follows (a shared contract test holds them to it):
- Importing a backend module is cheap: torch, onnxruntime and friends are imported inside methods, so the UI
  process can ask `options()` without loading them.
- A backend never times itself. It marks its phases with ``ctx.stage("export")`` and reports tokens through
  ``on_token``; the host in the worker process owns the clock.
- ``generate_text`` is greedy and deterministic for a fixed input.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from arena.cache import ArtifactCache
    from arena.types import BackendSpec, PreparedImage, PreparedText


@dataclass(frozen=True)
class Availability:
    """Whether something can run here; if not, why and the command that would fix it."""

    ok: bool
    reason: str = ""
    install: str = ""

    def sentence(self) -> str:
        if self.ok:
            return "available"
        return f"{self.reason} Install: `{self.install}`" if self.install else self.reason


AVAILABLE = Availability(True)


@dataclass(frozen=True)
class OptionChoice:
    """One value of a backend option (a device, a precision, a provider) and whether it can run here."""

    value: str
    label: str
    availability: Availability = AVAILABLE


@dataclass(frozen=True)
class GenerationSettings:
    """Greedy decoding settings every backend receives identically."""

    max_new_tokens: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    ignore_eos: bool = False


@dataclass(frozen=True)
class ImageSettings:
    """Diffusion settings every backend receives identically."""

    prompt: str
    negative_prompt: str
    steps: int
    guidance_scale: float


@dataclass
class LoadContext:
    """What a backend gets while loading: the artifact cache, progress reporting and phase marks."""

    cache: ArtifactCache
    progress: Callable[..., None]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str, description: str | None = None) -> Iterator[None]:
        """Mark a phase ("export", "load"); the host reads the durations, the backend never does."""
        self.progress(None, description or name, force=True)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - start


class Backend(ABC):
    """A runtime that generates text from token ids and images from latents. One instance lives in one worker
    process; it holds one model at a time (a causal LM or a diffusion pipeline, by ``model.task``)."""

    name: ClassVar[str]  # "pytorch", "onnxruntime": the key used in requests and the API
    title: ClassVar[str]  # shown in the UI
    option_names: ClassVar[tuple[str, ...]]  # spec fields the UI offers for this backend

    # --- cheap, UI-process side -------------------------------------------------------------
    @classmethod
    @abstractmethod
    def availability(cls, env: dict[str, Any]) -> Availability:
        """Can this backend run at all here (from the environment probe's facts)?"""

    @classmethod
    @abstractmethod
    def options(cls, env: dict[str, Any]) -> dict[str, list[OptionChoice]]:
        """Each option's choices with their availability here."""

    @classmethod
    def check_spec(cls, spec: BackendSpec, env: dict[str, Any]) -> str | None:
        """Why this configuration cannot run here (one sentence with the fix), or None if it can."""
        whole = cls.availability(env)
        if not whole.ok:
            return f"{cls.title} is not available here: {whole.sentence()}"
        for option, choices in cls.options(env).items():
            value = getattr(spec, option)
            match = next((c for c in choices if c.value == value), None)
            if match is None:
                allowed = ", ".join(c.value for c in choices)
                return f"{cls.title} has no {option} '{value}'; choose one of: {allowed}."
            if not match.availability.ok:
                return f"{cls.title} {option} '{value}' cannot run here: {match.availability.sentence()}"
        return None

    # --- worker-process side ----------------------------------------------------------------
    @abstractmethod
    def load(self, model: PreparedText | PreparedImage, spec: BackendSpec, ctx: LoadContext) -> None:
        """Convert (cached) and load the model for this spec (``model.task`` is "text" or "image")."""

    @abstractmethod
    def generate_text(self, prompt_ids: list[int], settings: GenerationSettings,
                      on_token: Callable[[int], None]) -> list[int]:
        """Greedily generate; call ``on_token`` once per new token as it is produced; return the new ids."""

    @abstractmethod
    def generate_image(self, model: PreparedImage, settings: ImageSettings,
                       on_phase: Callable[[str], None], on_step: Callable[[int], None]) -> Any:
        """Denoise ``model.latents`` and decode; mark "text_encoder", "unet", "vae", "done" with ``on_phase`` and
        each denoising step with ``on_step``; return the image as uint8 HxWx3."""

    def forward_logits(self, token_ids: list[int]) -> Any:
        """Logits (numpy float32, tokens x vocab) of one forward pass over ``token_ids`` with an empty cache: the
        first-step logits compared across backends, and the reference's perplexity of every output."""
        raise NotImplementedError(f"{type(self).__name__} cannot return logits")

    @abstractmethod
    def runtime_info(self) -> dict[str, Any]:
        """What actually runs the model: {"provider": ..., "artifact_dir": ..., "export_cached": ...}."""

    @abstractmethod
    def unload(self) -> None:
        """Free the model (the worker process also exits cleanly on shutdown)."""


def torch_threads() -> int:
    """Give torch's intra-op pool the CPU budget (`arena.resources.thread_count`) and return what it now uses."""
    import torch

    from arena.resources import thread_count

    wanted = thread_count()
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return torch.get_num_threads()


def ort_session_options(onnxruntime: Any) -> Any:
    """ONNX Runtime `SessionOptions` sized to the CPU budget: ``intra_op_num_threads`` threads for one operator,
    one inter-op thread (the graphs here run sequentially). Every session a backend creates starts from these."""
    from arena.resources import thread_count

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = thread_count()
    options.inter_op_num_threads = 1
    return options


def hf_generate(model: Any, prompt_ids: list[int], settings: GenerationSettings,
                on_token: Callable[[int], None], device: Any = "cpu") -> list[int]:
    """Greedy generation through transformers' `generate`, shared by every backend built on a HF model class.

    An explicit GenerationConfig replaces whatever each model folder ships (sampling defaults, repetition
    penalties), so every backend decodes under exactly the same rules.
    """
    import torch
    from transformers import GenerationConfig
    from transformers.generation.streamers import BaseStreamer

    class _TokenStreamer(BaseStreamer):
        def __init__(self) -> None:
            self.prompt_seen = False

        def put(self, value: torch.Tensor) -> None:
            if not self.prompt_seen:  # generate() first hands over the prompt itself
                self.prompt_seen = True
                return
            for token in value.reshape(-1).tolist():
                on_token(int(token))

        def end(self) -> None:
            pass

    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.max_new_tokens if settings.ignore_eos else None,
        do_sample=False,
        num_beams=1,
        eos_token_id=list(settings.eos_token_ids) or None,
        pad_token_id=settings.pad_token_id if settings.pad_token_id is not None
        else (settings.eos_token_ids[0] if settings.eos_token_ids else None),
        use_cache=True,
    )
    input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    attention_mask = torch.ones_like(input_ids)
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                streamer=_TokenStreamer())
    return [int(t) for t in output[0, len(prompt_ids):].tolist()]


def diffusers_generate(pipe: Any, model: PreparedImage, settings: ImageSettings, on_phase: Callable[[str], None],
                       on_step: Callable[[int], None], device: Any = "cpu", dtype: Any = None,
                       vae_dtype: Any = None) -> Any:
    """One image through a diffusers-style pipeline (PyTorch or optimum's ONNX Runtime one), phase by phase.

    The numbered steps of the pipeline are run in the open so the host can time them: prompt encoding, the
    denoising loop (one callback per step) on the shared latents with the shared scheduler, then the VAE decode.
    """
    import json

    import diffusers
    import numpy as np
    import torch

    config = json.loads(model.scheduler)
    pipe.scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    latents = torch.from_numpy(np.asarray(model.latents)).to(device=device, dtype=dtype or torch.float32)
    guidance = settings.guidance_scale > 1.0
    with torch.inference_mode():
        # 1. Text encoder.
        on_phase("text_encoder")
        embeds, negative = pipe.encode_prompt(settings.prompt, device, 1, guidance,
                                              negative_prompt=settings.negative_prompt or None)

        # 2. Denoising loop: the pipeline scales the latents by init_noise_sigma and steps the scheduler.
        def step_end(_pipe, index, _timestep, kwargs):
            if not torch.isfinite(kwargs["latents"]).all():  # say where, not just that the image is black
                raise FloatingPointError(f"NaN/Inf first appeared in the latents after step {index + 1}: an fp16 "
                                         "overflow? Try fp32.")
            on_step(index)
            return kwargs

        on_phase("unet")
        latents = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, latents=latents,
                       num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                       height=model.height, width=model.width, output_type="latent",
                       callback_on_step_end=step_end).images

        # 3. VAE decode, from latents scaled back by the VAE's scaling factor.
        if not torch.isfinite(latents).all():
            raise FloatingPointError("NaN/Inf in the latents after the denoising loop: an fp16 overflow? Try fp32.")
        on_phase("vae")
        scaling = pipe.vae.config.scaling_factor
        decoded = pipe.vae.decode(latents.to(vae_dtype or latents.dtype) / scaling, return_dict=False)[0]
        if not torch.isfinite(decoded).all():
            raise FloatingPointError("NaN/Inf first appeared in the VAE decoder output: an fp16 VAE overflows; "
                                     "keep the VAE in fp32.")
        image = pipe.image_processor.postprocess(decoded.float(), output_type="np")[0]
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        on_phase("done")
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


class HFBackend(Backend, ABC):
    """A backend whose loaded model is a transformers-style class with `generate` (PyTorch, optimum's ORT models).

    Subclasses implement the cheap class methods and `load`, which sets ``self.model``, ``self.device`` and
    ``self._info``; generation, runtime info and unloading are shared.
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.device = "cpu"
        self._info: dict[str, Any] = {}

    def generate_text(self, prompt_ids: list[int], settings: GenerationSettings,
                      on_token: Callable[[int], None]) -> list[int]:
        ids = hf_generate(self.model, prompt_ids, settings, on_token, device=self.device)
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()  # the host's clock stops only when the GPU is done
        return ids

    def generate_image(self, model: PreparedImage, settings: ImageSettings,
                       on_phase: Callable[[str], None], on_step: Callable[[int], None]) -> Any:
        return diffusers_generate(self.model, model, settings, on_phase, on_step, device=self.device,
                                  **self._image_dtypes())

    def _image_dtypes(self) -> dict[str, Any]:
        """Latent and VAE dtypes for the loaded pipeline (fp32 unless a subclass says otherwise)."""
        return {}

    def forward_logits(self, token_ids: list[int]) -> Any:
        import torch

        ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        return logits[0].float().cpu().numpy()

    def runtime_info(self) -> dict[str, Any]:
        return dict(self._info)

    def unload(self) -> None:
        import gc
        import sys

        self.model = None
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
