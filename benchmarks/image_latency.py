"""Image latency benchmark: the embedded Scenes 64px model through every CPU configuration, interleaved rounds.

    .venv/bin/python benchmarks/image_latency.py [--rounds 5] [--steps 20] [--model KEY] [--markdown FILE]

Each round runs every backend once on the same latents; the table reports medians over rounds (total, UNet loop,
VAE decode), the ratio to PyTorch fp32 from the same run, and each verdict against PyTorch fp32. The options that
are text-only (ONNX Runtime int8 / int4 / int8-dynamic, PyTorch int8) are listed with their one-sentence refusal.
With ``--markdown`` (docs/BENCHMARKS.md, written by text_latency.py) the table goes into its image section.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arena.core import Arena  # noqa: E402
from arena.preparing.catalog import DEFAULT_IMAGE_MODEL, IMAGE_EXAMPLE_PROMPTS  # noqa: E402
from arena.types import BackendSpec, ImageRunRequest  # noqa: E402

CONFIGS = (
    BackendSpec("pytorch", precision="fp32"),
    BackendSpec("pytorch", precision="bf16"),
    BackendSpec("pytorch", precision="int8"),
    BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision="fp32"),
    BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision="fp32", graph_optimization="basic"),
    BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision="fp32", threads="1"),
    BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision="int8"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    parser.add_argument("--prompt", default=IMAGE_EXAMPLE_PROMPTS[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--markdown", type=Path, default=None, help="put the table into this file's image section")
    args = parser.parse_args()

    arena = Arena()
    request = ImageRunRequest(model=args.model, prompt=args.prompt, backends=CONFIGS, steps=args.steps)
    started = time.time()
    warm = arena.run_image_to_end(request)  # exports and loads every backend; not counted
    if warm.error:
        sys.exit(warm.error)
    samples: dict[BackendSpec, list] = {spec: [] for spec in CONFIGS}
    verdicts: dict[BackendSpec, str] = {r.spec: f"refused: {r.error}" for r in warm.results if r.error}
    for _ in range(args.rounds):
        for r in arena.run_image_to_end(request).results:
            if r.timings:
                samples[r.spec].append(r.timings)
            verdicts[r.spec] = f"{r.verdict.kind}: {r.verdict.reason}" if r.verdict else (r.error or "")
    arena.close()

    def med(spec, key):
        return statistics.median(getattr(t, key) for t in samples[spec]) if samples[spec] else float("nan")

    base = med(CONFIGS[0], "total_s")
    lines = [f"{args.model}, {args.steps} steps, {args.rounds} interleaved rounds, medians:", "",
             "| Backend | Total (s) | UNet loop (s) | VAE decode (ms) | Speed vs PyTorch fp32 | Verdict |",
             "|---|---|---|---|---|---|"]
    for spec in CONFIGS:
        if not samples[spec]:
            lines.append(f"| {spec.label} | - | - | - | - | {verdicts.get(spec, '')} |")
            continue
        lines.append(f"| {spec.label} | {med(spec, 'total_s'):.2f} | {med(spec, 'unet_s'):.2f} | "
                     f"{med(spec, 'vae_s') * 1000:.0f} | {base / med(spec, 'total_s'):.2f}x | "
                     f"{verdicts.get(spec, '')} |")
    lines.append(f"\nWall time {time.time() - started:.0f} s; rerun with "
                 "`.venv/bin/python benchmarks/image_latency.py --markdown docs/BENCHMARKS.md`.")
    print("\n".join(lines))
    if args.markdown and args.markdown.is_file():
        text = args.markdown.read_text()
        start, end = "<!-- bench:image:start -->", "<!-- bench:image:end -->"
        if start not in text:
            text += f"\n## Images\n\n{start}\n{end}\n"
        if start in text:
            head, rest = text.split(start, 1)
            args.markdown.write_text(f"{head}{start}\n" + "\n".join(lines) + f"\n{end}{rest.split(end, 1)[1]}")


if __name__ == "__main__":
    main()
