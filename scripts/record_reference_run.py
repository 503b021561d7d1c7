"""Record the run that ships with the repo and is shown on page load (assets/reference-run/).

    .venv/bin/python scripts/record_reference_run.py

A real comparison of the default models (PyTorch and ONNX Runtime, default prompts), with the machine it ran on.
Server paths and log tails are left out: the files are shown to every visitor of a public deployment.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.core import Arena  # noqa: E402
from arena.preparing.catalog import DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL, EXAMPLE_PROMPTS, IMAGE_EXAMPLE_PROMPTS  # noqa: E402
from arena.types import BackendSpec, ImageRunRequest, TextRunRequest  # noqa: E402

OUT = ROOT / "assets" / "reference-run"
BACKENDS = (BackendSpec("pytorch"), BackendSpec("onnxruntime"))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def scrub(run: dict) -> dict:
    """No server paths or logs in a file every visitor sees."""
    if run.get("model"):
        run["model"]["dir"] = None
    for result in run["results"]:
        result["log_tail"] = ""
        if result.get("load"):
            result["load"]["artifact_dir"] = None
    return run


def main() -> None:
    arena = Arena()
    env = arena.environment()
    versions = env.get("versions", {})
    machine = {"cpu": cpu_name(), "cores": env.get("cpu_count"), "memory_gb": env.get("memory_gb"),
               "python": env.get("python"), "versions": {k: v for k, v in versions.items() if v}}
    machine["summary"] = (f"{machine['cores']} cores of {machine['cpu']}, {machine['memory_gb']} GB RAM "
                          f"(torch {versions.get('torch')}, onnxruntime {versions.get('onnxruntime')})")
    date = time.strftime("%Y-%m-%d")
    OUT.mkdir(parents=True, exist_ok=True)
    text = arena.run_text_to_end(TextRunRequest(model=DEFAULT_TEXT_MODEL, prompt=EXAMPLE_PROMPTS[0],
                                                backends=BACKENDS))
    if text.error or any(r.error for r in text.results):
        sys.exit(f"The text run failed: {text.error or [r.error for r in text.results]}")
    (OUT / "text.json").write_text(json.dumps({"date": date, "machine": machine, "run": scrub(text.to_dict())},
                                              indent=1, default=str))
    image = arena.run_image_to_end(ImageRunRequest(model=DEFAULT_IMAGE_MODEL, prompt=IMAGE_EXAMPLE_PROMPTS[0],
                                                   backends=BACKENDS))
    if image.error or any(r.error for r in image.results):
        sys.exit(f"The image run failed: {image.error or [r.error for r in image.results]}")
    from PIL import Image

    names = []
    for result in image.results:
        name = f"image-{result.spec.backend}.png"
        Image.fromarray(result.image).save(OUT / name)
        names.append(name)
    (OUT / "image.json").write_text(json.dumps({"date": date, "machine": machine, "images": names,
                                                "run": scrub(image.to_dict())}, indent=1, default=str))
    arena.close()
    for result in text.results + image.results:
        print(f"{result.spec.label}: {result.verdict.kind} — {result.verdict.reason}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
