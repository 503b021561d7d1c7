"""A diffusers Stable Diffusion pipeline folder exported with ``torch.onnx.export(..., dynamo=True)`` (opset 18) into
the folder layout ``optimum-cli export onnx --task text-to-image`` writes, so everything that reads that layout (the
ONNX Runtime backend's pipeline, TensorRT's engine builds, the user's own optimum exports) reads this one too:

- ``model_index.json``, ``scheduler/``, ``tokenizer/`` (and ``feature_extractor/`` where there is one) copied;
- ``text_encoder/model.onnx``: ``input_ids`` (int64, batch x sequence) -> ``last_hidden_state``, ``pooler_output``;
- ``unet/model.onnx``: ``sample`` (batch x channels x height x width), ``timestep`` (a float32 scalar, as
  optimum's) and ``encoder_hidden_states`` -> ``out_sample``;
- ``vae_decoder/model.onnx``: ``latent_sample`` -> ``sample`` (``vae.decode``), with the VAE's ``config.json``;
- each component folder with its ``config.json``.

optimum also wrote ``vae_encoder/`` (``sample`` -> ``latent_parameters``); nothing in the arena encodes an image, so
it is left out (a sixth of the export's time on the embedded model); the pipeline reads one where a user's export
has it.

The graphs keep the modules' parameter names as initializer names (``embeddings.position_embedding.weight``,
``conv_in.weight``, ``decoder.conv_in.weight``), as optimum's did (transformers 5's CLIPTextModel has no
``text_model.`` level, which optimum's names under transformers 4 begin with); weights go to ``model.onnx_data``
beside each graph. fp16 is the CUDA path (``dtype="fp16"``, ``device="cuda"``): every module, the VAE included (as
optimum's fp16 export), is loaded in half precision on the GPU and exported there (the timestep stays a float32
scalar); TensorRT's "VAE in fp32" takes the fp32 export's VAE decoder.
"""

from __future__ import annotations

import json
import re
import shutil
import types
from pathlib import Path
from typing import Any

from backends.conversion.onnx_files import EXPORTER_KEY, ExportRefused, save_onnx, set_metadata

OPSET = 18
COPIED = ("scheduler", "tokenizer", "feature_extractor")
COMPONENTS = ("text_encoder", "unet", "vae_decoder")


def _first_line(exc: BaseException) -> str:
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:300]


def _export(module: Any, args: tuple, dynamic: dict, inputs: list[str], outputs: list[str], what: str) -> Any:
    """One module through the dynamo exporter; its ONNX model (a ModelProto). A failure is `ExportRefused`."""
    import torch

    try:
        program = torch.onnx.export(module, args, dynamic_shapes=dynamic, input_names=inputs, output_names=outputs,
                                    dynamo=True, opset_version=OPSET, external_data=True, verbose=False)
    except Exception as exc:  # noqa: BLE001 - the exporter's failure is the finding, said in one sentence
        raise ExportRefused(f"The torch.onnx (dynamo) exporter cannot export this pipeline's {what}: "
                            f"{type(exc).__name__}: {_first_line(exc)}") from exc
    return program.model_proto


def _name_dims(model: Any, names: dict[str, dict[int, str]]) -> None:
    """Readable names for the exporter's symbolic dimensions (``{input: {axis: name}}``), everywhere they occur."""
    renames: dict[str, str] = {}
    values = {v.name: v for v in model.graph.input}
    for input_name, axes in names.items():
        dims = values[input_name].type.tensor_type.shape.dim
        for axis, new in axes.items():
            if dims[axis].dim_param and dims[axis].dim_param not in renames:
                renames[dims[axis].dim_param] = new
    symbol = re.compile(r"\b(" + "|".join(map(re.escape, renames)) + r")\b") if renames else None
    for value in (*model.graph.input, *model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]
            elif symbol and dim.dim_param:  # an output's size as an expression of the inputs' ("4*latent_height")
                dim.dim_param = symbol.sub(lambda m: renames[m.group(1)], dim.dim_param)


def _method_module(module: Any, method: Any) -> Any:
    """``module`` whose forward is ``method`` bound to it (the parameters keep their names: no wrapper prefix)."""
    module.forward = types.MethodType(method, module)
    return module


def _encode_text(self: Any, input_ids: Any) -> tuple[Any, Any]:  # CLIPTextModel
    result = type(self).forward(self, input_ids=input_ids, return_dict=True)
    return result.last_hidden_state, result.pooler_output


def _denoise(self: Any, sample: Any, timestep: Any, encoder_hidden_states: Any) -> Any:  # UNet2DConditionModel
    return type(self).forward(self, sample, timestep, encoder_hidden_states, return_dict=False)[0]


def _decode_latents(self: Any, latent_sample: Any) -> Any:  # AutoencoderKL
    return type(self).decode(self, latent_sample, return_dict=False)[0]


