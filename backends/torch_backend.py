"""Hugging Face transformers in PyTorch: the reference backend (CPU or CUDA; fp32, bf16, fp16 on CUDA)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backends.base import (
    AVAILABLE,
    Availability,
    BackendOptions,
    HFBackend,
    LoadContext,
    OptionChoice,
    option,
    precision_label,
    torch_facts,
    torch_threads,
    vae_fp32_option,
)
from backends.installs import TORCH_CUDA_INSTALL, TORCH_INSTALL

TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class PyTorchOptions(BackendOptions):
    device: str = option("cpu", choices=("cpu", "cuda"), gpu_only_values=("cuda",),
                         help="Where the model runs.")
    precision: str = option("fp32", choices=("fp32", "bf16", "fp16"), gpu_only_values=("fp16",),
                            help="The weights' dtype (fp16 on CUDA only).")
    vae_fp32: bool = vae_fp32_option()  # image models in fp16/bf16: keep the VAE in fp32 (fp16 VAEs overflow to black)


class PyTorchBackend(HFBackend):
    """`AutoModelForCausalLM` with greedy `generate`."""

    name = "pytorch"
    aliases = ("torch",)
    title = "PyTorch"
    Options = PyTorchOptions

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        return " · ".join((cls.title, values["device"], precision_label(values)))

    @classmethod
    def collect_facts(cls) -> dict[str, Any]:
        return {"torch": torch_facts()}

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("torch", "transformers")

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
        return {
            "device": [OptionChoice("cpu", "CPU"), OptionChoice("cuda", "CUDA", cuda)],
            "precision": [OptionChoice("fp32", "fp32"), OptionChoice("bf16", "bf16"),
                          OptionChoice("fp16", "fp16", fp16)],
        }

    @classmethod
    def check_spec(cls, spec, env):
        problem = super().check_spec(spec, env)
        if problem is None and spec.precision == "fp16" and spec.device != "cuda":
            return "PyTorch fp16 needs device 'cuda': on CPU many ops lack fp16 kernels. Pick fp32 or bf16 on CPU."
        if problem is None and spec.precision == "bf16" and spec.device == "cuda" \
                and not env.get("torch", {}).get("bf16_cuda"):
            return "This GPU has no bf16 support (needs compute capability 8.0 or newer); pick fp16 or fp32."
        return problem

    def load(self, model, spec, ctx: LoadContext) -> None:
        import torch

        threads = torch_threads()  # the CPU budget, not os.cpu_count() (a container's quota is often smaller)
        dtype = getattr(torch, TORCH_DTYPES[spec.precision])
        with ctx.stage("load", f"PyTorch: loading {model.model_name} ({spec.device}, {spec.precision})"):
            if model.task == "image":
                from diffusers import DiffusionPipeline

                self.model = DiffusionPipeline.from_pretrained(model.model_dir, torch_dtype=dtype,
                                                               safety_checker=None, requires_safety_checker=False)
                if spec.vae_fp32:
                    self.model.vae.to(torch.float32)  # fp16 VAEs overflow to black images
                self.model.to(spec.device)
                self.model.set_progress_bar_config(disable=True)
                self._dtypes = {"dtype": dtype, "vae_dtype": torch.float32 if spec.vae_fp32 else dtype}
            else:
                from transformers import AutoModelForCausalLM

                self.model = AutoModelForCausalLM.from_pretrained(model.model_dir, dtype=dtype)
                self.model.to(spec.device)
                self.model.eval()
        self._info = {"provider": f"torch {torch.__version__} on {spec.device}"
                                  + (f" ({torch.cuda.get_device_name()})" if spec.device == "cuda" else ""),
                      "artifact_dir": model.model_dir, "export_cached": None, "threads": threads}
        self.device = spec.device

    def _image_dtypes(self) -> dict[str, Any]:
        return dict(self._dtypes)
