"""The shared Hugging Face / diffusers implementation, apart from the contract (`backends.contract`): the causal LM
a folder holds (`load_causal_lm`), greedy generation through transformers (`hf_generate`), a diffusers pipeline
phase by phase (`diffusers_generate`) and component by component (`diffusers_components`), the `HFBackend` the
PyTorch and ONNX Runtime backends build on, and the runtimes' thread setup (`torch_threads`,
`ort_session_options`). torch, transformers and diffusers are imported inside functions only.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable
from typing import Any

from backends.contract import (
    Backend,
    GenerationSettings,
    ImageSettings,
    PreparedImage,
    worker_threads,
)


def load_causal_lm(model_dir: str, **kwargs: Any) -> Any:
    """The language model of a folder: `AutoModelForCausalLM`, or, for a model published only in its multimodal
    form (Mistral 3 as `Mistral3ForConditionalGeneration`: no causal-LM class maps its config),
    `AutoModelForImageTextToText`, whose forward takes text alone. Both the PyTorch reference and the ONNX export
    load through here, so they compute the same function."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            return AutoModelForImageTextToText.from_pretrained(model_dir, **kwargs)
    return AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)


def torch_facts() -> dict[str, Any]:
    """What torch says about this machine (imports torch: the environment probe's child process only)."""
    try:
        import torch

        facts = {
            "installed": True,
            "version": torch.__version__,
            "cuda_build": torch.version.cuda,
            "cuda_available": bool(torch.cuda.is_available()),
            "devices": [],
            "bf16_cuda": False,
        }
        if facts["cuda_available"]:
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                facts["devices"].append({
                    "name": props.name, "capability": f"{props.major}.{props.minor}",
                    "memory_gb": round(props.total_memory / 2**30, 1)})
            facts["bf16_cuda"] = bool(torch.cuda.is_bf16_supported())
        return facts
    except Exception as exc:  # noqa: BLE001 - a broken install is a fact to report
        return {"installed": False, "error": f"{type(exc).__name__}: {exc}"}


def torch_threads(threads: int | None = None) -> int:
    """Give torch's intra-op pool ``threads`` (a backend passes ``ctx.threads``, the CPU budget; else
    `backends.contract.worker_threads`); return what it uses."""
    import torch

    wanted = threads or worker_threads()
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return torch.get_num_threads()


def ort_session_options(onnxruntime: Any, threads: int | None = None) -> Any:
    """ONNX Runtime `SessionOptions` sized to the CPU budget: ``threads`` (a backend passes ``ctx.threads``; else
    `backends.contract.worker_threads`) for one operator, one inter-op thread (the graphs here run sequentially).
    Every session a backend creates starts from these."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or worker_threads()
    options.inter_op_num_threads = 1
    return options


def hf_generate(model: Any, prompt_ids: list[int], settings: GenerationSettings,
                on_token: Callable[[int], None], device: Any = "cpu", **extra: Any) -> list[int]:
    """Greedy generation through transformers' `generate`, shared by every backend built on a HF model class.

    An explicit GenerationConfig replaces whatever each model folder ships (sampling defaults, repetition
    penalties), so every backend decodes under exactly the same rules; ``extra`` adds how it runs, never what it
    decodes (a static cache and a compile config for `torch.compile`).
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
        **extra,
    )
    input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    attention_mask = torch.ones_like(input_ids)
    # transformers fills every field left unset here from the model's own generation config (the folder's
    # generation_config.json: a repetition penalty, sampling defaults), so a repository could make the reference
    # decode differently from the other backends: during this call the model's defaults are the library's own.
    own = getattr(model, "generation_config", None)
    try:
        if own is not None:
            model.generation_config = GenerationConfig()
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                    streamer=_TokenStreamer())
    finally:
        if own is not None:
            model.generation_config = own
    return [int(t) for t in output[0, len(prompt_ids):].tolist()]


