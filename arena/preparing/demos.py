""""See a broken conversion": exports of the default models broken on purpose by the server, so a first visitor
sees a broken verdict caught next to a MATCH within seconds.

- Text: the default model's ONNX export with noise in its attention and MLP weight matrices (what a conversion
  that mangles weights does): ONNX Runtime answers GIBBERISH next to PyTorch's MATCH.
- Image: the default pipeline's export with its VAE decoder's convolution kernels scaled up until fp32 overflows
  (what an fp16 VAE without upcast does to a real model): the pipeline's NaN guard catches it, NAN.

Each broken export is made once from the cached good export, in an isolated process (onnx never loads in the UI
process), and cached under its own kind (`ArtifactCache.get_or_build`). The folders are the server's own, so the
policy trusts exactly them (`Policy.trust_path`): the demo runs through the same gated core as any visitor run,
and a visitor still cannot pass any path of their own.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from arena.errors import ArenaError
from arena.preparing.catalog import (
    DEFAULT_IMAGE_MODEL,
    DEFAULT_TEXT_MODEL,
    EXAMPLE_PROMPTS,
    IMAGE_CATALOG,
    IMAGE_EXAMPLE_PROMPTS,
)
from arena.registry import DEMO_EXPORT_BACKEND, default_reference
from arena.tasks import task_of
from arena.types import BackendSpec, ImageRunRequest, TextRunRequest

DEMO_TEXT_KIND = "demo-broken-text"
DEMO_IMAGE_KIND = "demo-broken-image"
DEMO_VERSION = 1  # bump when the damage changes: a new cache entry
TEXT_DEMO_TOKENS = 24
EXAMPLES_KEPT = 8  # example results kept (four examples, a few request variants each)
TEXT_DAMAGE = "noise in every attention and MLP weight matrix (1.5 standard deviations)"
IMAGE_DAMAGE = "VAE decoder convolutions scaled by 1e30: fp32 overflows, as an fp16 VAE without upcast does"
# Each task's broken example: {task: (its cache kind, the function that damages the good export, the damage, the
# request fields that make its export with the shortest run)}.
BROKEN = {"text": (DEMO_TEXT_KIND, "arena.preparing.demos:damage_text_export", TEXT_DAMAGE,
                   {"max_new_tokens": 1, "warmup": 0}),
          "image": (DEMO_IMAGE_KIND, "arena.preparing.demos:damage_image_export", IMAGE_DAMAGE, {"steps": 1})}


def damage_text_export(good: str, target: str) -> None:
    """Copy the export at ``good`` into ``target`` with noisy attention/MLP matrices (runs in an isolated
    process)."""
    import re

    import numpy as np
    import onnx
    from onnx import numpy_helper

    from backends.conversion.onnx_layers import SCOPE_PREFIX_KEY, node_module

    good_dir, target_dir = Path(good), Path(target)
    for item in good_dir.iterdir():
        if item.is_file() and item.suffix not in (".onnx", ".onnx_data") and item.name != "manifest.json":
            shutil.copy2(item, target_dir / item.name)
    model = onnx.load(str(good_dir / "model.onnx"))
    rng = np.random.default_rng(0)
    # The decoder layers' matrices: weights a MatMul reads inside a layer's module (the dynamo exporter's module
    # scopes, or the node names of other exporters); the embedding and the output projection stay as they were.
    prefix = {p.key: p.value for p in model.metadata_props}.get(SCOPE_PREFIX_KEY, "")
    in_layers = {node.input[1] for node in model.graph.node if node.op_type in ("MatMul", "Gemm")
                 and len(node.input) > 1 and re.search(r"(^|\.)layers\.\d+(\.|$)", node_module(node, prefix))}
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.ndim == 2 and array.dtype == np.float32 and init.name in in_layers:
            noisy = array + rng.standard_normal(array.shape).astype(np.float32) * array.std() * 1.5
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(target_dir / "model.onnx"))


def damage_image_export(good: str, target: str) -> None:
    """Copy the pipeline export at ``good`` into ``target`` with an overflowing VAE decoder (isolated process)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    good_dir, target_dir = Path(good), Path(target)
    shutil.copytree(good_dir, target_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("manifest.json"))
    path = next(p for p in (target_dir / "vae_decoder" / "model.onnx", target_dir / "vae" / "model.onnx")
                if p.is_file())
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.ndim == 4 and array.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(array * np.float32(1e30), init.name))
    for data in path.parent.glob("*.onnx_data"):
        data.unlink()
    onnx.save(model, str(path))


