"""ONNX Runtime through optimum-onnx: export with KV cache (cached on disk) or a user's export, then generate.

Execution providers come from what onnxruntime reports: CPU here; CUDA and TensorRT where onnxruntime-gpu and
TensorRT are installed. The export itself (`backends.conversion.onnx_export`) runs in a separate short-lived
process (``ctx.run_isolated``): an exporter segfault stays there, and torch's threads never share this worker with
ONNX Runtime's.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arena.errors import ArenaError
from backends.base import (
    AVAILABLE,
    Availability,
    BackendOptions,
    HFBackend,
    LoadContext,
    OptionChoice,
    option,
    ort_session_options,
    torch_facts,
)
from backends.conversion.onnx_export import cached_export
from backends.conversion.onnx_quantize import WeightOnlySettings, cached_dynamic_int8, cached_weight_only
from backends.conversion.tensorrt_profiles import image_profiles, llm_profiles, to_ort_trt_options
from backends.installs import OPTIMUM_ONNX_INSTALL

ORT_INSTALL = OPTIMUM_ONNX_INSTALL
ORT_GPU_INSTALL = ("pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]==1.31.1'  # CUDA 13 "
                   "and cuDNN 9 libraries from pip; NVIDIA driver 580 or newer")
ORT_TRT_INSTALL = (ORT_GPU_INSTALL.split("  #")[0] + " 'tensorrt-cu13>=10.13,<11'  # its TensorRT provider loads "
                   "TensorRT 10 (libnvinfer.so.10)")
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
PROVIDERS = {
    "CPUExecutionProvider": "CPU",
    "CUDAExecutionProvider": "CUDA",
    "TensorrtExecutionProvider": "TensorRT",
}
PROVIDER_NAMES = {"CPUExecutionProvider": "CPU", "CUDAExecutionProvider": "CUDA",
                  "TensorrtExecutionProvider": "TensorRT EP"}  # as labels say them
GRAPH_OPTIMIZATION = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
                      "disabled": "ORT_DISABLE_ALL"}
WEIGHT_ONLY_BITS = {"int8": 8, "int4": 4}
QUANTIZED = (*WEIGHT_ONLY_BITS, "int8-dynamic")
IMAGE_QUANTIZATION_REFUSAL = (
    "ONNX Runtime {precision} is for text models only: a diffusion UNet is mostly convolutions, which "
    "weight-only MatMulNBits leaves in fp32 (only its attention projections would shrink), and dynamic int8 of "
    "its convolutions and VAE is not checked here, so pick fp32 for images.")
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


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 (ONNX Runtime's C++ logger) while still passing it
    on to the real stderr (the worker log); the lines are in the yielded list once the block ends."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            os.write(2, text.encode())
            lines.extend(text.splitlines())


def load_gpu_libraries(onnxruntime: Any, provider: str) -> None:
    """Put the shared libraries a GPU provider links against into this process before a session needs them.

    ONNX Runtime's documented ways: torch's CUDA libraries when torch was imported first, ``preload_dlls()`` for
    the nvidia-* pip packages (it prints what it cannot find: kept quiet here, the provider check says it), and
    for the TensorRT provider the tensorrt package, whose ``tensorrt_libs`` loads libnvinfer.
    """
    import contextlib
    import importlib.util
    import io

    if provider == "TensorrtExecutionProvider" and importlib.util.find_spec("tensorrt") is not None:
        with contextlib.suppress(Exception):
            import tensorrt  # noqa: F401
    if hasattr(onnxruntime, "preload_dlls"):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
            onnxruntime.preload_dlls()


def _probe_model() -> bytes:
    """The smallest ONNX graph (one Relu) a provider can be started with."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def provider_failure_reason(lines: list[str]) -> str:
    """ONNX Runtime's own words for why a provider did not start (the library it could not load, what it needs)."""
    import re

    text = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in lines]
    loaded = next((m for line in text if (m := re.search(r"Failed to load library (\S+) with error: (.+)", line))),
                  None)
    needs = next((m.group(1).rstrip(". ") for line in text
                  if (m := re.search(r"Failed to create \w+\. (Require .*?)\.\s+Please", line))), None)
    if loaded:
        reason = f"{Path(loaded.group(1)).name} cannot be loaded: {loaded.group(2).strip()}"
        return f"{reason} (it requires {needs.removeprefix('Require ')})" if needs else reason
    if needs:
        return needs
    errors = [line.split("] ", 1)[-1] for line in text if line and ("Error" in line or "error" in line)]
    return errors[-1] if errors else "ONNX Runtime did not say why (see the log)"


