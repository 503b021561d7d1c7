"""The ONNX Runtime GenAI backend: a model built by onnxruntime-genai's model builder from the prepared folder (cached,
`backends.conversion.genai_build`) or a user's GenAI model folder, generated with the library's own loop.

- Same input: the prepared token ids go straight into ``Generator.append_tokens`` (the built folder carries the
  reference's own tokenizer, so ids mean the same); GenAI's tokenizer is never used.
- Same rules: greedy search (``do_sample=False``) with every search option that could change the answer set
  explicitly (a model folder's generation_config.json ends up in genai_config.json's search section: repetition
  penalties, top-k), the reference's EOS ids overlaid on the model's, and ``min_length`` = ``max_length`` when EOS is
  ignored (GenAI masks EOS until then, as transformers' ``min_new_tokens`` does).
- Logits: ``Generator.get_output("logits")`` after appending the whole sequence to a fresh generator is the prefill's
  output, every position (models built with ``prune_lm_head`` return only the last one: then this backend says it
  cannot give logits, and the verdicts say so).
- Threads: the CPU budget (``intra_op_num_threads`` overlaid on the folder's session options).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from backends.contract import AVAILABLE, ArenaError, Availability, Backend, LoadContext
from backends.conversion.genai_build import QUANTIZED, GenAIBuildSettings, cached_genai_model
from backends.onnxruntime_genai.options import GENAI_INSTALL, OnnxRuntimeGenAIOptions
from backends.onnxruntime_genai.precision import decoder_path, graph_precision

NO_IMAGES = "ONNX Runtime GenAI runs language models only here: it has no diffusion pipeline."
DISTRIBUTIONS = ("onnxruntime-genai", "onnxruntime-genai-cuda")  # both install `import onnxruntime_genai`


def genai_facts() -> dict[str, Any]:
    """Installed or not, and which distribution and version, without loading the native library."""
    from importlib.metadata import PackageNotFoundError, version

    if importlib.util.find_spec("onnxruntime_genai") is None:
        return {"installed": False}
    for dist in DISTRIBUTIONS:
        try:
            return {"installed": True, "distribution": dist, "version": version(dist)}
        except PackageNotFoundError:
            continue
    return {"installed": True}


def find_genai_folder(given: str) -> Path:
    """The folder of a user's GenAI model (the folder itself, or its genai_config.json), checked to be one."""
    path = Path(given).expanduser()
    if path.is_file() and path.name == "genai_config.json":
        path = path.parent
    if not path.is_dir():
        raise ArenaError(f"The GenAI model folder '{given}' does not exist: give the folder the model builder wrote "
                         "(genai_config.json and model.onnx).")
    if not (path / "genai_config.json").is_file():
        found = sorted(p.parent for p in path.glob("*/genai_config.json"))
        hint = f" It has one in: {', '.join(str(p) for p in found[:3])}." if found else ""
        raise ArenaError(f"'{given}' has no genai_config.json: it is not a GenAI model folder (python -m "
                         f"onnxruntime_genai.models.builder writes one).{hint}")
    try:
        decoder = decoder_path(path)
    except (KeyError, ValueError) as exc:
        raise ArenaError(f"{path / 'genai_config.json'} names no decoder model ({exc}).") from exc
    if not decoder.is_file():
        raise ArenaError(f"{path / 'genai_config.json'} names {decoder.name}, which is not in {path}.")
    return path.resolve()