def diffusers_generate(pipe: Any, model: PreparedImage, settings: ImageSettings, on_phase: Callable[[str], None],
                       on_step: Callable[[int], None], device: Any = "cpu", dtype: Any = None,
                       vae_dtype: Any = None, keep: dict[str, Any] | None = None) -> Any:
    """One image through a diffusers-style pipeline (PyTorch, or the ONNX Runtime one of
    `backends.onnxruntime.pipeline`), phase by phase.

    The numbered steps of the pipeline are run in the open so the host can time them: prompt encoding, the
    denoising loop (one callback per step) on the shared latents with the shared scheduler, then the VAE decode.
    ``keep`` gets the final latents (the tensor itself: no copy, no device sync inside the timed run).
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
        if keep is not None:
            keep["latents"] = latents
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


# Where did an image break (`diffusers_components`): the denoising steps whose UNet input the reference keeps and
# every candidate's UNet runs on. Every step of a run up to UNET_STEPS_MAX steps (the default pipeline's 20 are all
# kept), else the first, the last and an even spread between; fewer when the kept inputs and outputs would pass
# UNET_STEPS_MAX_BYTES (Stable Diffusion 1.5 at 512 px under guidance: 256 KiB a step, 6.4 MiB for 25).
UNET_STEPS_MAX = 25
UNET_STEPS_MAX_BYTES = 64 * 2**20


def unet_step_indices(total: int, step_bytes: int) -> list[int]:
    """The 0-based denoising steps (of ``total``) whose UNet input and output are kept, ``step_bytes`` each."""
    limit = max(1, min(UNET_STEPS_MAX, UNET_STEPS_MAX_BYTES // max(step_bytes, 1)))
    if total <= limit:
        return list(range(total))
    if limit == 1:
        return [0]
    return sorted({round(i * (total - 1) / (limit - 1)) for i in range(limit)})


class _KeptUNet:
    """The pipeline's UNet for one untimed run of its denoising loop: the sample, timestep and raw prediction of
    the calls numbered in ``keep`` (the loop's steps, from 0) are kept as numpy; everything else is the UNet's."""

    def __init__(self, unet: Any, keep: list[int], numpy: Callable[[Any], Any]) -> None:
        self._unet, self._keep, self._numpy = unet, set(keep), numpy
        self.calls = 0
        self.kept: list[tuple[Any, Any, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._unet, name)

    def __call__(self, sample: Any, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        out = self._unet(sample, timestep, *args, **kwargs)
        if self.calls in self._keep:
            noise = out[0] if isinstance(out, tuple) else out.sample
            import torch

            self.kept.append((self._numpy(sample), self._numpy(torch.as_tensor(timestep).reshape(-1)[0]),
                              self._numpy(noise)))
        self.calls += 1
        return out


def diffusers_components(pipe: Any, model: PreparedImage, settings: ImageSettings, inputs: dict[str, Any] | None,
                         device: Any = "cpu", dtype: Any = None, vae_dtype: Any = None) -> dict[str, Any]:
    """`Backend.image_component_outputs` for a diffusers-style pipeline (PyTorch or ONNX Runtime's).

    The inputs are the pipeline's own arithmetic (`diffusers_generate`): the prompts' ids padded to the tokenizer's
    length (negative first under classifier-free guidance); the UNet's input at each kept denoising step
    (`unet_step_indices`) as the reference's own loop, run once more here (untimed), fed it: its latents scaled
    through ``scale_model_input`` for that step's timestep, doubled under guidance (the UNet's raw prediction of
    both halves is compared, before guidance mixes them), stacked along a first axis with the timesteps
    ("sample", "timestep", "unet_steps", "unet_total"); and the final latents divided by the VAE's scaling
    factor. A candidate's UNet runs once per kept step; its output is stacked the same way."""
    import json

    import diffusers
    import numpy as np
    import torch

    if getattr(pipe, "text_encoder_2", None) is not None or getattr(pipe, "text_encoder", None) is None:
        raise NotImplementedError("components are compared for pipelines with one CLIP text encoder (Stable "
                                  "Diffusion 1.x/2.x) only")
    dtype = dtype or torch.float32
    guidance = settings.guidance_scale > 1.0
    numpy = (lambda value: value.detach().float().cpu().numpy())  # noqa: E731 - one short conversion
    outputs: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with torch.inference_mode():
        if inputs is None or "input_ids" not in inputs:
            final = None if inputs is None else inputs.get("final_latents")
            tokenizer = pipe.tokenizer
            texts = ([settings.negative_prompt or ""] if guidance else []) + [settings.prompt]
            ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids
            config = json.loads(model.scheduler)
            scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
            scheduler.set_timesteps(settings.steps, device=device)
            total = len(scheduler.timesteps)  # UNet calls of the loop (a second-order scheduler makes more)
            start = np.asarray(model.latents, np.float32)
            keep = unet_step_indices(total, 2 * 4 * start.size * (2 if guidance else 1))  # input and output
            embeds = pipe.text_encoder(ids.to(device), return_dict=False)[0]
            # The reference's own denoising loop, as its run did it, once more: its UNet's input, timestep and
            # prediction at the kept steps, and (unless its run's are given) its final latents.
            half = embeds.shape[0] // 2 if guidance else 0
            pipe.scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
            unet = pipe.unet
            kept = _KeptUNet(unet, keep, numpy)
            object.__setattr__(pipe, "unet", kept)  # not the pipeline's __setattr__: its config stays as it was
            try:
                looped = pipe(prompt_embeds=embeds[half:].to(dtype),
                              negative_prompt_embeds=embeds[:half].to(dtype) if guidance else None,
                              latents=torch.from_numpy(start).to(device=device, dtype=dtype),
                              num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                              height=model.height, width=model.width, output_type="latent").images
            except Exception as exc:  # noqa: BLE001 - the UNet failing in the loop is a finding, not a crash
                errors["unet"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                looped = None
            finally:
                object.__setattr__(pipe, "unet", unet)
            if final is None:
                final = numpy(looped) if looped is not None else None
            if len(kept.kept) != len(keep) and "unet" not in errors:
                errors["unet"] = (f"the denoising loop called the UNet {kept.calls} times, not the {total} its "
                                  "scheduler's timesteps say")
            inputs = {"input_ids": ids.numpy(), "encoder_hidden_states": numpy(embeds),
                      "unet_steps": np.asarray(keep, np.int64), "unet_total": np.asarray(total, np.int64)}
            if "unet" not in errors:
                inputs |= {"sample": np.stack([sample for sample, _, _ in kept.kept]),
                           "timestep": np.stack([timestep for _, timestep, _ in kept.kept]).astype(
                               scheduler.timesteps.cpu().numpy().dtype)}
                outputs["unet"] = np.stack([noise for _, _, noise in kept.kept])
            if final is not None:
                inputs["latent_sample"] = np.asarray(final, np.float32) / pipe.vae.config.scaling_factor

        def tensor(value: Any, to: Any = None) -> Any:
            return torch.from_numpy(np.asarray(value)).to(device=device, dtype=to)

        def unet_steps() -> Any:
            """The UNet on each kept step's input (one stacked output; one step's for inputs without steps)."""
            embeds = tensor(inputs["encoder_hidden_states"], dtype)
            samples, timesteps = np.asarray(inputs["sample"]), np.asarray(inputs["timestep"])
            if timesteps.ndim == 0:
                return pipe.unet(tensor(samples, dtype), tensor(timesteps), encoder_hidden_states=embeds,
                                 return_dict=False)[0]
            return torch.stack([pipe.unet(tensor(sample, dtype), tensor(timestep), encoder_hidden_states=embeds,
                                          return_dict=False)[0] for sample, timestep in zip(samples, timesteps,
                                                                                            strict=True)])

        steps = {
            "text_encoder": lambda: pipe.text_encoder(tensor(inputs["input_ids"], torch.long), return_dict=False)[0],
            "unet": unet_steps,
            "vae_decoder": lambda: pipe.vae.decode(tensor(inputs["latent_sample"], vae_dtype or dtype),
                                                   return_dict=False)[0],
        }
        for component, run in steps.items():
            if component in outputs or component in errors:  # the reference's UNet: kept from its loop
                continue
            if component == "vae_decoder" and "latent_sample" not in inputs:
                continue  # (the reference's loop failed: no final latents)
            try:
                outputs[component] = numpy(run())
            except Exception as exc:  # noqa: BLE001 - a component that fails is a finding, not a crash
                errors[component] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    return {"inputs": inputs, "outputs": outputs, "errors": errors}


class HFBackend(Backend, ABC):
    """A backend whose loaded model is a transformers-style class with `generate` (PyTorch; ONNX Runtime's pipeline).

    Subclasses implement the cheap class methods and `load`, which sets ``self.model``, ``self.device`` and
    ``self._info``; generation, runtime info and unloading are shared.
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.device = "cpu"
        self._info: dict[str, Any] = {}
        self.generation_extra: dict[str, Any] = {}  # GenerationConfig fields on how to run (see `hf_generate`)

    def generate_text(self, prompt_ids: list[int], settings: GenerationSettings,
                      on_token: Callable[[int], None]) -> list[int]:
        ids = hf_generate(self.model, prompt_ids, settings, on_token, device=self.device, **self.generation_extra)
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()  # the host's clock stops only when the GPU is done
        return ids

    def generate_image(self, model: PreparedImage, settings: ImageSettings,
                       on_phase: Callable[[str], None], on_step: Callable[[int], None]) -> Any:
        self._kept: dict[str, Any] = {}
        return diffusers_generate(self.model, model, settings, on_phase, on_step, device=self.device,
                                  keep=self._kept, **self._image_dtypes())

    @property
    def last_latents(self) -> Any:
        """The last image's final latents as numpy (converted after the timed run, on first ask)."""
        latents = getattr(self, "_kept", {}).get("latents")
        return None if latents is None else latents.detach().float().cpu().numpy()

    def image_component_outputs(self, model: PreparedImage, settings: ImageSettings,
                                inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        return diffusers_components(self.model, model, settings, inputs, device=self.device, **self._image_dtypes())

    def _image_dtypes(self) -> dict[str, Any]:
        """Latent and VAE dtypes for the loaded pipeline (fp32 unless a subclass says otherwise)."""
        return {}

    def forward_logits(self, token_ids: list[int]) -> Any:
        import torch

        ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        return logits[0].float().cpu().numpy()

    def cached_step_logits(self, prompt_ids: list[int], answer_ids: list[int]) -> Any:
        """The loaded model's forward with its cache, step by step, as `generate` calls it (PyTorch's DynamicCache,
        or an ONNX Runtime model's ``present.*`` outputs fed back as ``past_key_values.*``)."""
        import torch

        def ones(n: int) -> Any:
            return torch.ones((1, n), dtype=torch.long, device=self.device)

        rows = []
        with torch.inference_mode():
            ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
            out = self.model(input_ids=ids, attention_mask=ones(ids.shape[1]), use_cache=True)
            rows.append(out.logits[0, -1].float().cpu())
            total = ids.shape[1]
            for token in list(answer_ids)[:-1]:
                total += 1
                step = torch.tensor([[int(token)]], dtype=torch.long, device=self.device)
                out = self.model(input_ids=step, attention_mask=ones(total), past_key_values=out.past_key_values,
                                 use_cache=True)
                rows.append(out.logits[0, -1].float().cpu())
        return torch.stack(rows).numpy()

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