class BrokenConversions:
    """Makes (once) and registers the broken exports; builds the demo requests; keeps their last judged results.
    Drives the `Arena` through its public methods."""

    def __init__(self, arena):
        self.arena = arena
        self._lock = threading.Lock()
        self._kept: dict[str, Any] = {}  # the examples' last judged results (`run_example`)
        self._kept_lock = threading.Lock()

    def _good_export(self, task: str, progress) -> Path:
        """The cached good export of the default model (made by an operator run of the export backend,
        `DEMO_EXPORT_BACKEND`, if missing)."""
        # The example's own request, as short as it goes (the export is what is wanted), by the export backend.
        request = dataclasses.replace(task_of(task).step(self, "{}_request")(broken=False),
                                      backends=(BackendSpec(DEMO_EXPORT_BACKEND),), **BROKEN[task][3])
        result = task_of(task).step(self.arena, "run_{}_to_end")(request, progress, operator=True)
        found = result.results[0] if result.results else None
        if result.error or found is None or found.error or not (found.load and found.load.artifact_dir):
            raise ArenaError(f"The default model's export could not be made: {result.error or found.error}")
        return Path(found.load.artifact_dir)

    def broken_export(self, task: str, progress=lambda *_: None) -> Path:
        """The broken export's folder (built on first use, cached after), trusted by the policy."""
        from arena.running.workers import run_isolated

        kind, target, damage, _shortest = BROKEN[task]
        with self._lock:
            good = self._good_export(task, progress)

            def build(tmp: Path):
                # On the cores in turn like a run's step (a damage beside a timed run would skew its timings);
                # made by the start-up preparation, it gives way to a visitor's run (`arena.running.runlock.RunLock`).
                with self.arena.exclusive():
                    run_isolated(target, str(good), str(tmp), description="Breaking the default export on purpose",
                                 progress=progress, log_path=self.arena.log_dir / f"{kind}.log", timeout=1800)
                return {"damage": damage}

            (self.arena.log_dir).mkdir(parents=True, exist_ok=True)
            path, _built = self.arena.cache.get_or_build(kind, {"version": DEMO_VERSION, "good": good.name}, build)
            self.arena.policy.trust_path(str(path))
            return path

    def _candidate(self, task: str, broken: bool, progress) -> BackendSpec:
        """The export backend on the broken export (its folder as the "onnx_dir" option), or on its own good one."""
        if not broken:
            return BackendSpec(DEMO_EXPORT_BACKEND)
        return BackendSpec(DEMO_EXPORT_BACKEND, onnx_dir=str(self.broken_export(task, progress)))

    def text_request(self, broken: bool = True, progress=lambda *_: None) -> TextRunRequest:
        """The reference (PyTorch fp32) next to the export backend on the broken export (or on the good one)."""
        return TextRunRequest(model=DEFAULT_TEXT_MODEL, prompt=EXAMPLE_PROMPTS[0], max_new_tokens=TEXT_DEMO_TOKENS,
                              warmup=0, backends=(BackendSpec(default_reference()),
                                                  self._candidate("text", broken, progress)))

    def image_request(self, broken: bool = True, progress=lambda *_: None) -> ImageRunRequest:
        entry = IMAGE_CATALOG[0]
        return ImageRunRequest(model=DEFAULT_IMAGE_MODEL, prompt=IMAGE_EXAMPLE_PROMPTS[0], steps=entry.steps,
                               guidance_scale=entry.guidance_scale, seed=0,
                               backends=(BackendSpec(default_reference()),
                                         self._candidate("image", broken, progress)))

    def run_example(self, request, progress=lambda *_: None, cancel: threading.Event | None = None) -> Iterator:
        """An example's run (the server's own request): its last judged result from this server at once when there
        is one (``kept_at`` says when it ran; its inputs and models are fixed, so its verdicts are too), else run
        live and kept for the next visitor. Run it live: `Arena.run_text` / `Arena.run_image`."""
        key = json.dumps(request.to_dict(), sort_keys=True, default=str)
        with self._kept_lock:
            kept = self._kept.get(key)
        if kept is not None:
            yield kept
            return
        final = None
        run = task_of(request).step(self.arena, "run_{}")
        for final in run(request, progress, cancel):
            yield final
        if final is not None and not final.error and not final.phase and final.results \
                and all(r.verdict is not None for r in final.results):
            with self._kept_lock:
                self._kept[key] = dataclasses.replace(final, kept_at=time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                   time.gmtime()))
                while len(self._kept) > EXAMPLES_KEPT:
                    self._kept.pop(next(iter(self._kept)))
