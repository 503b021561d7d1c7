"""The Hugging Face Space build: self-contained requirements files whose pins agree, gradio == the front matter's
sdk_version, a Space's resolution replayed with its whole install line (scripts/space_check.sh --resolve-only:
`pip install -r requirements.txt "gradio[oauth,mcp]==<sdk_version>" "uvicorn>=0.14.0" "websockets>=10.4" spaces`),
binary files under LFS/Xet, the app answering on every interface on a Space."""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT

CPU, GPU, ZEROGPU = ROOT / "requirements.txt", ROOT / "requirements-gpu.txt", ROOT / "requirements-zerogpu.txt"
# Packages that differ between the CPU and the GPU stack on purpose; every other package is in both files, pinned
# to the same version.
RUNTIME_SPECIFIC = {"onnxruntime", "onnxruntime-gpu", "tensorrt-cu13", "onnxruntime-genai", "onnxruntime-genai-cuda"}
LFS_PATTERNS = ["*.safetensors", "*.png", "*.jpg", "*.jpeg", "*.gif", "*.webp", "*.onnx", "*.gguf", "*.bin", "*.pt",
                "*.pth", "*.trt", "*.engine", "*.whl", "*.npz", "*.npy", "*.zip", "*.tar.gz"]


def front_matter(key: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md starts without a front matter"
    values = dict(line.split(":", 1) for line in match.group(1).splitlines() if ":" in line)
    return values[key].strip().strip("\"'")


def requirement_lines(path: Path) -> list[str]:
    lines = [line.split(" #")[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def requirements(path: Path) -> list[Requirement]:
    return [Requirement(line) for line in requirement_lines(path) if not line.startswith("-")]


def pins(path: Path) -> dict[str, str]:
    """name -> the `==` version that applies on this machine (environment markers evaluated)."""
    found = {}
    for req in requirements(path):
        if req.marker is None or req.marker.evaluate():
            found.update({canonicalize_name(req.name): s.version for s in req.specifier if s.operator == "=="})
    return found


@pytest.mark.parametrize("path", [CPU, GPU, ZEROGPU], ids=lambda p: p.name)
def test_requirements_file_is_self_contained_and_pinned(path):
    """A Space copies the file alone into an empty folder: no -r/-c lines; everything pinned; gradio left out."""
    assert not (ROOT / "requirements-base.txt").exists()
    options = [line for line in requirement_lines(path) if line.startswith("-")]
    assert all(line.split()[0] in ("--extra-index-url", "--index-url") for line in options), options
    for req in requirements(path):
        assert canonicalize_name(req.name) != "gradio", "the Space pins gradio itself (README's sdk_version)"
        if req.name == "tensorrt-cu13":  # TensorRT 10.x: any 10.13+ serves ONNX Runtime 1.31's provider
            continue
        assert [s.operator for s in req.specifier] == ["=="], f"{req} is not pinned with =="


def test_cpu_and_gpu_files_pin_the_same_versions():
    cpu = {canonicalize_name(r.name): r for r in requirements(CPU)}
    gpu = {canonicalize_name(r.name): r for r in requirements(GPU)}
    assert set(cpu) - RUNTIME_SPECIFIC == set(gpu) - RUNTIME_SPECIFIC, "a package is in one file only"
    for name in sorted(set(cpu) - RUNTIME_SPECIFIC - {"torch"}):
        assert str(cpu[name].specifier) == str(gpu[name].specifier), f"{name}: {cpu[name]} vs {gpu[name]}"
    # torch: the CPU file has the +cpu build on Linux (PyTorch's CPU index) and PyPI's elsewhere; the same release.
    cpu_torch = {str(s.version).split("+")[0] for r in requirements(CPU) if canonicalize_name(r.name) == "torch"
                 for s in r.specifier}
    assert cpu_torch == {s.version for s in gpu["torch"].specifier}
    assert "onnxruntime" in cpu and "onnxruntime" not in gpu and "onnxruntime-gpu" not in cpu


def test_the_zerogpu_file_is_the_cpu_file_with_pypis_cuda_torch():
    """requirements-zerogpu.txt: every pin of requirements.txt but torch, which is PyPI's (the CUDA build spaces
    needs on ZeroGPU); no PyTorch CPU index; the CPU onnxruntime (no process holds a GPU for its CUDA provider)."""
    cpu = {canonicalize_name(r.name): str(r.specifier) for r in requirements(CPU)}
    zero = {canonicalize_name(r.name): str(r.specifier) for r in requirements(ZEROGPU)}
    assert set(zero) == set(cpu)
    assert {n: v for n, v in zero.items() if n != "torch"} == {n: v for n, v in cpu.items() if n != "torch"}
    assert [str(r) for r in requirements(ZEROGPU) if r.name == "torch"] == ["torch==2.13.0"]
    assert not [line for line in requirement_lines(ZEROGPU) if line.startswith("-")]


def test_no_file_installs_optimum_and_the_gpu_bundle_has_the_same_pins():
    """The stack is transformers 5 without optimum or optimum-onnx (whose only release pins transformers <4.58), in
    every requirements file and in the offline GPU bundle (scripts/build_gpu_wheels.sh), whose pins are
    requirements.txt's."""
    for path in (CPU, GPU, ZEROGPU):
        assert not {canonicalize_name(r.name) for r in requirements(path)} & {"optimum", "optimum-onnx"}, path.name
    script = (ROOT / "scripts" / "build_gpu_wheels.sh").read_text()
    wheels = re.search(r"\nWHEELS=\(\n(.*?)\n\)", script, re.S)
    assert wheels, "build_gpu_wheels.sh has no WHEELS=( ... ) list"
    bundled = {canonicalize_name(r.name): r for r in map(Requirement, wheels.group(1).split())}
    assert not set(bundled) & {"optimum", "optimum-onnx"}
    cpu = pins(CPU)
    assert {"transformers", "tokenizers", "huggingface-hub", "diffusers", "accelerate", "onnxscript"} <= set(bundled)
    for name, req in bundled.items():
        if name in cpu:
            assert [s.version for s in req.specifier] == [cpu[name]], f"{req} vs requirements.txt's {cpu[name]}"


@pytest.mark.parametrize("env, host", [
    ({"SPACE_ID": "someone/backend-arena"}, "0.0.0.0"),
    ({"SPACE_ID": "someone/backend-arena", "GRADIO_SERVER_NAME": "10.1.2.3"}, "10.1.2.3"),
    ({}, "127.0.0.1"),
    ({"GRADIO_SERVER_NAME": "0.0.0.0"}, "0.0.0.0"),
], ids=["space", "space-with-server-name", "local", "local-with-server-name"])
def test_the_app_binds_every_interface_on_a_space(monkeypatch, env, host):
    """A Space's proxy reaches the app from outside its container: with SPACE_ID set, app.py serves on 0.0.0.0
    unless GRADIO_SERVER_NAME says otherwise; off a Space it stays on 127.0.0.1."""
    import app

    for name in ("SPACE_ID", "GRADIO_SERVER_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert app.parse_args([]).host == host


def test_this_environment_has_the_pinned_versions_and_the_spaces_gradio():
    """The tests run with what a Space installs: gradio == README's sdk_version, and the requirements' pins."""
    assert version("gradio") == front_matter("sdk_version")
    try:
        version("onnxruntime-gpu")
        path = GPU
    except PackageNotFoundError:
        path = CPU
    installed = {name: version(name) for name in pins(path)}
    assert installed == pins(path), f"this venv differs from {path.name}: rerun scripts/setup.sh"


def test_setup_installs_the_front_matters_gradio():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert '"gradio==$sdk_version"' in setup and "README.md" in setup


def test_unreachable_indexes_are_dropped_and_said(tmp_path):
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # an index that answers 404 still answers
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # nothing listens there once the socket is closed
    source, target = tmp_path / "req.txt", tmp_path / "out.txt"
    source.write_text(f"--extra-index-url http://127.0.0.1:{server.server_port}/simple\n"
                      f"--extra-index-url=http://127.0.0.1:{closed}/simple\nnumpy==2.4.6\n")
    try:
        out = subprocess.run([sys.executable, str(ROOT / "scripts" / "pip_indexes.py"), str(source), str(target),
                              "--timeout", "3"], capture_output=True, text=True, check=True).stdout
    finally:
        server.shutdown()
    assert out.startswith(f"http://127.0.0.1:{closed}/simple\t") and out.count("\n") == 1
    kept = requirement_lines(target)
    assert kept == [f"--extra-index-url http://127.0.0.1:{server.server_port}/simple", "numpy==2.4.6"]


def pypi_unreachable() -> str | None:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10).close()
        return None
    except (urllib.error.URLError, OSError) as exc:
        return f"PyPI cannot be reached from here ({exc})"


def test_a_space_resolves_requirements_txt(tmp_path):
    """scripts/space_check.sh --resolve-only: the Space's whole line, PyPI only: -r requirements.txt
    "gradio[oauth,mcp]==<sdk_version>" "uvicorn>=0.14.0" "websockets>=10.4" spaces."""
    if reason := pypi_unreachable():
        pytest.skip(reason)
    report = tmp_path / "report.json"
    run = subprocess.run(["bash", str(ROOT / "scripts" / "space_check.sh"), "--resolve-only", "--report", str(report)],
                         capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, SPACE_CHECK_LOG=str(tmp_path / "space-check.log")))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    line = f'gradio[oauth,mcp]=={front_matter("sdk_version")} uvicorn>=0.14.0 websockets>=10.4 spaces'
    assert f"space_check: resolving: pip install -r requirements.txt {line} " in run.stdout
    assert f"space_check: VERIFIED: requirements.txt + {line} resolve from PyPI" in run.stdout
    resolved = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]}
    assert resolved["torch"] == "2.13.0+cpu"
    assert resolved["gradio"] == front_matter("sdk_version")
    assert {name: resolved.get(name) for name in pins(CPU)} == pins(CPU)
    assert not [n for n in resolved if n.startswith("nvidia-") or n == "triton"]
    # one `import onnxruntime`, the CPU package (onnxruntime-genai is another module, on top of it)
    assert [n for n in resolved if n.startswith("onnxruntime") and n != "onnxruntime-genai"] == ["onnxruntime"]
    # gradio's [oauth] and [mcp] extras, and the servers the line names, are part of what a Space installs
    assert {"authlib", "itsdangerous", "mcp", "pydantic", "uvicorn", "websockets", "spaces"} <= set(resolved)
    assert Requirement("pydantic<=2.12.5").specifier.contains(resolved["pydantic"])  # gradio[mcp]'s cap


