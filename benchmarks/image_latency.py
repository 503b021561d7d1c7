"""Image latency benchmark: the embedded Scenes 64px model through every CPU configuration, interleaved rounds.

    .venv/bin/python benchmarks/image_latency.py [--rounds 5] [--steps 20] [--model KEY]

Each round runs every backend once on the same latents; the table reports medians over rounds (total, UNet loop,
VAE decode), the ratio to PyTorch fp32 from the same run, and each verdict against PyTorch fp32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arena.catalog import DEFAULT_IMAGE_MODEL, IMAGE_EXAMPLE_PROMPTS  # noqa: E402
from arena.core import Arena  # noqa: E402
from arena.types import BackendSpec, ImageRunRequest  # noqa: E402

CONFIGS = (
    BackendSpec("pytorch", precision="fp32"),
    BackendSpec("pytorch", precision="bf16"),
    BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision="fp32"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    parser.add_argument("--prompt", default=IMAGE_EXAMPLE_PROMPTS[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    arena = Arena()
    request = ImageRunRequest(model=args.model, prompt=args.prompt, backends=CONFIGS, steps=args.steps)
    started = time.time()
    warm = arena.run_image_to_end(request)  # exports and loads every backend; not counted
    if warm.error:
        sys.exit(warm.error)
    samples: dict[BackendSpec, list] = {spec: [] for spec in CONFIGS}
    verdicts: dict[BackendSpec, str] = {}
    for _ in range(args.rounds):
        for r in arena.run_image_to_end(request).results:
            if r.timings:
                samples[r.spec].append(r.timings)
            verdicts[r.spec] = f"{r.verdict.kind}: {r.verdict.reason}" if r.verdict else (r.error or "")
    arena.close()

    def med(spec, key):
        return statistics.median(getattr(t, key) for t in samples[spec]) if samples[spec] else float("nan")

    base = med(CONFIGS[0], "total_s")
    print(f"# {args.model}, {args.steps} steps, {args.rounds} interleaved rounds, medians\n")
    print("| Backend | Total (s) | UNet loop (s) | VAE decode (ms) | Speed vs PyTorch fp32 | Verdict |")
    print("|---|---|---|---|---|---|")
    for spec in CONFIGS:
        print(f"| {spec.label} | {med(spec, 'total_s'):.2f} | {med(spec, 'unet_s'):.2f} | "
              f"{med(spec, 'vae_s') * 1000:.0f} | {base / med(spec, 'total_s'):.2f}x | {verdicts.get(spec, '')} |")
    print(f"\n# wall time {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
