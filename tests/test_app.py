"""The launched app: the /compare_text API through gradio_client, and what the UI process has imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from gradio_client import Client

from arena.registry import backend_choices
from tests.support import ROOT

HEAVY = ("torch", "transformers", "onnxruntime", "optimum", "tensorrt")
PROMPT = "Why should one run machine learning models on-premises?"


def test_building_the_ui_imports_no_heavy_module(session_cache):
    code = (
        "import sys, json\n"
        "from arena.core import Arena\n"
        "from ui import build_ui\n"
        f"demo = build_ui(Arena(cache_dir={str(session_cache)!r}))\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_compare_text_api_returns_identical_answers_and_reuses_the_export(app_server):
    client = Client(app_server["url"], verbose=False)
    first = client.predict(prompt=PROMPT, backends=["pytorch", "onnxruntime"], api_name="/compare_text")
    assert first["error"] is None
    torch_result, ort_result = first["results"]
    assert torch_result["text"].strip() and ort_result["text"].strip()
    assert torch_result["token_ids"] == ort_result["token_ids"]
    assert ort_result["provider"] == "CPUExecutionProvider"
    assert torch_result["timings"]["tokens_per_s"] > 0 and ort_result["timings"]["ttft_s"] > 0
    assert first["model"]["source"] == "embedded"

    second = client.predict(prompt=PROMPT, backends=[{"backend": "onnxruntime"}], api_name="/compare_text")
    assert second["results"][0]["export_cached"] is True
    assert second["results"][0]["token_ids"] == ort_result["token_ids"]

    # After real runs the UI process still holds no torch, transformers or onnxruntime: they live in its workers.
    diagnostics = client.predict(api_name="/diagnostics")
    assert diagnostics["pid"] == app_server["pid"] and diagnostics["heavy_modules"] == []
    assert {"prepare", "pytorch-cpu", "onnxruntime"} <= set(diagnostics["workers"])
    app = psutil.Process(app_server["pid"])
    mapped = Path(f"/proc/{app.pid}/maps").read_text()
    assert "libtorch" not in mapped and "onnxruntime" not in mapped
    children = app.children(recursive=True)
    assert any("libtorch" in Path(f"/proc/{c.pid}/maps").read_text() for c in children)


def test_api_bad_input_is_a_clear_message(app_server):
    client = Client(app_server["url"], verbose=False)
    bad_backend = client.predict(prompt="hi", backends=["tensorflow"], api_name="/compare_text")
    assert bad_backend["error"] == f"Unknown backend 'tensorflow': choose {backend_choices()}."
    missing = client.predict(prompt="hi", model="/does/not/exist", api_name="/compare_text")
    assert missing["error"] == "The local directory '/does/not/exist' does not exist."
    empty = client.predict(prompt="", api_name="/compare_text")
    assert empty["error"].startswith("The prompt is empty")


@pytest.mark.slow
def test_compare_image_api_draws_the_prompt_with_the_default_model(app_server):
    """The issue's acceptance check: the embedded model, "a red circle on a blue background", seed 0, both
    backends: a red shape region on a blue background in both images, at least 35 dB apart."""
    import numpy as np
    from PIL import Image

    from arena.judging.image_metrics import psnr
    from arena.preparing.catalog import IMAGE_CATALOG
    from arena.preparing.scenes import Scene, score_image

    entry = IMAGE_CATALOG[0]
    client = Client(app_server["url"], verbose=False)
    gallery, result = client.predict(prompt="a red circle on a blue background", backends="pytorch,onnxruntime",
                                     negative_prompt="", steps=entry.steps, guidance_scale=entry.guidance_scale,
                                     seed=0, height=0, width=0, api_name="/compare_image")
    assert result["error"] is None and all(r["error"] is None for r in result["results"]), result
    assert result["model"]["source"] == "embedded"
    assert [g["caption"] for g in gallery] == [r["label"] for r in result["results"]]
    images = [np.asarray(Image.open(g["image"]).convert("RGB")) for g in gallery]
    for image in images:
        assert image.shape == (64, 64, 3)
        assert score_image(image, Scene("circle", "red", "blue")) == {"shape_color": "red",
                                                                      "background_color": "blue", "ok": True}
    assert psnr(images[0], images[1]) >= 35 and result["results"][1]["psnr_vs_reference_db"] >= 35
    assert [r["verdict"]["kind"] for r in result["results"]] == ["MATCH", "MATCH"]
    timings = result["results"][0]["timings"]
    assert len(timings["step_times_s"]) == entry.steps and timings["unet_s"] > 0 and timings["vae_s"] > 0
    bad = client.predict(prompt="", backends="pytorch", negative_prompt="", steps=5, guidance_scale=4.0, seed=0,
                         height=0, width=0, api_name="/compare_image")
    assert bad[0] == [] and bad[1]["error"].startswith("The prompt is empty")


def test_sigterm_mid_run_ends_the_workers_and_what_they_started(tmp_path):
    """A Space restart or `docker stop` sends SIGTERM while a worker is busy (an export with its own child
    process): app.py's handler ends the process like Ctrl-C, so the core's shutdown kills the worker and its
    child; without it the worker would sleep on, orphaned, for its whole call."""
    import os
    import signal
    import time

    code = (
        "import threading, time\n"
        "import app\n"
        "app.stop_on_sigterm()\n"
        "from arena.core import Arena\n"
        f"arena = Arena(cache_dir={str(tmp_path / 'cache')!r}, environment={{}})\n"
        "worker = arena.workers.get('toy', 'tests.support.helpers:Toy')\n"
        "print(worker.call('pid'), flush=True)\n"
        f"threading.Thread(target=worker.call, args=('sleep_with_child', 120, {str(tmp_path / 'child')!r}),\n"
        "                 daemon=True).start()\n"
        "try:\n"
        "    while True:\n"
        "        time.sleep(0.1)  # like Gradio's block_thread\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    worker_pid = int(process.stdout.readline())
    child_file = tmp_path / "child"
    deadline = time.monotonic() + 60
    while not (child_file.is_file() and child_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child_pid = int(child_file.read_text())
    os.kill(process.pid, signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0 and "interrupted" in out
    _, alive = psutil.wait_procs([psutil.Process(p) for p in (worker_pid, child_pid) if psutil.pid_exists(p)],
                                 timeout=5)
    assert not alive, alive
