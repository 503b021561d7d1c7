"""The cached ONNX Runtime GenAI model: onnxruntime-genai's model builder (``onnxruntime_genai.models.builder``)
run on the prepared Hugging Face folder, in an isolated process (``ctx.run_isolated``: the builder imports torch
and transformers, and a crash there is reported, not inherited), stored atomically in the artifact cache.

The builder writes one ``model.onnx`` (+ external data) with its own fused operators (GroupQueryAttention,
SkipSimplifiedLayerNormalization, MatMulNBits for int4/int8), a ``genai_config.json`` and the tokenizer files.
On the CPU it builds fp32, int8 and int4 (its "Valid precision + execution provider combinations"); fp16 and bf16
are CUDA builds. int8/int4 are weight-only (MatMulNBits), with the builder's ``block_size``, ``accuracy_level``
and ``is_symmetric`` extra options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.contract import LoadContext

CPU_PRECISIONS = ("fp32", "int8", "int4")  # what the builder makes for its "cpu" execution provider
QUANTIZED = ("int8", "int4")


@dataclass(frozen=True)
class GenAIBuildSettings:
    """What the model builder is asked for: its precision, execution provider and weight-only extra options."""

    precision: str = "fp32"
    execution_provider: str = "cpu"
    block_size: int = 32
    accuracy_level: int = 4
    symmetric: bool = True

    def extra_options(self) -> list[str]:
        """The builder's ``--extra_options KEY=VALUE`` list (quantization settings only for int4/int8)."""
        if self.precision not in QUANTIZED:
            return []
        extra = [f"block_size={self.block_size}", f"accuracy_level={self.accuracy_level}",
                 f"is_symmetric={'true' if self.symmetric else 'false'}"]
        if self.precision == "int8":
            # A model that ties its embedding and output projection (SmolLM2) got shared_embeddings by default in
            # 0.15.2, which quantizes the embedding's Gather too; its quantizer had a 4-bit Gather only and wrote an
            # invalid int8 model ("Node input 'lm_head.MatMul.weight_Q4' is not a graph input"). 0.18.0 keeps
            # SmolLM2's int8 embedding apart by itself (a plain Gather); asked explicitly all the same.
            extra.append("shared_embeddings=false")
        return extra

    def command(self, input_dir: str = "MODEL_DIR", output_dir: str = "OUT") -> str:
        """The equivalent command line (shown in the panel, so a run can be reproduced outside the arena)."""
        extra = self.extra_options()
        return (f"python -m onnxruntime_genai.models.builder -i {input_dir} -o {output_dir} -p {self.precision} "
                f"-e {self.execution_provider}" + (f" --extra_options {' '.join(extra)}" if extra else ""))

    def describe(self) -> str:
        """One sentence for the panel."""
        words = f"model builder: {self.precision}, execution provider {self.execution_provider}"
        if self.precision in QUANTIZED:
            words += (f", weight-only MatMulNBits {self.precision[3:]}-bit, block size {self.block_size}, "
                      f"accuracy level {self.accuracy_level}, {'symmetric' if self.symmetric else 'asymmetric'}")
        return words


def build_genai_model(model_dir: str, output_dir: str, settings: dict[str, Any]) -> None:
    """Run the model builder on a Hugging Face folder into ``output_dir`` (runs in an isolated process)."""
    import tempfile

    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    build = GenAIBuildSettings(**settings)
    # The builder's cache_dir holds Hugging Face downloads and temporary external-data files: nothing to keep.
    with tempfile.TemporaryDirectory(prefix="genai-builder-") as scratch:
        extra = parse_extra_options(None, model_dir, output_dir, build.precision, build.execution_provider, scratch,
                                    build.extra_options())
        # The folder is already local and checked (a visitor's repository passed the Hub border): the builder gets
        # no Hub token and never trusts a repository's code, whatever its defaults become.
        extra.update(hf_token=False, hf_remote=False)
        create_model(None, model_dir, output_dir, build.precision, build.execution_provider, scratch, **extra)
    if not (Path(output_dir) / "genai_config.json").is_file():
        raise RuntimeError(f"the model builder wrote no genai_config.json into {output_dir}")


def genai_versions() -> dict[str, str | None]:
    """The packages whose versions change what the builder writes (part of the cache key)."""
    from backends.installs import dist_versions

    return dist_versions("onnxruntime-genai", "onnxruntime-genai-cuda", "transformers", "torch", "onnx-ir", "onnx")


def cached_genai_model(model: Any, settings: GenAIBuildSettings, ctx: LoadContext) -> tuple[Path, bool]:
    """The cached GenAI model folder of a prepared text model for ``settings``, built in an isolated process on a
    miss; returns ``(folder, built_now)``."""
    fields = {"model": model.fingerprint, "builder": dict(vars(settings)), "extra_options": settings.extra_options(),
              "versions": genai_versions()}
    with ctx.stage("export", f"Building {model.model_name} with the ONNX Runtime GenAI model builder "
                             f"({settings.precision}; once, then cached)"):
        return ctx.cache.get_or_build(
            "genai", fields,
            lambda tmp: ctx.run_isolated(f"{__name__}:build_genai_model", model.model_dir, str(tmp),
                                         dict(vars(settings)), description="ONNX Runtime GenAI model build")
            or {"source": model.model_dir, "model_name": model.model_name, "command": settings.command(
                model.model_dir, "<this folder>")})