def export_pipeline_components(model_dir: str, output_dir: str, dtype: str, device: str) -> dict[str, Any]:
    """Export the Stable Diffusion pipeline at ``model_dir`` to ``output_dir`` (optimum's text-to-image layout).
    Runs in an isolated process; returns facts for the cache entry (exporter, opset, components)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    source, out = Path(model_dir), Path(output_dir)
    index = json.loads((source / "model_index.json").read_text())
    kinds = {name: value[1] for name, value in index.items()
             if isinstance(value, list) and len(value) == 2 and value[1]}
    wanted = {"text_encoder": "CLIPTextModel", "unet": "UNet2DConditionModel", "vae": "AutoencoderKL"}
    odd = [f"{name} ({kinds.get(name, 'missing')})" for name, kind in wanted.items() if kinds.get(name) != kind]
    extra = sorted(set(kinds) & {"text_encoder_2", "text_encoder_3", "transformer", "image_encoder"})
    if odd or extra:
        raise ExportRefused("The torch.onnx (dynamo) exporter exports Stable Diffusion 1.x/2.x pipelines (a CLIP "
                            f"text encoder, a UNet2DConditionModel and an AutoencoderKL): {index.get('_class_name')}"
                            f" has {', '.join(odd + extra)}.")
    half = dtype == "fp16"
    torch_dtype = torch.float16 if half else torch.float32
    out.mkdir(parents=True, exist_ok=True)
    stamp = {EXPORTER_KEY: f"torch.onnx dynamo (torch {torch.__version__})"}
    auto = torch.export.Dim.AUTO
    written: dict[str, Any] = {}

    def finish(component: str, model: Any, config_from: str, dims: dict[str, dict[int, str]]) -> None:
        folder = out / component
        folder.mkdir(parents=True, exist_ok=True)
        _name_dims(model, dims)
        set_metadata(model, stamp)
        save_onnx(model, folder / "model.onnx")
        shutil.copyfile(source / config_from / "config.json", folder / "config.json")
        written[component] = {"inputs": [i.name for i in model.graph.input],
                              "outputs": [o.name for o in model.graph.output]}

    with torch.inference_mode(False), torch.no_grad():
        # Text encoder: ids padded to the tokenizer's length (the pipeline always pads) in a batch of two.
        text = CLIPTextModel.from_pretrained(source / "text_encoder", dtype=torch_dtype).to(device).eval()
        tokenizer_config = json.loads((source / "tokenizer" / "tokenizer_config.json").read_text()) \
            if (source / "tokenizer" / "tokenizer_config.json").is_file() else {}
        length = int(min(tokenizer_config.get("model_max_length") or 77, text.config.max_position_embeddings))
        ids = torch.randint(0, int(text.config.vocab_size), (2, length), device=device)
        proto = _export(_method_module(text, _encode_text), (ids,), {"input_ids": {0: auto, 1: auto}},
                        ["input_ids"], ["last_hidden_state", "pooler_output"], "text encoder (CLIPTextModel)")
        finish("text_encoder", proto, "text_encoder", {"input_ids": {0: "batch_size", 1: "sequence_length"}})
        del text, proto

        # UNet: a doubled batch (classifier-free guidance) at the config's size, one scalar float timestep.
        unet = UNet2DConditionModel.from_pretrained(source / "unet", dtype=torch_dtype).to(device).eval()
        config = unet.config
        extra_input = ("a guidance embedding (timestep_cond)" if config.time_cond_proj_dim is not None else
                       "class labels" if config.class_embed_type is not None or config.num_class_embeds is not None
                       else f"added conditions ({config.addition_embed_type})"
                       if config.addition_embed_type not in (None, "text") else None)
        if extra_input:  # "text" additions come from the text embeddings themselves: no extra input
            raise ExportRefused("The torch.onnx (dynamo) exporter exports a UNet conditioned on the timestep and "
                                f"the text only: this one also takes {extra_input}.")
        size = config.sample_size if isinstance(config.sample_size, int) else config.sample_size[0]
        cross = config.cross_attention_dim
        cross = int(cross[0] if isinstance(cross, list | tuple) else cross)
        sample = torch.randn(2, config.in_channels, size, size, dtype=torch_dtype, device=device)
        timestep = torch.tensor(999.0, dtype=torch.float32, device=device)
        states = torch.randn(2, length, cross, dtype=torch_dtype, device=device)
        proto = _export(_method_module(unet, _denoise), (sample, timestep, states),
                        {"sample": {0: auto, 2: auto, 3: auto}, "timestep": None,
                         "encoder_hidden_states": {0: auto, 1: auto}},
                        ["sample", "timestep", "encoder_hidden_states"], ["out_sample"], "UNet")
        finish("unet", proto, "unet", {"sample": {0: "batch_size", 2: "height", 3: "width"},
                                       "encoder_hidden_states": {1: "sequence_length"}})
        del unet, proto

        # VAE decoder (latents -> image). Its encoder is not exported: nothing here draws from an image, and it
        # would add a sixth of the export's time.
        vae = AutoencoderKL.from_pretrained(source / "vae", dtype=torch_dtype).to(device).eval()
        latents = torch.randn(1, vae.config.latent_channels, size, size, dtype=torch_dtype, device=device)
        proto = _export(_method_module(vae, _decode_latents), (latents,),
                        {"latent_sample": {0: auto, 2: auto, 3: auto}}, ["latent_sample"], ["sample"], "VAE decoder")
        finish("vae_decoder", proto, "vae", {"latent_sample": {0: "batch_size", 2: "latent_height",
                                                               3: "latent_width"}})
        del vae, proto

    for name in COPIED:
        if (source / name).is_dir():
            shutil.copytree(source / name, out / name, dirs_exist_ok=True)
    shutil.copyfile(source / "model_index.json", out / "model_index.json")
    return {"exporter": "dynamo", "opset": OPSET, "components": written,
            "architecture": f"{index.get('_class_name', 'StableDiffusionPipeline')} (stable-diffusion)"}
