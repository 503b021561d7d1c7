"""Install commands more than one backend names in its "unavailable here" sentences (pinned in one place), and
the installed versions of packages (cache keys and reports)."""

import importlib.metadata

TORCH_INSTALL = "pip install torch==2.13.0"
TORCH_CUDA_INSTALL = ("pip install --force-reinstall torch==2.13.0 --index-url https://pypi.org/simple  # PyPI's "
                      "Linux x86_64 wheel is the CUDA 13 build; needs an NVIDIA GPU and a driver for CUDA 13")
# torch.onnx's dynamo exporter (the ONNX export every ONNX Runtime and TensorRT run here starts from).
ONNX_EXPORTER_INSTALL = "pip install onnxscript==0.7.2 onnx==1.23.2"


def dist_versions(*names: str) -> dict[str, str | None]:
    """{distribution: its installed version, or None}: what a cache key or a report records of the stack."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out