class OnnxRuntimeGenAIBackend(Backend):
    """onnxruntime-genai's `Model` and `Generator` on the CPU: its own KV cache, search and stopping."""

    name = "onnxruntime-genai"
    preload_modules = ("onnxruntime_genai",)
    aliases = ("genai", "ort-genai", "ortgenai", "onnxruntime_genai", "onnx runtime genai")
    title = "ONNX Runtime GenAI"
    Options = OnnxRuntimeGenAIOptions
    tasks = ("text",)
    enabled_by_default = False  # opt-in in the UI: the defaults stay PyTorch vs ONNX Runtime
    color = "#8e44ad"

    def __init__(self) -> None:
        self.model: Any = None
        self._info: dict[str, Any] = {}
        self._context_length = 0
        self._vocab_size = 0

    # --- cheap, UI-process side -------------------------------------------------------------
    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        """"ONNX Runtime GenAI · int4", with settings away from the defaults named; "· user model" for a folder."""
        if values.get("genai_dir"):
            return f"{cls.title} · user model"
        parts = [cls.title, str(values["precision"])]
        if values["precision"] in QUANTIZED:
            defaults = {i.name: i.default for i in cls.Options.fields_info()}
            if values.get("block_size", defaults["block_size"]) != defaults["block_size"]:
                parts.append(f"block {values['block_size']}")
            if values.get("accuracy_level", defaults["accuracy_level"]) != defaults["accuracy_level"]:
                parts.append(f"accuracy level {values['accuracy_level']}")
            if not values.get("symmetric", True):
                parts.append("asymmetric")
        return " · ".join(parts)

    @classmethod
    def judged_precision(cls, values: Mapping[str, Any]) -> str:
        """The built precision; a user's folder is read from its graph once loaded (fp32, the strictest, till then)."""
        return "fp32" if values.get("genai_dir") else str(values.get("precision") or "fp32")

    @classmethod
    def collect_facts(cls) -> dict[str, Any]:
        return {"onnxruntime_genai": genai_facts()}

    @classmethod
    def machine_facts(cls, env: Mapping[str, Any]) -> dict[str, Any]:
        facts = env.get("onnxruntime_genai") or {}
        if not facts.get("installed"):
            return {"runtime": "onnxruntime-genai: not installed"}
        name = facts.get("distribution", "onnxruntime-genai")
        return {"runtime": f"{name} {facts.get('version', '(version unknown)')}"}

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return (*DISTRIBUTIONS, "onnxruntime")

    @classmethod
    def availability(cls, env: dict[str, Any]) -> Availability:
        facts = env.get("onnxruntime_genai")
        if facts is None:  # no probe: found without importing (no native library loaded in this process)
            facts = {"installed": importlib.util.find_spec("onnxruntime_genai") is not None}
        if not facts.get("installed"):
            return Availability(False, "onnxruntime-genai is not installed (import onnxruntime_genai fails).",
                                GENAI_INSTALL)
        return AVAILABLE

    # --- worker-process side ----------------------------------------------------------------
    @staticmethod
    def build_settings(spec: Any) -> GenAIBuildSettings:
        return GenAIBuildSettings(precision=spec.precision, block_size=int(spec.block_size),
                                  accuracy_level=int(spec.accuracy_level), symmetric=bool(spec.symmetric))

    def load(self, model: Any, spec: Any, ctx: LoadContext) -> None:
        if model.task != "text":
            raise ArenaError(NO_IMAGES)
        import onnxruntime_genai as og

        if spec.get("genai_dir"):
            folder, export_cached = find_genai_folder(spec.genai_dir), None
            precision, how = graph_precision(decoder_path(folder))
            ctx.notes.append(f"user GenAI model folder {folder}: {precision} ({how})")
        else:
            settings = self.build_settings(spec)
            folder, built = cached_genai_model(model, settings, ctx)
            export_cached, precision = not built, settings.precision
            ctx.notes.append(f"ONNX Runtime GenAI {settings.describe()} ({'built now' if built else 'cached build'}): "
                             f"`{settings.command(model.model_dir, str(folder))}`")
        genai_config = json.loads((folder / "genai_config.json").read_text())
        self._context_length = int(genai_config["model"].get("context_length") or 0)
        self._vocab_size = int(genai_config["model"].get("vocab_size") or 0)
        threads = ctx.threads  # the CPU budget, not os.cpu_count() (a container's quota is often smaller)
        overlay: dict[str, Any] = {"decoder": {"session_options": {"intra_op_num_threads": threads,
                                                                   "inter_op_num_threads": 1}}}
        if model.eos_token_ids:  # stop on the reference's EOS ids, as every other backend does
            overlay["eos_token_id"] = [int(t) for t in model.eos_token_ids]
        with ctx.stage("load", f"ONNX Runtime GenAI: loading {folder.name}"):
            config = og.Config(str(folder))
            config.clear_providers()  # the CPU: a folder built for CUDA would otherwise ask for its provider
            config.overlay(json.dumps({"model": overlay}))
            self.model = og.Model(config)
        version = genai_facts().get("version") or getattr(og, "__version__", "(version unknown)")
        self._info = {"provider": f"onnxruntime-genai {version} on CPU (CPUExecutionProvider)",
                      "artifact_dir": str(folder), "export_cached": export_cached, "precision": precision,
                      "threads": threads, "context_length": self._context_length, "model_type": self.model.type}
        if not spec.get("genai_dir"):
            self._info["builder"] = dict(vars(self.build_settings(spec)))

    def _check_length(self, total: int, what: str) -> None:
        if self._context_length and total > self._context_length:
            raise ArenaError(f"ONNX Runtime GenAI's model takes {self._context_length} tokens (genai_config.json's "
                             f"context_length): {what} ({total}) do not fit. Lower max new tokens.")

    def _generator(self, ids: list[int], max_length: int, min_length: int = 0) -> Any:
        """A fresh generator (an empty KV cache) with greedy search and neutral settings, ``ids`` appended."""
        import numpy as np
        import onnxruntime_genai as og

        if self._vocab_size and max(ids, default=0) >= self._vocab_size:
            raise ArenaError(f"The prompt ids go past the GenAI model's {self._vocab_size} tokens: this folder was "
                             "built from another model than the reference.")
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, num_beams=1, max_length=max_length, min_length=min_length,
                                  repetition_penalty=1.0, no_repeat_ngram_size=0, length_penalty=1.0,
                                  temperature=1.0, top_k=1, top_p=1.0)
        generator = og.Generator(self.model, params)
        generator.append_tokens(np.asarray([ids], dtype=np.int32))
        return generator

    def generate_text(self, prompt_ids: list[int], settings: Any, on_token: Callable[[int], None]) -> list[int]:
        prompt = [int(t) for t in prompt_ids]
        total = len(prompt) + settings.max_new_tokens
        self._check_length(total, "the prompt plus the new tokens")
        generator = self._generator(prompt, total, total if settings.ignore_eos else 0)
        stops = set(settings.eos_token_ids)
        out: list[int] = []
        while not generator.is_done():
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            out.append(token)
            on_token(token)
            if len(out) >= settings.max_new_tokens or (token in stops and not settings.ignore_eos):
                break
        return out

    def generate_image(self, model: Any, settings: Any, on_phase: Callable[[str], None],
                       on_step: Callable[[int], None]) -> Any:
        raise ArenaError(NO_IMAGES)

    def cached_step_logits(self, prompt_ids: list[int], answer_ids: list[int]) -> Any:
        """GenAI's own cache: the prompt appended, then each answer token appended to the same generator; the last
        row of its logits after each append."""
        import numpy as np

        prompt, answer = [int(t) for t in prompt_ids], [int(t) for t in answer_ids]
        total = len(prompt) + len(answer) + 1
        self._check_length(total, "the prompt plus the answer")
        generator = self._generator(prompt, total)
        rows = [np.asarray(generator.get_output("logits"))[0, -1]]
        for token in answer[:-1]:
            generator.append_tokens(np.asarray([[token]], dtype=np.int32))
            rows.append(np.asarray(generator.get_output("logits"))[0, -1])
        return np.stack(rows).astype(np.float32)

    def forward_logits(self, token_ids: list[int]) -> Any:
        """Every position's logits of one prefill over ``token_ids`` in a fresh generator (the model's output as
        it is, float32)."""
        import numpy as np

        ids = [int(t) for t in token_ids]
        self._check_length(len(ids) + 1, "the scored sequence plus one")
        generator = self._generator(ids, len(ids) + 1)
        logits = np.asarray(generator.get_output("logits"))
        if logits.ndim != 3 or logits.shape[1] != len(ids):
            raise NotImplementedError(f"this GenAI model returns logits of shape {tuple(logits.shape)} for "
                                      f"{len(ids)} tokens (built with prune_lm_head?), not one row per position")
        return logits[0].astype(np.float32)

    def runtime_info(self) -> dict[str, Any]:
        return dict(self._info)

    def unload(self) -> None:
        import gc

        self.model = None
        gc.collect()
