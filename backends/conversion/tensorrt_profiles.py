"""Optimization profiles: the (min, opt, max) shape of every dynamic input an engine is built for. Pure Python;
used by the native TensorRT backend and by ONNX Runtime's TensorRT provider (`to_ort_trt_options`)."""

from __future__ import annotations

from typing import Any

from backends.contract import ArenaError

Shape = tuple[int, ...]
Profiles = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)


def llm_profiles(config: dict[str, Any], max_total_tokens: int, opt_prompt_tokens: int = 64,
                 input_names: tuple[str, ...] | None = None) -> Profiles:
    """One profile for a KV-cache decoder covering prefill (the whole prompt, empty cache) and every decode step.

    Every dynamic input gets a range, past_key_values included; without them an engine (or the ONNX Runtime
    TensorRT provider) is rebuilt whenever a shape changes.
    """
    from backends.loops import kv_cache_layout

    layers = config.get("num_hidden_layers") or config.get("n_layer")
    if not layers or not (config.get("num_attention_heads") or config.get("n_head")):
        raise ArenaError("The model config lacks num_hidden_layers/num_attention_heads: cannot build TensorRT "
                         "profiles for it.")
    names = input_names or tuple(f"past_key_values.{i}.{k}" for i in range(int(layers)) for k in ("key", "value"))
    _, kv_heads, head_dim = kv_cache_layout(names, config)
    last = max(2, int(max_total_tokens))
    opt = max(1, min(opt_prompt_tokens, last - 1))
    profiles: Profiles = {}
    for name in ("input_ids", "position_ids"):
        profiles[name] = ((1, 1), (1, opt), (1, last))
    profiles["attention_mask"] = ((1, 1), (1, opt), (1, last))
    for layer in range(int(layers)):
        for kind in ("key", "value"):
            profiles[f"past_key_values.{layer}.{kind}"] = ((1, kv_heads, 0, head_dim), (1, kv_heads, opt, head_dim),
                                                           (1, kv_heads, last - 1, head_dim))
    if input_names is not None:
        profiles = {k: v for k, v in profiles.items() if k in input_names}
    return profiles


def image_profiles(component: str, configs: dict[str, dict[str, Any]], height: int, width: int,
                   max_length: int) -> Profiles:
    """Static shapes for one diffusion component at one image size (batch 1 or 2 for classifier-free guidance).

    The engine is built for the size of the run (fastest kernels) and cached per size.
    """
    vae = configs["vae"]
    factor = 2 ** (len(vae.get("block_out_channels", (0, 0, 0, 0))) - 1)
    if height % factor or width % factor:
        raise ArenaError(f"height and width have to be divisible by {factor} but are {height} and {width}.")
    lh, lw = height // factor, width // factor
    if component == "text_encoder":
        return {"input_ids": ((1, max_length), (1, max_length), (1, max_length))}
    if component == "unet":
        unet = configs["unet"]
        c, hidden = unet.get("in_channels", 4), unet.get("cross_attention_dim", 768)
        hidden = hidden[0] if isinstance(hidden, list | tuple) else hidden
        return {"sample": ((1, c, lh, lw), (2, c, lh, lw), (2, c, lh, lw)),
                "timestep": ((1,), (2,), (2,)),
                "encoder_hidden_states": ((1, max_length, hidden), (2, max_length, hidden), (2, max_length, hidden))}
    if component == "vae_decoder":
        c = vae.get("latent_channels", 4)
        return {"latent_sample": ((1, c, lh, lw), (1, c, lh, lw), (1, c, lh, lw))}
    raise ArenaError(f"Unknown diffusion component {component!r}.")


def to_ort_trt_options(profiles: Profiles) -> dict[str, str]:
    """The same profiles as ONNX Runtime's TensorRT provider options (``name:1x64,...``)."""
    def fmt(index: int) -> str:
        return ",".join(f"{name}:{'x'.join(map(str, shapes[index]))}" for name, shapes in profiles.items())

    return {"trt_profile_min_shapes": fmt(0), "trt_profile_opt_shapes": fmt(1), "trt_profile_max_shapes": fmt(2)}


def check_profile_covers(required: dict[str, Shape], engine_profiles: Profiles) -> list[str]:
    """Why an engine cannot take these input shapes (empty when every input fits its profile range)."""
    problems = []
    for name, shape in required.items():
        if name not in engine_profiles:
            problems.append(f"the engine has no input '{name}'")
            continue
        low, _, high = engine_profiles[name]
        if len(low) != len(shape) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high, strict=True)):
            problems.append(f"'{name}' {tuple(shape)} is outside the engine's profile {tuple(low)}..{tuple(high)}")
    return problems
