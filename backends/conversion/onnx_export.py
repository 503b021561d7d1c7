"""The cached ONNX export: a conversion step used by the ONNX Runtime and TensorRT backends alike (its
quantizations are in `backends.conversion.onnx_quantize`). The heavy work runs in an isolated process
(``ctx.run_isolated``); the results are cache entries built in a temporary folder and renamed into place.

Two exporters, one visible option of the ONNX Runtime backend (``exporter``):

- ``dynamo`` (default): ``torch.onnx.export(..., dynamo=True)``, the default exporter since torch 2.9, maintained
  with torch itself. A causal LM is wrapped so that its cache is flat tensors: the graph takes ``input_ids``,
  ``attention_mask``, ``position_ids`` and ``past_key_values.{i}.key/value`` and returns ``logits`` and
  ``present.{i}.key/value``, the layout optimum-cli writes (``text-generation-with-past``), so one loop
  (`backends.loops`) runs both, and the user's thousands of optimum exports keep working. Pipelines export their
  text encoder, UNet and VAE decoder into optimum's ``text-to-image`` folder layout
  (`backends.conversion.onnx_pipeline_export`).
- ``genai-builder``: ONNX Runtime GenAI's model builder (``backends.conversion.genai_build``) at fp32, run by ONNX
  Runtime through the same loop: its graph has the same input and output names. The builder fuses attention
  (GroupQueryAttention) and norms, so a wrong fusion shows beside the dynamo export of the same model.

The exporter is part of the cache key with the versions that change what it writes. There is no validation run at
export time: the arena's judge compares every export with the reference on the real prompt, far more strictly.
An architecture the exporter cannot take ends in `ExportRefused`: one sentence naming the architecture and the
exporter."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
from pathlib import Path
from typing import Any

from backends.contract import ArenaError, LoadContext
from backends.conversion.onnx_files import EXPORTER_KEY, SCOPE_PREFIX_KEY, ExportRefused, save_onnx, set_metadata
from backends.installs import ONNX_EXPORTER_INSTALL, dist_versions

TEXT_TASK = "text-generation-with-past"
IMAGE_TASK = "text-to-image"
EXPORTERS = ("dynamo", "genai-builder")
EXPORTER_TITLES = {"dynamo": "torch.onnx (dynamo)", "genai-builder": "ONNX Runtime GenAI model builder"}
# The model's own files an export folder carries (as optimum's did): config, generation config, tokenizer, template.
CARRIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
           "special_tokens_map.json", "chat_template.jinja", "chat_template.json", "tokenizer.model", "vocab.json",
           "merges.txt", "added_tokens.json", "spiece.model")
WRAPPED = "inner"  # the wrapper's attribute holding the model: node scopes read "inner.model.layers.0.mlp"


def _architecture(config: Any) -> str:
    return (getattr(config, "architectures", None) or [type(config).__name__])[0] + \
        f" ({getattr(config, 'model_type', '?')})"


def _kv_cache_layers(cache: Any, architecture: str) -> list[Any]:
    """The layers of a transformers cache, if each holds plain keys and values (a KV cache); else refused."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise ExportRefused(f"The torch.onnx (dynamo) exporter cannot export {architecture}: its cache "
                            f"({type(cache).__name__}) is not a layered key/value cache.")
    for layer in layers:
        if not (hasattr(layer, "keys") and hasattr(layer, "values")) or getattr(layer, "keys", None) is None:
            raise ExportRefused(
                f"The torch.onnx (dynamo) exporter cannot export {architecture}: its cache holds "
                f"{type(layer).__name__} states (linear attention, convolution or recurrent layers), which the "
                "past_key_values/present layout of a KV-cache export has no place for. Try the GenAI model "
                "builder as the exporter, or the PyTorch backend.")
    return list(layers)


