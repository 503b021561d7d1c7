"""What the arena's ONNX exporters share (`onnx_export` for language models, `onnx_pipeline_export` for
diffusion pipelines): the refusal sentence, the metadata keys written into every graph, and how a graph is saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.contract import ArenaError

# The ONNX model's metadata: which exporter wrote it, and the wrapper's prefix in the nodes' module scopes.
EXPORTER_KEY = "arena.exporter"
SCOPE_PREFIX_KEY = "arena.module_prefix"


class ExportRefused(ArenaError):
    """The exporter cannot take this architecture (one sentence naming both)."""


def set_metadata(model: Any, entries: dict[str, str]) -> None:
    for key, value in entries.items():
        item = model.metadata_props.add()
        item.key, item.value = key, value


def save_onnx(model: Any, path: Path) -> None:
    import onnx

    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + "_data", size_threshold=1024)
    data = path.with_name(path.name + "_data")
    if data.exists():
        data.chmod(0o644)  # onnx writes it 0600; a cache entry is read by every worker of the server's user
