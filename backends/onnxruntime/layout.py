"""Where the graphs are in an ONNX export folder: optimum-cli's layouts (a causal LM, a text-to-image pipeline)
and the one diffusers' conversion script writes."""

from __future__ import annotations

import json
from pathlib import Path

from backends.contract import ArenaError

ONNX_LAYOUT_FILES = ("model.onnx", "decoder_model_merged.onnx", "decoder_with_past_model.onnx", "decoder_model.onnx")


def find_pipeline_export(directory: str | Path) -> Path:
    """The UNet of a pipeline export directory: optimum's `text-to-image` layout or the one diffusers'
    `convert_stable_diffusion_checkpoint_to_onnx.py` writes (text_encoder/, unet/, vae_decoder/, model_index.json)."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ArenaError(f"The ONNX export directory '{directory}' does not exist.")
    missing = [f"{part}/model.onnx" for part in ("text_encoder", "unet", "vae_decoder")
               if not (root / part / "model.onnx").is_file()]
    if not (root / "model_index.json").is_file():
        missing.append("model_index.json")
    if missing:
        raise ArenaError(f"'{directory}' is not a Stable Diffusion ONNX export: missing {', '.join(missing)} "
                         "(expected the layout `optimum-cli export onnx --task text-to-image` or diffusers' "
                         "convert_stable_diffusion_checkpoint_to_onnx.py writes).")
    return root / "unet" / "model.onnx"


def pipeline_layout(root: str | Path) -> str:
    """"diffusers" for an export by diffusers' conversion script (an OnnxStableDiffusionPipeline), else "optimum"."""
    index = json.loads((Path(root) / "model_index.json").read_text())
    return "diffusers" if str(index.get("_class_name", "")).startswith("Onnx") else "optimum"


def find_onnx_model(directory: str | Path) -> Path:
    """The decoder file of an export directory (optimum-cli's layout, or the legacy merged/with-past one)."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ArenaError(f"The ONNX export directory '{directory}' does not exist.")
    for name in ONNX_LAYOUT_FILES:
        if (root / name).is_file():
            return root / name
    found = sorted(p.name for p in root.glob("*.onnx"))
    raise ArenaError(
        f"'{directory}' has no {ONNX_LAYOUT_FILES[0]}"
        + (f" (found {', '.join(found)})" if found else "")
        + ": expected the layout `optimum-cli export onnx --task text-generation-with-past` writes.")