def export_text_model(model_dir: str, output_dir: str, dtype: str, device: str) -> dict[str, Any]:
    """Export a causal LM with KV cache to ``output_dir`` with torch.onnx's dynamo exporter (runs in an isolated
    process). Returns facts for the cache entry (exporter, opset, layers)."""
    import torch
    from transformers import AutoConfig, DynamicCache

    from backends.hf import load_causal_lm

    torch_dtype = torch.float16 if dtype == "fp16" else torch.float32
    config = AutoConfig.from_pretrained(model_dir)
    architecture = _architecture(config)
    try:
        # Attention: transformers' pick (SDPA where the model has it, else eager: gpt-oss's sinks). Experts: batched_mm,
        # the one implementation torch.export traces to plain ops (grouped_mm is a custom op with no ONNX translation
        # on the CPU, eager's loop over the experts hit is data-dependent).
        model = load_causal_lm(model_dir, dtype=torch_dtype, experts_implementation="batched_mm")
    except (ValueError, KeyError) as exc:
        raise ExportRefused(f"The torch.onnx (dynamo) exporter cannot load {architecture} as a causal LM: "
                            f"{str(exc).splitlines()[0][:300]}") from exc
    model = model.to(device).eval()
    text = model.config.get_text_config()

    # One probe forward: the cache the model builds says whether it is a plain KV cache and its shapes per layer.
    probe_ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    try:
        with torch.inference_mode():
            probe = model(input_ids=probe_ids, use_cache=True)
    except (MemoryError, OSError):
        raise  # the machine's limits, said by the worker's own sentences
    except Exception as exc:  # noqa: BLE001 - a forward that needs more than token ids (a multimodal class)
        raise ExportRefused(f"The torch.onnx (dynamo) exporter cannot run {architecture} on token ids alone: "
                            f"{_cause(exc)[:300]}") from exc
    layers = _kv_cache_layers(getattr(probe, "cache", None) or getattr(probe, "past_key_values", None),
                              architecture)
    shapes = [(tuple(layer.keys.shape[1:2] + layer.keys.shape[3:]), tuple(layer.values.shape[1:2]
                                                                           + layer.values.shape[3:]))
              for layer in layers]
    count = len(layers)

    class Wrapper(torch.nn.Module):
        """Flat tensors in and out around the model's DynamicCache."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            setattr(self, WRAPPED, inner)

        def forward(self, input_ids, attention_mask, position_ids, past):  # noqa: ANN001 - traced
            cache = DynamicCache()
            for index in range(count):
                cache.update(past[2 * index], past[2 * index + 1], index)
            out = getattr(self, WRAPPED)(input_ids=input_ids, attention_mask=attention_mask,
                                         position_ids=position_ids, cache=cache, use_cache=True)
            present = []
            for layer in out.cache.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    batch, seq, past_len = 2, 3, 4
    past = []
    for (k_heads, k_dim), (v_heads, v_dim) in shapes:
        past += [torch.randn(batch, k_heads, past_len, k_dim, dtype=torch_dtype, device=device),
                 torch.randn(batch, v_heads, past_len, v_dim, dtype=torch_dtype, device=device)]
    ids = torch.randint(0, int(text.vocab_size), (batch, seq), device=device)
    mask = torch.ones((batch, past_len + seq), dtype=torch.long, device=device)
    positions = torch.arange(past_len, past_len + seq, device=device)[None].expand(batch, seq)
    auto = torch.export.Dim.AUTO
    dynamic = {"input_ids": {0: auto, 1: auto}, "attention_mask": {0: auto, 1: auto},
               "position_ids": {0: auto, 1: auto}, "past": [{0: auto, 2: auto}] * (2 * count)}
    names = [f"{kind}.{i}.{part}" for i in range(count) for part in ("key", "value") for kind in ("past_key_values",)]
    inputs = ["input_ids", "attention_mask", "position_ids", *names]
    outputs = ["logits", *(n.replace("past_key_values", "present") for n in names)]
    try:
        program = torch.onnx.export(Wrapper(model).eval(), (ids, mask, positions, past), dynamic_shapes=dynamic,
                                    input_names=inputs, output_names=outputs, dynamo=True, opset_version=18,
                                    external_data=True, verbose=False)
    except (MemoryError, OSError):
        raise  # the machine's limits (memory, disk), said by the worker's own sentences, not "cannot export"
    except Exception as exc:  # noqa: BLE001 - the exporter's failure is the finding, said in one sentence
        raise ExportRefused(f"The torch.onnx (dynamo) exporter cannot export {architecture}: "
                            f"{_cause(exc)[:300]}") from exc
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_model = program.model_proto
    _name_dims(onnx_model)
    set_metadata(onnx_model, {EXPORTER_KEY: f"torch.onnx dynamo (torch {torch.__version__})",
                               SCOPE_PREFIX_KEY: WRAPPED + "."})
    save_onnx(onnx_model, out / "model.onnx")
    _carry_files(Path(model_dir), out)
    return {"exporter": "dynamo", "layers": count, "opset": 18, "architecture": architecture}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SUMMARY = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>: (.+)$", re.MULTILINE)


def _cause(exc: BaseException) -> str:
    """"Kind: message" of an exporter's failure: the root cause torch.onnx's report puts first in its "Exception
    summary" (its own first line says only which step failed), else the exception's first line; no terminal
    colours."""
    text = _ANSI.sub("", str(exc))
    root = _SUMMARY.search(text)
    if root:
        return f"{root.group(1)}: {root.group(2).strip()}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _name_dims(model: Any) -> None:
    """Readable names for the exporter's symbolic dimensions (batch_size, sequence_length, past/total length)."""
    inputs = {i.name: i for i in model.graph.input}
    renames: dict[str, str] = {}

    def name(value: Any, axis: int, new: str) -> None:
        dim = value.type.tensor_type.shape.dim[axis]
        if dim.dim_param and dim.dim_param not in renames:
            renames[dim.dim_param] = new

    if "input_ids" in inputs:
        name(inputs["input_ids"], 0, "batch_size")
        name(inputs["input_ids"], 1, "sequence_length")
    if "attention_mask" in inputs:
        name(inputs["attention_mask"], 1, "total_sequence_length")
    for value in model.graph.input:
        if value.name.startswith("past_key_values."):
            name(value, 2, "past_sequence_length")
    for value in (*model.graph.input, *model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]


