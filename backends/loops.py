"""Runtime-agnostic generation loops for backends that run bare graphs (TensorRT engines, ONNX sessions).

A *runner* is any callable that takes named torch tensors and returns named torch tensors (and says its
``input_names`` and ``input_ranks``): a TensorRT engine (`backends.tensorrt_backend.TrtRunner`) on the GPU, or an
ONNX Runtime session (`OrtRunner`) anywhere. The loops below drive the graphs of a KV-cache export (the arena's
dynamo export, the GenAI builder's, optimum-cli's) exactly the way transformers' `generate` and diffusers'
pipelines do. The ONNX Runtime backend runs on them, and on a GPU box the same loops drive the TensorRT engines.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backends.contract import GenerationSettings, ImageSettings, PreparedImage

Runner = Callable[..., dict[str, Any]]
PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)")
STATE = re.compile(r"past\.(\d+)\.(\w+)")  # the GenAI builder's recurrent states: LFM2's past.N.conv, Qwen3.5's
# past.N.conv and past.N.recurrent (fixed shapes, zeros before the prompt)


def present_name(name: str) -> str:
    """The output that carries a cache input to the next step: past_key_values.N.key -> present.N.key,
    past.N.conv -> present.N.conv."""
    return "present" + name[len("past_key_values"):] if name.startswith("past_key_values.") else \
        "present" + name[len("past"):]


class OrtRunner:
    """An ONNX Runtime session as a runner: torch tensors in (cast to the graph's input types), torch tensors out."""

    _TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(bool)": "bool"}

    def __init__(self, path: str, providers: list | None = None, session_options: Any = None) -> None:
        import onnxruntime

        from backends.hf import ort_session_options

        self.session = onnxruntime.InferenceSession(path, sess_options=session_options or ort_session_options(
            onnxruntime), providers=providers or ["CPUExecutionProvider"])
        self.input_types = {i.name: self._TYPES.get(i.type, "float32") for i in self.session.get_inputs()}
        self.input_ranks = {i.name: len(i.shape) for i in self.session.get_inputs()}
        self.input_names = tuple(self.input_types)
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self._shapes = {i.name: list(i.shape) for i in self.session.get_inputs()}

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def past_shapes(self) -> dict[str, tuple[int, int]] | None:
        """{past input: (heads, head dim)} read from the graph where it states them (every exporter here does),
        so layers of different shapes (a model's global and sliding layers) each get theirs; else None."""
        shapes = {}
        for name, shape in self._shapes.items():
            if PAST.fullmatch(name):
                if len(shape) != 4 or not isinstance(shape[1], int) or not isinstance(shape[3], int):
                    return None
                shapes[name] = (shape[1], shape[3])
        return shapes or None

    def state_shapes(self, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """{cache input: shape of one row} for the cache inputs that do not start empty: the GenAI builder's
        recurrent states (``past.N.conv``, ``past.N.recurrent``: the graph's fixed shapes) and its sliding layers'
        KV buffers (dimension ``past_sliding_length``: GroupQueryAttention wants at least the window there, and
        reads the valid length from the attention mask)."""
        text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
        out = {}
        for name, shape in self._shapes.items():
            if STATE.fullmatch(name) and all(isinstance(d, int) for d in shape[1:]):
                out[name] = tuple(shape[1:])
            elif PAST.fullmatch(name) and len(shape) == 4 and shape[2] == "past_sliding_length" \
                    and text.get("sliding_window"):
                _, heads, dim = kv_cache_layout(self.input_names, config)
                out[name] = (shape[1] if isinstance(shape[1], int) else heads, int(text["sliding_window"]),
                             shape[3] if isinstance(shape[3], int) else dim)
        return out

    def __call__(self, **inputs: Any) -> dict[str, Any]:
        import numpy as np
        import torch

        feeds = {name: inputs[name].detach().cpu().numpy().astype(np.dtype(self.input_types[name]), copy=False)
                 for name in self.input_names if name in inputs}
        outputs = self.session.run(None, feeds)
        return {name: torch.from_numpy(np.ascontiguousarray(value))
                for name, value in zip(self.output_names, outputs, strict=True)}


def kv_cache_layout(input_names: tuple[str, ...], config: dict[str, Any]) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a decoder graph from its past_key_values inputs and the model config."""
    layers = 1 + max((int(m.group(1)) for n in input_names if (m := PAST.fullmatch(n))), default=-1)
    if not (config.get("num_attention_heads") or config.get("n_head")) and isinstance(config.get("text_config"), dict):
        config = config["text_config"]  # a multimodal folder's language model
    heads = config.get("num_attention_heads") or config.get("n_head")
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or (config.get("hidden_size") or config.get("n_embd")) // heads
    if layers == 0:
        raise ValueError("The decoder graph has no past_key_values inputs: export it with "
                         "--task text-generation-with-past.")
    return layers, int(kv_heads), int(head_dim)


def empty_past(input_names: tuple[str, ...], config: dict[str, Any], device: Any = "cpu", kv_dtype: Any = None,
               kv_shapes: dict[str, tuple[int, int]] | None = None, decoder: Any = None) -> dict[str, Any]:
    """Zero-length ``past_key_values.*`` tensors for a prefill: each input's (heads, head dim) from the graph
    (``kv_shapes``) where known, else from the config (`kv_cache_layout`); and the cache inputs that do not start
    empty where the ``decoder`` says them (`OrtRunner.state_shapes`), zeros of their shapes."""
    import torch

    kv_dtype = kv_dtype or torch.float32
    if kv_shapes:
        past = {name: torch.zeros((1, heads, 0, dim), dtype=kv_dtype, device=device)
                for name, (heads, dim) in kv_shapes.items()}
    else:
        layers, kv_heads, head_dim = kv_cache_layout(input_names, config)
        past = {f"past_key_values.{i}.{kind}": torch.zeros((1, kv_heads, 0, head_dim), dtype=kv_dtype, device=device)
                for i in range(layers) for kind in ("key", "value") if f"past_key_values.{i}.{kind}" in input_names}
    states = decoder.state_shapes(config) if hasattr(decoder, "state_shapes") else {}
    return past | {name: torch.zeros((1, *shape), dtype=kv_dtype, device=device) for name, shape in states.items()}


def kv_forward_logits(decoder: Runner, input_names: tuple[str, ...], config: dict[str, Any], token_ids: list[int],
                      device: Any = "cpu", kv_dtype: Any = None,
                      kv_shapes: dict[str, tuple[int, int]] | None = None) -> Any:
    """One forward pass over ``token_ids`` with an empty cache: every position's logits (numpy float32)."""
    import torch

    n = len(token_ids)
    feeds = {"input_ids": torch.tensor([list(token_ids)], dtype=torch.long, device=device),
             "attention_mask": torch.ones((1, n), dtype=torch.long, device=device),
             "position_ids": torch.arange(n, dtype=torch.long, device=device)[None],
             "use_cache_branch": torch.tensor([False], device=device),  # optimum 1.x's merged decoder
             **empty_past(input_names, config, device, kv_dtype, kv_shapes, decoder)}
    with torch.inference_mode():
        out = decoder(**{k: v for k, v in feeds.items() if k in input_names})
    return out["logits"][0].float().cpu().numpy()


def kv_greedy_generate(decoder: Runner, input_names: tuple[str, ...], config: dict[str, Any],
                       prompt_ids: list[int], settings: GenerationSettings, on_token: Callable[[int], None],
                       device: Any = "cpu", kv_dtype: Any = None,
                       kv_shapes: dict[str, tuple[int, int]] | None = None) -> list[int]:
    """Greedy decoding through a decoder graph with KV cache (``present.*`` fed back as ``past_*``).

    Prefill runs the whole prompt against an empty cache; each decode step runs one token. The stopping rules
    are those of `hf_generate`: ``max_new_tokens``, EOS unless ``ignore_eos``.
    """
    import torch

    past = empty_past(input_names, config, device, kv_dtype, kv_shapes, decoder)
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    seen, generated = 0, []
    eos = set(settings.eos_token_ids)
    with torch.inference_mode():
        while len(generated) < settings.max_new_tokens:
            total = seen + ids.shape[1]
            feeds = {"input_ids": ids, **past,
                     "attention_mask": torch.ones((1, total), dtype=torch.long, device=device),
                     "position_ids": torch.arange(seen, total, dtype=torch.long, device=device)[None],
                     "use_cache_branch": torch.tensor([seen > 0], device=device)}
            outputs = decoder(**{k: v for k, v in feeds.items() if k in input_names})
            token = int(outputs["logits"][0, -1].float().argmax())
            on_token(token)
            generated.append(token)
            if token in eos and not settings.ignore_eos:
                break
            past = {name: outputs[present_name(name)] for name in past}
            seen, ids = total, torch.tensor([[token]], dtype=torch.long, device=device)
    return generated


def kv_step_logits(decoder: Runner, input_names: tuple[str, ...], config: dict[str, Any], prompt_ids: list[int],
                   answer_ids: list[int], device: Any = "cpu", kv_dtype: Any = None,
                   kv_shapes: dict[str, tuple[int, int]] | None = None) -> Any:
    """The decoder graph's logits along its cached path (the loop of `kv_greedy_generate`, fed ``answer_ids``
    instead of its own picks): row k predicts ``answer_ids[k]`` (numpy float32)."""
    import torch

    past = empty_past(input_names, config, device, kv_dtype, kv_shapes, decoder)
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    seen, rows = 0, []
    with torch.inference_mode():
        for token in [*list(answer_ids)[:-1], None]:
            total = seen + ids.shape[1]
            feeds = {"input_ids": ids, **past,
                     "attention_mask": torch.ones((1, total), dtype=torch.long, device=device),
                     "position_ids": torch.arange(seen, total, dtype=torch.long, device=device)[None],
                     "use_cache_branch": torch.tensor([seen > 0], device=device)}
            outputs = decoder(**{k: v for k, v in feeds.items() if k in input_names})
            rows.append(outputs["logits"][0, -1].float().cpu())
            if token is None:
                break
            past = {name: outputs[present_name(name)] for name in past}
            seen, ids = total, torch.tensor([[int(token)]], dtype=torch.long, device=device)
    return torch.stack(rows).numpy()


def components_generate(text_encoder: Runner, unet: Runner, vae_decoder: Runner, tokenizer: Any, scheduler: Any,
                        vae_scaling: float, model: PreparedImage, settings: ImageSettings,
                        on_phase: Callable[[str], None], on_step: Callable[[int], None], device: Any = "cpu",
                        dtype: Any = None, vae_dtype: Any = None, nan_guard: bool = True) -> Any:
    """One image from bare text-encoder, UNet and VAE-decoder graphs with a diffusers scheduler.

    The arithmetic is StableDiffusionPipeline's (classifier-free guidance on a doubled batch, latents scaled by
    ``init_noise_sigma``, ``scale_model_input`` before each UNet call, VAE decode of latents / scaling factor), on
    the shared seeded latents. With ``nan_guard`` a NaN or Inf stops the run and says where it first appeared.
    """
    import numpy as np
    import torch

    dtype = dtype or torch.float32
    guidance = settings.guidance_scale > 1.0

    def encode(text: str) -> Any:
        ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(device=device, dtype=torch.int32)
        return text_encoder(input_ids=ids)["last_hidden_state"].to(dtype)

    def check(name: str, value: Any) -> None:
        if nan_guard and not torch.isfinite(value).all():
            raise FloatingPointError(f"NaN/Inf first appeared in {name}: an fp16 overflow? Try fp32, or keep "
                                     "the VAE in fp32.")

    with torch.inference_mode():
        on_phase("text_encoder")
        embeds = encode(settings.prompt)
        if guidance:
            embeds = torch.cat([encode(settings.negative_prompt or ""), embeds])
        check("the text encoder output", embeds)

        on_phase("unet")
        scheduler.set_timesteps(settings.steps, device=device)
        latents = torch.from_numpy(np.asarray(model.latents)).to(device=device, dtype=torch.float32)
        latents = latents * scheduler.init_noise_sigma
        for index, timestep in enumerate(scheduler.timesteps):
            sample = torch.cat([latents] * 2) if guidance else latents
            sample = scheduler.scale_model_input(sample, timestep)
            # optimum exports a scalar timestep; other exporters use one per batch row.
            rank = getattr(unet, "input_ranks", {}).get("timestep", 0)
            step_t = timestep.reshape(()) if rank == 0 else timestep.reshape(1).expand(sample.shape[0])
            step_t = step_t.to(device)
            noise = unet(sample=sample.to(dtype), timestep=step_t, encoder_hidden_states=embeds)["out_sample"]
            noise = noise.float()
            if guidance:
                uncond, cond = noise.chunk(2)
                noise = uncond + settings.guidance_scale * (cond - uncond)
            latents = scheduler.step(noise, timestep, latents).prev_sample
            check(f"the latents after step {index + 1}", latents)
            on_step(index)

        on_phase("vae")
        decoded = vae_decoder(latent_sample=(latents / vae_scaling).to(vae_dtype or dtype))["sample"].float()
        check("the VAE decoder output", decoded)
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        on_phase("done")
    image = ((decoded[0].permute(1, 2, 0).cpu().numpy() + 1) / 2).clip(0, 1)
    return (image * 255).round().astype(np.uint8)