PROVIDER_CHECK_TIMEOUT_S = 90  # the TensorRT provider builds an engine for the one-node graph: seconds


def start_provider(provider: str) -> bool:
    """Start ``provider`` on a one-node graph in this process; True if the session really runs on it."""
    import onnxruntime

    load_gpu_libraries(onnxruntime, provider)
    ran = onnxruntime.InferenceSession(_probe_model(), providers=[provider]).get_providers()
    return bool(ran) and ran[0] == provider


def provider_status(available: list[str]) -> dict[str, dict[str, Any]]:
    """Whether each GPU provider this onnxruntime lists can actually start a session here.

    ``get_available_providers()`` lists what the package was built with, not what runs: onnxruntime-gpu on a
    machine without its CUDA libraries lists CUDA, then quietly runs everything on the CPU. So each one is
    started once on a one-node graph, in its own short-lived process (a provider that hangs or crashes costs
    only its own answer); a failure keeps ONNX Runtime's reason.
    """
    import subprocess

    status: dict[str, dict[str, Any]] = {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # the same onnxruntime
    for provider in GPU_PROVIDERS:
        if provider not in available:
            continue
        try:
            done = subprocess.run([sys.executable, "-m", "backends.onnxruntime_backend", "start-provider", provider],
                                  capture_output=True, text=True, env=env, timeout=PROVIDER_CHECK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            status[provider] = {"ok": False, "reason": f"starting it took longer than {PROVIDER_CHECK_TIMEOUT_S} s"}
            continue
        ok = done.returncode == 0 and done.stdout.strip().endswith("started")
        status[provider] = {"ok": True} if ok else {
            "ok": False, "reason": provider_failure_reason((done.stderr + "\n" + done.stdout).splitlines())}
    return status


def usable_providers(ort_facts: dict[str, Any]) -> list[str]:
    """The providers onnxruntime lists, less GPU ones that failed to start (see `provider_status`)."""
    status = ort_facts.get("provider_status", {})
    return [p for p in ort_facts.get("providers", []) if status.get(p, {}).get("ok", True)]


def fallback_warnings(lines: list[str]) -> list[str]:
    """ONNX Runtime's warnings that nodes were not placed on the requested provider (they run on the CPU)."""
    keys = ("not assigned to the preferred execution providers", "fall back", "fallback to CPU",
            "Falling back to", "will run on CPU")
    found = []
    for line in lines:
        if any(k.lower() in line.lower() for k in keys):
            message = line.split("] ", 1)[-1].strip()
            if message not in found:
                found.append(message)
    return found


QUANTIZED_OPS = ("MatMulNBits", "DynamicQuantizeLinear", "MatMulInteger", "DequantizeLinear", "QuantizeLinear",
                 "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "GatherBlockQuantized")


def graph_precision(model_path: str | Path) -> tuple[str, str]:
    """What precision an ONNX graph really runs at, read from its operators and weights (not its tensor data):
    ("int4" | "int8" | "fp16" | "bf16" | "fp32", how it was told). Quantized operators decide first
    (MatMulNBits' ``bits``, the integer type of the weights a DequantizeLinear reads), then the type most of the
    floating-point weights have."""
    import collections

    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    ops = collections.Counter(node.op_type for node in graph.node)
    for sub in (a.g for node in graph.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH):
        ops.update(node.op_type for node in sub.node)
    inits = {i.name: i.data_type for i in graph.initializer}
    nbits = [a.i for node in graph.node if node.op_type == "MatMulNBits" for a in node.attribute if a.name == "bits"]
    if ops["MatMulNBits"]:
        bits = min(nbits) if nbits else 4
        return f"int{bits}", f"weight-only (MatMulNBits, {bits} bits, {ops['MatMulNBits']} matrices)"
    dynamic = ops["DynamicQuantizeLinear"] or ops["MatMulInteger"] or ops["DynamicQuantizeMatMul"]
    if dynamic:
        return "int8", (f"dynamic quantization (MatMulInteger {ops['MatMulInteger']}, DynamicQuantizeLinear "
                        f"{ops['DynamicQuantizeLinear']}): weights and activations in 8 bits")
    small = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT8: 8,
             onnx.TensorProto.UINT8: 8}
    dq_bits = [small[inits[node.input[0]]] for node in graph.node
               if node.op_type == "DequantizeLinear" and inits.get(node.input[0]) in small]
    if dq_bits:
        kind = "QDQ" if ops["QuantizeLinear"] else "weight-only"
        return f"int{min(dq_bits)}", f"{kind} (DequantizeLinear, {len(dq_bits)} {min(dq_bits)}-bit weights)"
    if any(op.startswith("QLinear") for op in ops):
        return "int8", "static quantization (QLinear operators)"
    floats = collections.Counter(t for t in inits.values() if t in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                                                   onnx.TensorProto.BFLOAT16))
    top = floats.most_common(1)[0][0] if floats else onnx.TensorProto.FLOAT
    name = {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}.get(top, "fp32")
    return name, f"{name} weights" if name != "fp32" else "fp32 weights, no quantized operators"


@dataclass(frozen=True)
class OnnxRuntimeOptions(BackendOptions):
    provider: str = option("auto", choices=("auto", *PROVIDERS), gpu_only_values=GPU_PROVIDERS,
                           help="The execution provider (auto: CUDA if it starts, else CPU).")
    precision: str = option("fp32", choices=("fp32", "fp16", "int8", "int4", "int8-dynamic"),
                            gpu_only_values=("fp16",),
                            help="fp16 exports on CUDA. CPU provider: int8 / int4 are weight-only (MatMulNBits: "
                                 "weights in 8 or 4 bits per block, activations fp32); int8-dynamic quantizes "
                                 "activations at run time too (per-channel, output projection kept fp32).")
    block_size: str = option("32", choices=("32", "64", "128"), tasks=("text",), label="Quantization block size",
                             help="int8/int4: weights sharing one scale (smaller: more accurate, a little larger).")
    symmetric: bool = option(True, kind="bool", tasks=("text",), label="Symmetric quantization",
                             help="int8/int4: scales only (symmetric) or scales and zero points.")
    accuracy_level: str = option("4", choices=("0", "1", "2", "3", "4"), tasks=("text",),
                                 label="MatMulNBits accuracy level",
                                 help="int8/int4: the compute type (4: int8 dot products on AVX512-VNNI, fastest; "
                                      "0: unset, fp32 compute; 1-3: fp32/fp16/bf16).")
    embedding_bits: str = option("8", choices=("8", "4", "fp32"), tasks=("text",),
                                 label="Embedding / output projection",
                                 help="int8/int4: the tied embedding and output projection (a third of a small "
                                      "model's weights). 8: output projection 8-bit (the lookup stays fp32: "
                                      "ONNX Runtime's GatherBlockQuantized is 4-bit only); 4: both 4-bit.")
    graph_optimization: str = option("all", choices=("all", "extended", "basic", "disabled"),
                                     label="Graph optimization level",
                                     help="ONNX Runtime's graph_optimization_level (all = ORT_ENABLE_ALL, its "
                                          "default, with layout optimizations).")
    threads: str = option("auto", choices=("auto", "1", "2", "4"), label="Session threads",
                          help="intra_op_num_threads (auto: this machine's CPU budget).")
    onnx_dir: str | None = option(None, kind="path", label="Existing ONNX export (optional)",
                                  help="Check your own export against PyTorch instead of exporting.",
                                  placeholder={"text": "/path/to/optimum-cli/export",
                                               "image": "/path/to/optimum-cli/text-to-image/export"})


def onnxruntime_facts() -> dict[str, Any]:
    """What onnxruntime says about this machine, each GPU provider it lists tried for real (`provider_status`)."""
    try:
        import onnxruntime

        facts: dict[str, Any] = {
            "installed": True,
            "version": onnxruntime.__version__,
            "device": onnxruntime.get_device(),
            "providers": list(onnxruntime.get_available_providers()),
        }
        try:  # what a GPU build was compiled for ("13.0"); absent from some builds
            info = importlib.import_module("onnxruntime.capi.build_and_package_info")
            facts["cuda_version"] = getattr(info, "cuda_version", None)
        except ImportError:
            facts["cuda_version"] = None
        try:
            facts["provider_status"] = provider_status(facts["providers"])
        except Exception as exc:  # noqa: BLE001 - an unknown status leaves the listed providers offered
            facts["provider_status_error"] = f"{type(exc).__name__}: {exc}"
        return facts
    except Exception as exc:  # noqa: BLE001
        return {"installed": False, "error": f"{type(exc).__name__}: {exc}"}


def optimum_onnx_installed() -> bool:
    try:
        importlib.metadata.version("optimum-onnx")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("optimum") is not None


class OnnxRuntimeBackend(HFBackend):
    """`ORTModelForCausalLM` (KV cache) with greedy `generate`."""

    name = "onnxruntime"
    aliases = ("onnx", "ort", "onnx runtime")
    title = "ONNX Runtime"
    Options = OnnxRuntimeOptions

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        provider = values["provider"]
        parts = [cls.title, PROVIDER_NAMES.get(provider, provider.replace("ExecutionProvider", "")),
                 values["precision"]]
        if values["precision"] in WEIGHT_ONLY_BITS:  # settings away from the defaults are named
            defaults = {i.name: i.default for i in cls.Options.fields_info()}
            words = {"block_size": "block {}", "symmetric": "{}", "accuracy_level": "accuracy level {}",
                     "embedding_bits": "embedding {}"}
            for name, word in words.items():
                if values.get(name, defaults[name]) != defaults[name]:
                    value = values[name]
                    parts.append("asymmetric" if name == "symmetric" and not value else word.format(value))
        if values.get("graph_optimization", "all") != "all":
            parts.append(f"graph opt {values['graph_optimization']}")
        if values.get("threads", "auto") != "auto":
            parts.append(f"{values['threads']} threads")
        if values.get("onnx_dir"):
            parts.append("user export")
        return " · ".join(parts)

    @classmethod
    def collect_facts(cls) -> dict[str, Any]:
        return {"onnxruntime": onnxruntime_facts(), "optimum_onnx": {"installed": optimum_onnx_installed()},
                "torch": torch_facts()}  # an fp16 export needs torch on CUDA

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("optimum", "optimum-onnx", "onnx", "onnxruntime", "onnxruntime-gpu")

    def __init__(self) -> None:
        super().__init__()
        self.components: dict[str, Any] | None = None  # sessions of a diffusers conversion-script export

    @classmethod
    def availability(cls, env: dict[str, Any]) -> Availability:
        ort = env.get("onnxruntime", {})
        if not ort.get("installed"):
            return Availability(False, f"onnxruntime cannot be imported ({ort.get('error', 'not installed')}).",
                                ORT_INSTALL)
        if not env.get("optimum_onnx", {}).get("installed"):
            return Availability(False, "optimum-onnx is not installed.", ORT_INSTALL)
        return AVAILABLE

    @classmethod
    def options(cls, env: dict[str, Any]) -> dict[str, list[OptionChoice]]:
        ort = env.get("onnxruntime", {})
        listed, have = set(ort.get("providers", [])), set(usable_providers(ort))
        version = ort.get("version", "?")
        providers = [OptionChoice("auto", "auto (CUDA if it starts, else CPU)")]
        for provider, label in PROVIDERS.items():
            if provider in have:
                providers.append(OptionChoice(provider, label))
                continue
            if provider in listed:  # built in, but it did not start (see provider_status)
                reason = ort.get("provider_status", {}).get(provider, {}).get("reason", "")
                built = f" (built for CUDA {ort['cuda_version']})" if ort.get("cuda_version") else ""
                fix = f"pip install 'onnxruntime-gpu[cuda,cudnn]=={version}'  # the CUDA and cuDNN libraries it " \
                      "was built for, from pip; an NVIDIA driver for that CUDA"
                if provider == "TensorrtExecutionProvider":
                    fix = fix.split("  #")[0] + " 'tensorrt-cu13>=10.13,<11'  # and TensorRT 10 (libnvinfer.so.10)"
                why = Availability(False, f"onnxruntime-gpu {version}{built} has the {label} provider, but it cannot "
                                          f"start here: {reason}.", fix)
            elif provider == "CUDAExecutionProvider":
                why = Availability(False, f"onnxruntime {version} has no CUDA provider (CPU package).", ORT_GPU_INSTALL)
            else:
                why = Availability(False, f"onnxruntime {version} has no TensorRT provider.", ORT_TRT_INSTALL)
            providers.append(OptionChoice(provider, label, why))
        gpu = "CUDAExecutionProvider" in have or "TensorrtExecutionProvider" in have
        cuda_torch = env.get("torch", {}).get("cuda_available", False)
        fp16 = AVAILABLE if gpu and cuda_torch else Availability(
            False, "an fp16 export runs on CUDA (export with torch on a GPU, run with the CUDA or TensorRT "
                   "provider).", ORT_GPU_INSTALL)
        return {
            "provider": providers,
            "precision": [OptionChoice("fp32", "fp32"), OptionChoice("fp16", "fp16", fp16),
                          OptionChoice("int8", "int8 (weight-only, CPU)"),
                          OptionChoice("int4", "int4 (weight-only, CPU)"),
                          OptionChoice("int8-dynamic", "int8 dynamic (weights and activations, CPU)")],
        }

    @classmethod
    def check_spec(cls, spec, env):
        problem = super().check_spec(spec, env)
        if problem:
            return problem
        provider = cls.resolve_provider(spec.provider, usable_providers(env.get("onnxruntime", {})))
        if spec.precision == "int8-dynamic" and provider != "CPUExecutionProvider":
            return ("int8 dynamic quantization runs on the CPU provider only (the CUDA provider has no dynamic "
                    "quantization kernels; TensorRT needs static QDQ). Pick provider CPUExecutionProvider.")
        if spec.precision in WEIGHT_ONLY_BITS and provider != "CPUExecutionProvider":
            return (f"{spec.precision} weight-only quantization is built for the CPU provider here (the CUDA "
                    "provider's MatMulNBits kernels and TensorRT's are not set up in this arena). Pick provider "
                    "CPUExecutionProvider.")
        if spec.precision == "fp16" and provider == "CPUExecutionProvider":
            return "fp16 ONNX models are slow or unsupported on the CPU provider: pick CUDA or TensorRT."
        return None

    @staticmethod
    def weight_only_settings(spec: Any) -> WeightOnlySettings:
        embedding = spec.embedding_bits
        return WeightOnlySettings(bits=WEIGHT_ONLY_BITS[spec.precision], block_size=int(spec.block_size),
                                  symmetric=bool(spec.symmetric), accuracy_level=int(spec.accuracy_level),
                                  embedding_bits=0 if embedding == "fp32" else int(embedding))

    @staticmethod
    def resolve_provider(requested: str, available: list[str]) -> str:
        if requested != "auto":
            return requested
        return "CUDAExecutionProvider" if "CUDAExecutionProvider" in available else "CPUExecutionProvider"

    # --- worker side -------------------------------------------------------------------------------
    def load(self, model, spec, ctx: LoadContext) -> None:
        import onnxruntime

        listed = onnxruntime.get_available_providers()
        if spec.provider == "auto" and "CUDAExecutionProvider" in listed:  # listed is not the same as usable
            status = provider_status(["CUDAExecutionProvider"])
            listed = usable_providers({"providers": listed, "provider_status": status})
            if not status["CUDAExecutionProvider"]["ok"]:
                ctx.notes.append(f"auto: onnxruntime-gpu {onnxruntime.__version__}'s CUDA provider cannot start "
                                 f"here ({status['CUDAExecutionProvider']['reason']}), so this runs on the CPU")
        provider = self.resolve_provider(spec.provider, listed)
        if provider in GPU_PROVIDERS:
            load_gpu_libraries(onnxruntime, provider)
        image = model.task == "image"
        if image and spec.precision in QUANTIZED:
            raise ArenaError(IMAGE_QUANTIZATION_REFUSAL.format(precision=spec.precision))
        export_cached: bool | None
        precision = spec.precision  # a user's export: what its graph says (`graph_precision`)
        if spec.onnx_dir:
            onnx_dir = (find_pipeline_export if image else find_onnx_model)(spec.onnx_dir).parent
            if image:
                onnx_dir = onnx_dir.parent  # unet/model.onnx -> the pipeline folder
            export_cached = None
            ctx.notes.append(f"user export {onnx_dir}")
            if not image:
                precision, how = graph_precision(find_onnx_model(onnx_dir))
                ctx.notes.append(f"user export: {precision} {how}")
        else:
            onnx_dir, built = cached_export(model, "fp16" if spec.precision == "fp16" else "fp32", ctx)
            export_cached = not built
        if spec.precision in WEIGHT_ONLY_BITS:
            settings = self.weight_only_settings(spec)
            onnx_dir, built_q = cached_weight_only(Path(onnx_dir), settings, ctx)
            ctx.notes.append(settings.describe())
            export_cached = None if export_cached is None else export_cached and not built_q
        elif spec.precision == "int8-dynamic":
            onnx_dir, built_q = cached_dynamic_int8(Path(onnx_dir), ctx)
            ctx.notes.append("dynamic int8: per-channel weights, activations quantized at run time, output "
                             "projection kept fp32")
            export_cached = None if export_cached is None else export_cached and not built_q

        provider_options: dict[str, Any] = {}
        if provider == "TensorrtExecutionProvider":
            provider_options = self._trt_provider_options(model, spec, Path(onnx_dir), ctx)
        session_options = ort_session_options(onnxruntime)  # threads from the CPU budget, not os.cpu_count()
        if spec.threads != "auto":
            session_options.intra_op_num_threads = int(spec.threads)
        session_options.graph_optimization_level = getattr(
            onnxruntime.GraphOptimizationLevel, GRAPH_OPTIMIZATION[spec.graph_optimization])
        session_options.log_severity_level = 2  # warnings (CPU fallbacks) land in the worker log
        self.components = None
        with ctx.stage("load", f"ONNX Runtime: creating the {PROVIDERS.get(provider, provider)} session"), \
                captured_stderr() as native_log:
            if image and pipeline_layout(onnx_dir) == "diffusers":
                self._diffusers_layout(model, Path(onnx_dir), provider, provider_options, session_options, ctx)
            elif image:
                from optimum.onnxruntime import ORTDiffusionPipeline

                self.model = ORTDiffusionPipeline.from_pretrained(
                    onnx_dir, provider=provider, provider_options=provider_options or None,
                    session_options=session_options, use_io_binding=provider == "CUDAExecutionProvider")
                self.model.set_progress_bar_config(disable=True)
            else:
                from optimum.onnxruntime import ORTModelForCausalLM

                self.model = ORTModelForCausalLM.from_pretrained(
                    onnx_dir, provider=provider, provider_options=provider_options or None,
                    session_options=session_options, use_cache=True,
                    use_io_binding=provider == "CUDAExecutionProvider")
        ran = list(self.components["providers"] if self.components else self.model.providers)
        if ran and ran[0] != provider:
            ctx.notes.append(f"requested {provider} but the session runs on {ran[0]}")
        if provider != "CPUExecutionProvider":
            ctx.notes.extend(f"ONNX Runtime: {w}" for w in fallback_warnings(native_log))
        # optimum places inputs for its provider: cuda for CUDA/TensorRT
        self.device = "cpu" if self.components else self.model.device.type
        self._info = {"provider": ran[0] if ran else provider, "session_providers": ran,
                      "artifact_dir": str(onnx_dir), "export_cached": export_cached,
                      "onnxruntime": onnxruntime.__version__, "precision": precision,
                      "threads": self._session_threads(session_options.intra_op_num_threads)}

    def _session_threads(self, fallback: int) -> int:
        """The intra-op thread count the (text decoder or UNet) session really got."""
        session = (self.components["unet"].session if self.components
                   else getattr(self.model, "session", None) or getattr(getattr(self.model, "unet", None), "session",
                                                                        None))
        try:
            return int(session.get_session_options().intra_op_num_threads)
        except (AttributeError, TypeError, ValueError):
            return fallback

    def _diffusers_layout(self, model, root: Path, provider: str, provider_options: dict, session_options: Any,
                          ctx: LoadContext) -> None:
        """Sessions for an export by diffusers' conversion script, driven by the shared component loop (that
        layout's UNet takes one timestep per batch row and its text encoder int32 ids; the runners adapt)."""
        from transformers import AutoTokenizer

        from backends.loops import OrtRunner

        providers = [(provider, provider_options)] if provider_options else [provider]
        runners = {part: OrtRunner(str(root / part / "model.onnx"), providers, session_options)
                   for part in ("text_encoder", "unet", "vae_decoder")}
        tokenizer_dir = root / "tokenizer" if (root / "tokenizer").is_dir() else Path(model.model_dir) / "tokenizer"
        vae = json.loads((Path(model.model_dir) / "vae" / "config.json").read_text())
        self.components = {**runners, "tokenizer": AutoTokenizer.from_pretrained(tokenizer_dir),
                           "vae_scaling": vae.get("scaling_factor", 0.18215),
                           "providers": runners["unet"].session.get_providers()}
        ctx.notes.append("diffusers conversion-script layout")

    def generate_image(self, model, settings, on_phase, on_step):
        if not self.components:
            return super().generate_image(model, settings, on_phase, on_step)
        import diffusers

        from backends.loops import components_generate

        config = json.loads(model.scheduler)
        scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
        c = self.components
        return components_generate(c["text_encoder"], c["unet"], c["vae_decoder"], c["tokenizer"], scheduler,
                                   c["vae_scaling"], model, settings, on_phase, on_step)

    def unload(self) -> None:
        self.components = None
        super().unload()

    @staticmethod
    def _trt_provider_options(model, spec, onnx_dir: Path, ctx: LoadContext) -> dict[str, Any]:
        """Engine cache and explicit profiles for every dynamic input: without them the TensorRT provider
        rebuilds its engines whenever a shape changes."""
        engine_dir = ctx.cache.root / "trt-ep" / onnx_dir.name
        engine_dir.mkdir(parents=True, exist_ok=True)
        options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engine_dir),
                   "trt_timing_cache_enable": True, "trt_fp16_enable": spec.precision == "fp16"}
        if model.task == "image":
            # One session per component shares these options: the UNet's profile is the one that matters (the
            # text encoder and VAE have static shapes at one image size); TensorRT ignores names it lacks.
            configs = {part: json.loads((Path(model.model_dir) / part / "config.json").read_text())
                       for part in ("unet", "vae")}
            tokenizer = json.loads((Path(model.model_dir) / "tokenizer" / "tokenizer_config.json").read_text())
            profiles = image_profiles("unet", configs, model.height, model.width,
                                      int(tokenizer.get("model_max_length", 77)))
        else:
            config = json.loads((Path(model.model_dir) / "config.json").read_text())
            profiles = llm_profiles(config, model.context_length or 2048)
        return options | to_ort_trt_options(profiles)


if __name__ == "__main__":  # python -m backends.onnxruntime_backend start-provider NAME (see `provider_status`)
    if len(sys.argv) == 3 and sys.argv[1] == "start-provider":
        try:
            started = start_provider(sys.argv[2])
        except Exception as exc:  # noqa: BLE001 - the message is the reason
            print(f"Error: {type(exc).__name__}: {exc}", file=sys.stderr)
            started = False
        print("started" if started else "did not start")
        sys.exit(0 if started else 1)
    sys.exit("usage: python -m backends.onnxruntime_backend start-provider PROVIDER")