def _carry_files(source: Path, target: Path) -> None:
    for name in CARRIED:
        if (source / name).is_file() and not (target / name).exists():
            shutil.copyfile(source / name, target / name)


def export_pipeline(model_dir: str, output_dir: str, dtype: str, device: str) -> dict[str, Any]:
    """Export a Stable Diffusion pipeline (text encoder, UNet, VAE decoder) to ``output_dir``."""
    from backends.conversion.onnx_pipeline_export import export_pipeline_components

    return export_pipeline_components(model_dir, output_dir, dtype, device)


def build_with_genai_builder(model_dir: str, output_dir: str) -> dict[str, Any]:
    """The GenAI model builder's fp32 CPU build as an ONNX export (runs in an isolated process)."""
    from transformers import AutoConfig

    from backends.conversion.genai_build import build_genai_model

    architecture = _architecture(AutoConfig.from_pretrained(model_dir))
    try:
        build_genai_model(model_dir, output_dir, {"precision": "fp32", "execution_provider": "cpu"})
    except NotImplementedError as exc:
        raise ExportRefused(f"The ONNX Runtime GenAI model builder cannot export {architecture}: "
                            f"{str(exc).splitlines()[0][:300] if str(exc) else 'unsupported architecture'}") from exc
    except (MemoryError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - the builder's failure is the finding, said in one sentence
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ExportRefused(f"The ONNX Runtime GenAI model builder cannot export {architecture}: "
                            f"{type(exc).__name__}: {first[:300]}") from exc
    _carry_files(Path(model_dir), Path(output_dir))
    return {"exporter": "genai-builder", "architecture": architecture}


def onnx_exporter_facts() -> dict[str, Any]:
    """Whether torch.onnx's dynamo exporter can run here: it translates with onnxscript (not a torch dependency)."""
    try:
        return {"installed": True, "onnxscript": importlib.metadata.version("onnxscript"),
                "torch": importlib.metadata.version("torch")}
    except importlib.metadata.PackageNotFoundError as exc:
        return {"installed": False, "missing": str(exc.name or exc), "install": ONNX_EXPORTER_INSTALL}


def export_versions(exporter: str = "dynamo") -> dict[str, str | None]:
    if exporter != "dynamo":
        from backends.conversion.genai_build import genai_versions

        return genai_versions()
    return dist_versions("transformers", "torch", "onnxscript", "onnx", "onnx-ir", "diffusers")


def exporter_of(folder: str | Path) -> str | None:
    """Who wrote an export folder's model.onnx (the arena's metadata, GenAI's config, or optimum's habits)."""
    root = Path(folder)
    if (root / "genai_config.json").is_file():
        return EXPORTER_TITLES["genai-builder"]
    try:
        import onnx

        model = onnx.load(str(root / "model.onnx"), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable: unknown
        return None
    props = {p.key: p.value for p in model.metadata_props}
    return props.get(EXPORTER_KEY) or model.producer_name or None


def cached_export(model: Any, dtype: str, ctx: LoadContext, exporter: str = "dynamo") -> tuple[Path, bool]:
    """The cached ONNX export of a prepared model at ``dtype`` ("fp32" on CPU, "fp16" on CUDA) by ``exporter``,
    built in an isolated process on a miss; returns ``(folder, built_now)``. Shared by ONNX Runtime and TensorRT."""
    image = model.task == "image"
    if exporter not in EXPORTERS:
        raise ArenaError(f"Unknown ONNX exporter '{exporter}': pick one of {', '.join(EXPORTERS)}.")
    if exporter == "genai-builder" and (image or dtype != "fp32"):
        raise ArenaError("The ONNX Runtime GenAI model builder exports language models at fp32 here (its fp16 "
                         "build is a CUDA one): pick the torch.onnx (dynamo) exporter.")
    task = IMAGE_TASK if image else TEXT_TASK
    fields = {"model": model.fingerprint, "task": task, "dtype": dtype, "exporter": exporter,
              "versions": export_versions(exporter)}
    device = "cuda" if dtype == "fp16" else "cpu"
    title = EXPORTER_TITLES[exporter]
    if exporter == "genai-builder":
        call = (f"{__name__}:build_with_genai_builder", model.model_dir)
    else:
        call = (f"{__name__}:{'export_pipeline' if image else 'export_text_model'}", model.model_dir, None, dtype,
                device)

    def build(tmp: Path) -> dict[str, Any]:
        args = [str(tmp) if a is None else a for a in call[1:]]
        if exporter == "genai-builder":
            args.append(str(tmp))
        facts = ctx.run_isolated(call[0], *args, description=f"ONNX export ({title})") or {}
        return {"source": model.model_dir, "model_name": model.model_name, **facts}

    with ctx.stage("export", f"Exporting {model.model_name} to ONNX with {title} ({dtype}; once, then cached)"):
        return ctx.cache.get_or_build(f"onnx-{exporter}" if exporter != "dynamo" else "onnx", fields, build)

