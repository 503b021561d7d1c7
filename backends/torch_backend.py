"""Hugging Face transformers in PyTorch: the reference backend (CPU or CUDA; fp32, bf16, fp16 on CUDA, weight-only
int8 through torchao), optionally under `torch.compile` with a static KV cache."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backends.contract import (
    AVAILABLE,
    Availability,
    BackendOptions,
    LoadContext,
    OptionChoice,
    option,
    precision_label,
    vae_fp32_option,
)
from backends.hf import HFBackend, load_causal_lm, torch_facts, torch_threads
from backends.installs import TORCH_CUDA_INSTALL, TORCH_INSTALL

TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "int8": "float32"}
TORCHAO_INSTALL = "pip install torchao==0.18.0  # the release built against torch 2.13"
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 matrix/dot-product instructions
STATIC_CACHE_MIN = 256  # the static KV cache's smallest length (grown to the next power of two when a run needs it)


def cpu_facts() -> dict[str, Any]:
    """Whether this CPU has native bf16 (AMX or AVX512-BF16), from /proc/cpuinfo and torch's own capability."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    facts: dict[str, Any] = {"bf16_flags": [f for f in BF16_CPU_FLAGS if f in flags], "known": bool(flags)}
    try:
        import torch

        facts["capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - a fact we can do without
        facts["capability"] = None
    facts["bf16_native"] = bool(facts["bf16_flags"])
    return facts


def torchao_facts() -> dict[str, Any]:
    """Whether torchao imports with this torch and has the weight-only int8 config (the probe's child process)."""
    import contextlib
    import importlib.metadata
    import io

    try:
        version = importlib.metadata.version("torchao")
    except importlib.metadata.PackageNotFoundError:
        return {"installed": False, "error": "torchao is not installed."}
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            from torchao.quantization import Int8WeightOnlyConfig, quantize_  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - the reason is the fact
        return {"installed": False, "version": version,
                "error": f"torchao {version} does not import with this torch ({type(exc).__name__}: {exc})."}
    return {"installed": True, "version": version}


def dtype_problem(module, dtype, what: str) -> str | None:
    """Whether every floating-point parameter of ``module`` is in ``dtype``, the precision asked for. transformers 5
    (and diffusers) load a checkpoint in its own dtype unless one is asked for (``dtype="auto"``): the reference is
    fp32 on purpose, whatever the checkpoint was saved in, so the load asks explicitly and this checks it did. In a
    half precision, modules the model class keeps in fp32 on purpose (``_keep_in_fp32_modules``) may stay fp32."""
    import torch

    keep = tuple(getattr(module, "_keep_in_fp32_modules", None) or ()) + tuple(
        getattr(module, "_keep_in_fp32_modules_strict", None) or ())
    found: dict[str, str] = {}
    for name, parameter in module.named_parameters():
        if not parameter.is_floating_point() or parameter.dtype == dtype:
            continue
        if dtype != torch.float32 and parameter.dtype == torch.float32 and any(
                part in name.split(".") for part in keep):
            continue
        found.setdefault(str(parameter.dtype).removeprefix("torch."), name)
    if not found:
        return None
    wanted = str(dtype).removeprefix("torch.")
    listed = ", ".join(f"{kind} (e.g. {name})" for kind, name in sorted(found.items()))
    return f"PyTorch: {what} loaded with parameters in {listed} where {wanted} was asked for."


IMAGE_INT8_REFUSAL = ("PyTorch {precision} (torchao weight-only) is offered for text models only here: a diffusion "
                      "UNet is mostly convolutions, which weight-only int8 leaves in fp32, so pick fp32, bf16 or "
                      "fp16 for images.")


@dataclass(frozen=True)
class PyTorchOptions(BackendOptions):
    device: str = option("cpu", choices=("cpu", "cuda"), gpu_only_values=("cuda",),
                         help="Where the model runs.")
    precision: str = option("fp32", choices=("fp32", "bf16", "fp16", "int8"), gpu_only_values=("fp16",),
                            choice_tasks={"int8": ("text",)}, task_reason=IMAGE_INT8_REFUSAL,
                            help="The weights' dtype (fp16 on CUDA only; bf16 is fast on CPUs with AMX or "
                                 "AVX512-BF16); int8: weight-only int8 through torchao, activations fp32 (text).")
    compile: bool = option(False, kind="bool", tasks=("text",), label="torch.compile (static KV cache)",
                           help="Compile the decoding step with torch.compile and a static KV cache; the compile "
                                "time is reported apart, like an export.")
    vae_fp32: bool = vae_fp32_option()  # image models in fp16/bf16: keep the VAE in fp32 (fp16 VAEs overflow to black)


class PyTorchBackend(HFBackend):
    """A transformers language model (`load_causal_lm`) or a diffusers pipeline, with greedy `generate`."""

    name = "pytorch"
    preload_modules = ("torch", "transformers.modeling_utils")
    aliases = ("torch",)
    title = "PyTorch"
    Options = PyTorchOptions
    color = "#ee4c2c"

    @classmethod
    def can_be_reference(cls, values: Mapping[str, Any]) -> bool:
        """fp32 in transformers itself: the yardstick every other runtime and precision is judged against."""
        return values.get("precision") == "fp32"

    @classmethod
    def worker_key(cls, values: Mapping[str, Any]) -> str:
        """One worker per device: a CUDA run and a CPU run do not share (nor fight over) one process."""
        return f"{cls.name}-{values['device']}"

    @classmethod
    def machine_facts(cls, env: Mapping[str, Any]) -> dict[str, Any]:
        torch = env.get("torch") or {}
        return {"runtime": f"torch {torch.get('version', 'not installed')} (CUDA build: "
                           f"{torch.get('cuda_build') or 'no'})",
                "gpus": list(torch.get("devices") or []), "cuda": torch.get("cuda_build")}

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:  # noqa: F811 - one label, with compile when on
        parts = [cls.title, values["device"], precision_label(values)]
        if values.get("compile"):
            parts.append("compiled")
        return " · ".join(parts)

    @classmethod
    def collect_facts(cls) -> dict[str, Any]:
        return {"torch": torch_facts(), "cpu": cpu_facts(), "torchao": torchao_facts()}

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("torch", "transformers", "torchao")

    @classmethod
    def availability(cls, env: dict[str, Any]) -> Availability:
        torch_facts = env.get("torch", {})
        if not torch_facts.get("installed"):
            detail = torch_facts.get("error", "torch is not installed.")
            return Availability(False, f"PyTorch cannot be imported ({detail})", TORCH_INSTALL)
        return AVAILABLE

    @classmethod
    def options(cls, env: dict[str, Any]) -> dict[str, list[OptionChoice]]:
        torch_facts = env.get("torch", {})
        if torch_facts.get("cuda_available"):
            cuda = AVAILABLE
        elif torch_facts.get("cuda_build"):
            cuda = Availability(False, f"torch {torch_facts.get('version')} has CUDA {torch_facts['cuda_build']} but "
                                       "sees no GPU (check `nvidia-smi` and the driver).")
        else:
            cuda = Availability(False, f"torch {torch_facts.get('version', '')} is a CPU-only build.",
                                TORCH_CUDA_INSTALL)
        fp16 = AVAILABLE if cuda.ok else Availability(
            False, "fp16 runs on CUDA only (on CPU many PyTorch ops lack fp16 kernels). " + cuda.reason, cuda.install)
        ao = env.get("torchao", {})
        int8 = AVAILABLE if ao.get("installed") else Availability(
            False, f"weight-only int8 needs torchao: {ao.get('error', 'torchao is not installed.')}", TORCHAO_INSTALL)
        return {
            "device": [OptionChoice("cpu", "CPU"), OptionChoice("cuda", "CUDA", cuda)],
            "precision": [OptionChoice("fp32", "fp32"), OptionChoice("bf16", "bf16"),
                          OptionChoice("fp16", "fp16", fp16),
                          OptionChoice("int8", "int8 (weight-only, torchao)", int8)],
        }

    @classmethod
    def check_spec(cls, spec, env, task=None):
        problem = super().check_spec(spec, env, task)
        if problem is None and spec.precision == "fp16" and spec.device != "cuda":
            return "PyTorch fp16 needs device 'cuda': on CPU many ops lack fp16 kernels. Pick fp32 or bf16 on CPU."
        if problem is None and spec.precision == "bf16" and spec.device == "cuda" \
                and not env.get("torch", {}).get("bf16_cuda"):
            return "This GPU has no bf16 support (needs compute capability 8.0 or newer); pick fp16 or fp32."
        return problem

    @staticmethod
    def bf16_note(env_cpu: Mapping[str, Any]) -> str | None:
        """What the panel says about bf16 on this CPU (None when it has native bf16)."""
        if env_cpu.get("bf16_native"):
            return None
        if not env_cpu.get("known"):
            return "bf16 on CPU: could not read the CPU's flags; without AMX or AVX512-BF16 bf16 is emulated (slow)"
        return ("this CPU has no native bf16 (no AMX or AVX512-BF16 in /proc/cpuinfo): bf16 matrix products are "
                "emulated and usually slower than fp32")

    def load(self, model, spec, ctx: LoadContext) -> None:
        import torch

        if model.task == "image" and (spec.precision == "int8" or spec.compile):
            from backends.contract import ArenaError

            raise ArenaError("PyTorch int8 and torch.compile are offered for text models only here; pick fp32, bf16 "
                             "or fp16 for images.")
        threads = torch_threads(ctx.threads)  # the CPU budget, not os.cpu_count() (a container's is often smaller)
        dtype = getattr(torch, TORCH_DTYPES[spec.precision])
        with ctx.stage("load", f"PyTorch: loading {model.model_name} ({spec.device}, {spec.precision})"):
            if model.task == "image":
                from diffusers import DiffusionPipeline

                self.model = DiffusionPipeline.from_pretrained(model.model_dir, dtype=dtype,
                                                               safety_checker=None, requires_safety_checker=False)
                if spec.vae_fp32:
                    self.model.vae.to(torch.float32)  # fp16 VAEs overflow to black images
                self.model.to(spec.device)
                self.model.set_progress_bar_config(disable=True)
                self._dtypes = {"dtype": dtype, "vae_dtype": torch.float32 if spec.vae_fp32 else dtype}
                problems = [dtype_problem(component, self._dtypes["vae_dtype"] if name == "vae" else dtype,
                                          f"{model.model_name}'s {name}")
                            for name, component in self.model.components.items()
                            if isinstance(component, torch.nn.Module)]
            else:
                # dtype explicit: transformers 5 would otherwise load the checkpoint's own (a bf16 checkpoint as bf16)
                self.model = load_causal_lm(model.model_dir, dtype=dtype)
                self.model.to(spec.device)
                self.model.eval()
                problems = [dtype_problem(self.model, dtype, model.model_name)]
        problem = next((p for p in problems if p), None)
        if problem:
            from backends.contract import ArenaError

            raise ArenaError(problem)
        if spec.precision == "bf16" and spec.device == "cpu":
            note = self.bf16_note(cpu_facts())
            ctx.notes.append(note or "bf16 on this CPU's native instructions (AMX/AVX512-BF16)")
        if spec.precision == "int8":
            import contextlib
            import io

            with ctx.stage("load", "PyTorch: weight-only int8 (torchao)"), \
                    contextlib.redirect_stdout(io.StringIO()):
                from torchao.quantization import Int8WeightOnlyConfig, quantize_

                quantize_(self.model, Int8WeightOnlyConfig())
            ctx.notes.append("torchao Int8WeightOnlyConfig: every Linear's weights int8 per channel, activations fp32")
        self._info = {"provider": f"torch {torch.__version__} on {spec.device}"
                                  + (f" ({torch.cuda.get_device_name()})" if spec.device == "cuda" else ""),
                      "artifact_dir": model.model_dir, "export_cached": None, "threads": threads}
        self.device = spec.device
        self.generation_extra = {}
        self._compiled_cache_len = 0
        if spec.compile:
            self._compile(model, ctx)

    def _compile(self, model, ctx: LoadContext) -> None:
        """`generate`'s own auto-compile of the decoding step (transformers compiles it on CUDA by default; on a
        CPU it needs ``_compile_all_devices``), on a static KV cache kept across runs; a first short generation
        compiles it, timed as the "compile" stage."""
        from transformers.generation.configuration_utils import CompileConfig

        from backends.contract import GenerationSettings

        config = CompileConfig(fullgraph=False, mode="default" if self.device == "cpu" else "reduce-overhead")
        config._compile_all_devices = True
        self.generation_extra = {"cache_implementation": "static", "compile_config": config}
        with ctx.stage("compile", "torch.compile: compiling the decoding step (static KV cache)"):
            ids = list(model.prompt_token_ids[:8]) or [0]
            self.generate_text(ids, GenerationSettings(max_new_tokens=3, eos_token_ids=(), pad_token_id=0,
                                                       ignore_eos=True), lambda _token: None)
        ctx.notes.append(f"torch.compile (inductor) with a static KV cache of {self._compiled_cache_len} tokens")

    def generate_text(self, prompt_ids, settings, on_token):
        if self.generation_extra:  # one static cache, grown (and recompiled) only when a run needs more
            need = len(prompt_ids) + settings.max_new_tokens
            if need > self._compiled_cache_len:
                from transformers import StaticCache

                size = max(STATIC_CACHE_MIN, 1 << (need - 1).bit_length())
                config = self.model.config.get_text_config(decoder=True)
                cache = StaticCache(config=config, max_cache_len=size)
                heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
                head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
                cache.early_initialization(1, heads, head_dim, self.model.dtype, self.model.device)
                self.model._cache = cache  # generate() reuses (resets) a cache at least as long as it needs
                self._compiled_cache_len = size
        return super().generate_text(prompt_ids, settings, on_token)

    def layer_units(self) -> list[str]:
        return decoder_units(self.model)

    def layer_outputs(self, token_ids: list[int], units: list[str]) -> dict[str, Any]:
        """Forward hooks on the named modules (a module returning a tuple: its first element)."""
        import torch

        found: dict[str, Any] = {}
        hooks = []
        for unit in units:
            try:
                module = self.model.get_submodule(unit)
            except AttributeError:
                continue

            def keep(_module, _args, output, unit=unit):
                value = output[0] if isinstance(output, tuple) else getattr(output, "logits", output)
                found[unit] = value.detach().float().cpu().numpy()

            hooks.append(module.register_forward_hook(keep))
        try:
            ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
            with torch.inference_mode():
                self.model(input_ids=ids, attention_mask=torch.ones_like(ids))
        finally:
            for hook in hooks:
                hook.remove()
        return found

    def _image_dtypes(self) -> dict[str, Any]:
        return dict(self._dtypes)


ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")  # a decoder layer's attention child
MLP_NAMES = ("mlp", "feed_forward", "ffn")


def decoder_units(model) -> list[str]:
    """A causal LM's units in forward order, by module path: the input embeddings, then per decoder layer its
    attention, its MLP and the layer, then the final norm and the output head. The decoder layers are the
    module list as long as ``config.num_hidden_layers``; attention and MLP are the layer's children with one of
    the `ATTENTION_NAMES` and `MLP_NAMES` (never a norm named after them); the final norm is the last norm-like
    sibling of that list."""
    import torch

    names = {module: name for name, module in model.named_modules()}
    count = getattr(model.config, "num_hidden_layers", None)
    layers = next((name for name, module in model.named_modules()
                   if isinstance(module, torch.nn.ModuleList) and len(module) == count), None)
    if layers is None:
        raise NotImplementedError(f"{type(model).__name__}: no list of {count} decoder layers to compare")
    units = [names[model.get_input_embeddings()]]
    for index, layer in enumerate(model.get_submodule(layers)):
        path = f"{layers}.{index}"
        children = dict(layer.named_children())
        attention = next((n for n in ATTENTION_NAMES if n in children), None)
        mlp = next((n for n in MLP_NAMES if n in children), None)
        units += [f"{path}.{n}" for n in (attention, mlp) if n] + [path]
    parent = layers.rsplit(".", 1)[0] if "." in layers else ""
    siblings = dict(model.get_submodule(parent).named_children()) if parent else dict(model.named_children())
    norm = [n for n in siblings if "norm" in n.lower() or n in ("ln_f",)]
    if norm:
        units.append(f"{parent}.{norm[-1]}" if parent else norm[-1])
    head = model.get_output_embeddings()
    if head is not None and head in names:
        units.append(names[head])
    return units
