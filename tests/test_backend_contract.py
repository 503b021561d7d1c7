"""Every registered backend against the same contract (tests/support/backend_contract.py), on a tiny Llama and a tiny
Stable Diffusion pipeline built here. A backend's class below says which specs to run; GPU options are exercised
where a GPU exists, else skipped with the reason. Adding a backend: one class here, or in the backend's own test
file (tests/test_<name>_backend.py: a server backend's, next to its server fixtures); the meta-test asks for it."""

from __future__ import annotations

import ast
from pathlib import Path

from arena.registry import BACKENDS, backend_class
from arena.types import BackendSpec
from tests.support import ROOT
from tests.support.backend_contract import BackendContract


class TestPyTorch(BackendContract):
    backend = "pytorch"
    cpu_spec = {}
    cuda_spec = {"device": "cuda"}


class TestOnnxRuntime(BackendContract):
    backend = "onnxruntime"
    cpu_spec = {"provider": "CPUExecutionProvider"}
    cuda_spec = {"provider": "CUDAExecutionProvider"}


class TestTensorRT(BackendContract):
    backend = "tensorrt"
    cpu_spec = {}  # TensorRT has no CPU mode: it runs where CUDA does
    cuda_spec = {}
    gpu_only = True


class TestOnnxRuntimeGenAI(BackendContract):
    backend = "onnxruntime-genai"
    cpu_spec = {"precision": "fp32"}  # the model builder's fp32 CPU build of the tiny Llama (its own tests: int8/int4)
    supports_image = False
    unavailable_env = {"onnxruntime_genai": {"installed": False}}


def contract_classes() -> dict[str, str]:
    """{backend: "file::Class"} for every class in tests/test_*.py that takes `BackendContract` and names its
    ``backend`` (read from the source: the meta-test needs no import of a backend's test file)."""
    found = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", getattr(b, "attr", None)) == "BackendContract"
                                                      for b in node.bases):
                for item in node.body:
                    if (isinstance(item, ast.Assign) and any(getattr(t, "id", None) == "backend"
                                                              for t in item.targets)
                            and isinstance(item.value, ast.Constant)):
                        found[item.value.value] = f"{path.name}::{node.name}"
    return found


def test_every_registered_backend_has_a_contract_test_class():
    covered = contract_classes()
    assert {"pytorch", "onnxruntime", "tensorrt"} <= set(covered), covered
    missing = sorted(set(BACKENDS) - set(covered))
    assert not missing, (f"registered backend(s) {missing} have no contract test: add a class "
                         "`class TestX(BackendContract): backend = ...` to tests/test_backend_contract.py or to "
                         "the backend's own tests/test_<name>_backend.py")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions ("from backends import x" gives backends.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_backend_imports_another_backend_or_the_worker_machinery():
    """A backend is a module (backends/x.py) or a package (backends/x/: its modules import each other freely)."""
    backend_modules = {".".join(target.partition(":")[0].split(".")[:2]) for target in BACKENDS.values()}

    def owner(module: str) -> str | None:
        return next((b for b in backend_modules if module == b or module.startswith(b + ".")), None)

    problems = []
    for path in sorted((ROOT / "backends").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        imports = imported_modules(path)
        if "arena.running.workers" in imports:
            problems.append(f"{module} imports arena.running.workers (use ctx.run_isolated)")
        others = sorted({owner(m) for m in imports if owner(m)} - {owner(module)})
        if others:
            problems.append(f"{module} imports the backend module(s) {others} (shared code belongs in "
                            "backends/contract.py, backends/hf.py, backends/conversion/ or backends/installs.py)")
    assert not problems, "\n".join(problems)
    assert backend_modules <= {".".join(p.relative_to(ROOT).with_suffix("").parts)
                               for p in (ROOT / "backends").glob("*.py")} | {
        f"backends.{p.parent.name}" for p in (ROOT / "backends").glob("*/__init__.py")}


def test_the_ui_names_no_backend():
    source = (ROOT / "ui" / "controls.py").read_text()
    named = [name for name in BACKENDS if f'"{name}"' in source or f"'{name}'" in source]
    assert not named, f"ui/controls.py names {named}: build widgets from the backend's Options instead"


def test_cpu_only_machine_explains_gpu_options():
    cpu_env = {"torch": {"installed": True, "version": "2.13.0+cpu", "cuda_build": None, "cuda_available": False},
               "onnxruntime": {"installed": True, "version": "1.32.0", "providers": ["CPUExecutionProvider"]},
               "onnx_exporter": {"installed": True}}
    problem = backend_class("pytorch").check_spec(BackendSpec("pytorch", device="cuda"), cpu_env)
    assert "CPU-only build" in problem and "pip install" in problem
    problem = backend_class("onnxruntime").check_spec(
        BackendSpec("onnxruntime", provider="TensorrtExecutionProvider"), cpu_env)
    assert "no TensorRT provider" in problem and "onnxruntime-gpu" in problem
    problem = backend_class("onnxruntime").check_spec(BackendSpec("onnxruntime", precision="int8",
                                                                  provider="CUDAExecutionProvider"), cpu_env)
    assert "CUDA provider" in problem
    problem = backend_class("pytorch").check_spec(BackendSpec("pytorch", precision="fp16"), cpu_env)
    assert "fp16" in problem
    missing = {"torch": {"installed": False, "error": "ModuleNotFoundError: No module named 'torch'"},
               "onnxruntime": {"installed": False}}
    assert "pip install torch==2.13.0" in backend_class("pytorch").check_spec(BackendSpec("pytorch"), missing)
    assert "pip install onnxruntime" in backend_class("onnxruntime").check_spec(BackendSpec("onnxruntime"), missing)
    # onnxruntime without the dynamo exporter: an existing export still runs, an export to make says what to install
    no_exporter = {**cpu_env, "onnx_exporter": {"installed": False, "missing": "onnxscript",
                                                "install": "pip install onnxscript==0.7.2 onnx==1.23.2"}}
    problem = backend_class("onnxruntime").check_spec(BackendSpec("onnxruntime", provider="CPUExecutionProvider"),
                                                      no_exporter)
    assert "onnxscript" in problem and "pip install onnxscript" in problem
    assert backend_class("onnxruntime").check_spec(
        BackendSpec("onnxruntime", provider="CPUExecutionProvider", onnx_dir="/some/export"), no_exporter) is None
