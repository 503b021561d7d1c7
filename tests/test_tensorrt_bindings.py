"""The TensorRT backend against the real TensorRT 10 and 11 Python bindings, on a machine without a GPU.

The ``tensorrt-cu13-bindings`` wheels on PyPI are the real pybind11 modules (1.3 MB each); what they call into
(``libnvinfer`` and friends, GBs) comes from NVIDIA's own index, which is not reachable here. Their C entry points
are nine functions, so this test compiles stand-ins for them that return NULL: the real module then imports, with
its real enums, ``Dims``, ``Logger``, classes, properties and docstring signatures.
tests/support/trt_conformance.py runs the backend's builder set-up, engine build and runner on top of doubles
generated from those classes (details there). It proves the code speaks both versions' Python API; it does not build
or run an engine (that needs a GPU: the gpu-marked tests and scripts/gpu_check.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.helpers import wheel_from_pypi

CACHE = ROOT / ".cache" / "tensorrt-bindings"
VERSIONS = ("10.16.1.11", "11.4.0.106")  # the newest 10.x and 11.x on PyPI when this was written

STUBS = {
    "libnvinfer": """
        void* createInferBuilder_INTERNAL(void* logger, int version) { return 0; }
        void* createInferRefitter_INTERNAL(void* engine, void* logger, int version) { return 0; }
        void* createInferRuntime_INTERNAL(void* logger, int version) { return 0; }
        void* getBuilderPluginRegistry(int capability) { return 0; }
        void* getPluginRegistry(void) { return 0; }""",
    "libnvonnxparser": """
        void* createNvOnnxParser_INTERNAL(void* network, void* logger, int version) { return 0; }
        void* createNvOnnxParserRefitter_INTERNAL(void* refitter, void* logger, int version) { return 0; }
        int getNvOnnxParserVersion(void) { return 0; }""",
    "libnvinfer_plugin": """
        int initLibNvInferPlugins(void* logger, const char* name_space) { return 0; }""",
}


def bindings(version: str) -> tuple[Path, Path]:
    """(folder holding ``tensorrt_bindings``, folder holding the stand-in libraries) for one version."""
    major = version.split(".")[0]
    home = CACHE / version
    stubs = hashlib.sha256(json.dumps(STUBS, sort_keys=True).encode()).hexdigest()[:12]
    libs = home / f"lib-{stubs}"  # rebuilt when the stand-ins change
    package = wheel_from_pypi(f"tensorrt-cu13-bindings=={version}", home, "tensorrt_bindings")
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler to build the stand-in TensorRT libraries (apt install gcc)")
    libs.mkdir(parents=True, exist_ok=True)
    for name, source in STUBS.items():
        target = libs / f"{name}.so.{major}"
        if not target.exists():
            src = libs / f"{name}.c"
            src.write_text(source)
            subprocess.run([compiler, "-shared", "-fPIC", "-o", str(target), f"-Wl,-soname,{target.name}",
                            str(src)], check=True, capture_output=True, timeout=120)
    return package, libs


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_speaks_the_real_tensorrt_bindings(version):
    package, libs = bindings(version)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package), str(ROOT)]),
               LD_LIBRARY_PATH=os.pathsep.join(filter(None, [str(libs), os.environ.get("LD_LIBRARY_PATH")])))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "trt_conformance.py")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["version"] == version
    assert report["problems"] == []
    assert len(report["checks"]) == 11, report["checks"]
