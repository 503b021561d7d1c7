"""Score the embedded image model's prompt-following on held-out scenes it never saw in training.

    .venv/bin/python scripts/score_image_model.py --model assets/image-model [--count 200] [--grid docs/x.png]

For each held-out (color, shape, background) combination drawn with a random size and position, the prompt is
rendered by the PyTorch pipeline (seeded) and judged by `arena.preparing.scenes.score_image`: the median color
inside the shape's core must be the named color and the median color away from the shape the background color.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arena.preparing.scenes import random_scene, score_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("assets/image-model"))
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--held-out", action=argparse.BooleanOptionalAction, default=True,
                        help="score held-out combinations (default) or training ones")
    parser.add_argument("--grid", type=Path, default=None, help="save a grid of the first 24 images here")
    parser.add_argument("--json", type=Path, default=None, help="write the score and every verdict here")
    args = parser.parse_args()

    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(args.model, dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    rng = random.Random(args.seed)
    scenes = [random_scene(rng, held_out=args.held_out) for _ in range(args.count)]
    verdicts, images = [], []
    start = time.time()
    batch = 8
    for i in range(0, len(scenes), batch):
        chunk = scenes[i:i + batch]
        generator = [torch.Generator().manual_seed(args.seed + i + j) for j in range(len(chunk))]
        out = pipe([s.describe() for s in chunk], num_inference_steps=args.steps, guidance_scale=args.guidance,
                   generator=generator, output_type="np", height=64, width=64).images
        for scene, image in zip(chunk, out, strict=True):
            pixels = (image * 255).round().astype(np.uint8)
            images.append(pixels)
            verdicts.append({"prompt": scene.describe(), **score_image(pixels, scene)})
    seconds = time.time() - start
    score = sum(v["ok"] for v in verdicts) / len(verdicts)
    shape_ok = sum(v["shape_color"] == s.color for v, s in zip(verdicts, scenes, strict=True)) / len(verdicts)
    bg_ok = sum(v["background_color"] == s.background for v, s in zip(verdicts, scenes, strict=True)) / len(verdicts)
    print(f"{'held-out' if args.held_out else 'training'} prompts: {len(verdicts)}, score {score:.1%} "
          f"(shape color {shape_ok:.1%}, background {bg_ok:.1%}), {seconds / len(verdicts):.2f} s/image "
          f"({args.steps} steps, guidance {args.guidance})")
    for v in verdicts[:10]:
        print(f"  {'ok ' if v['ok'] else 'BAD'} {v['prompt']} -> {v['shape_color']} on {v['background_color']}")
    if args.grid:
        from PIL import Image

        tiles = images[:24] + [np.zeros_like(images[0])] * max(0, 24 - len(images))
        rows = [np.concatenate(tiles[r * 8:(r + 1) * 8], axis=1) for r in range(3)]
        Image.fromarray(np.concatenate(rows, axis=0)).resize((8 * 128, 3 * 128), Image.NEAREST).save(args.grid)
    if args.json:
        args.json.write_text(json.dumps({"score": score, "shape_color": shape_ok, "background": bg_ok,
                                         "count": len(verdicts), "steps": args.steps, "guidance": args.guidance,
                                         "seconds_per_image": seconds / len(verdicts), "verdicts": verdicts},
                                        indent=2))


if __name__ == "__main__":
    main()