def test_the_replayed_line_is_the_spaces_line():
    """space_check.sh installs, in full mode too, exactly the line it resolves (one array, used by both)."""
    script = (ROOT / "scripts" / "space_check.sh").read_text()
    assert 'space_extra=("gradio[oauth,mcp]==$sdk" "uvicorn>=0.14.0" "websockets>=10.4" spaces)' in script
    assert script.count('-r requirements.txt "${space_extra[@]}"') == 2  # the resolution and the install
    assert '"gradio==$sdk" spaces' not in script


def tracked_binary_files() -> list[tuple[str, int]]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    binary = []
    for name in filter(None, names.decode().split("\0")):
        path = ROOT / name
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                if b"\0" in f.read(8192):
                    binary.append((name, path.stat().st_size))
    return binary


def lfs_filtered(paths: list[str]) -> dict[str, bool]:
    out = subprocess.run(["git", "check-attr", "-z", "filter", "--", *paths], cwd=ROOT, capture_output=True,
                         check=True).stdout.decode().split("\0")
    return {out[i]: out[i + 2] == "lfs" for i in range(0, len(out) - 2, 3)}


def test_binary_files_are_stored_with_lfs_on_the_hub():
    """The Hub refuses binary files outside LFS/Xet: every tracked binary, large or small, is covered."""
    binary = tracked_binary_files()
    assert binary, "no binary file found: the check itself is broken"
    covered = lfs_filtered([name for name, _ in binary])
    large = [name for name, size in binary if size > 1_000_000]
    assert large, "no binary file over 1 MB found: the check itself is broken"
    assert [name for name in large if not covered[name]] == [], "binary files over 1 MB outside LFS (.gitattributes)"
    assert [name for name, ok in covered.items() if not ok] == [], "binary files outside LFS (.gitattributes)"


def test_every_binary_asset_type_goes_to_lfs():
    names = [f"some/dir/file{pattern[1:]}" for pattern in LFS_PATTERNS]
    covered = lfs_filtered(names)
    assert [n for n, ok in covered.items() if not ok] == []
    assert not any(lfs_filtered(["app.py", "README.md", "requirements.txt"]).values())
