"""What "where did it break" costs: the default text run (PyTorch and ONNX Runtime, fp32) with and without
localization, interleaved in one process with warm workers; medians and the difference.

    .venv/bin/python benchmarks/localize.py [--rounds 3] [--markdown docs/localize-benchmark.md]

Localization is one forward pass over the prompt in the reference (forward hooks) and one in the candidate (a
copy of its ONNX graph with every unit's output marked), compared in the UI process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()

    from arena.core import Arena
    from arena.preparing.catalog import EXAMPLE_PROMPTS
    from arena.types import TextRunRequest

    arena = Arena()
    try:
        base = TextRunRequest(prompt=EXAMPLE_PROMPTS[0], max_new_tokens=24, warmup=0)
        arena.run_text_to_end(base)  # materialize, export and load once, untimed
        times: dict[bool, list[float]] = {False: [], True: []}
        units = None
        for _ in range(args.rounds):
            for localize in (False, True):  # "off" against "all" (the candidate is fine: "auto" would skip it)
                start = time.perf_counter()
                result = arena.run_text_to_end(TextRunRequest(prompt=EXAMPLE_PROMPTS[0], max_new_tokens=24,
                                                              warmup=0, localize="all" if localize else "off"))
                times[localize].append(time.perf_counter() - start)
                where = result.results[1].verdict.metrics.get("where")
                if localize and where:
                    units = len(where["per_unit"])
    finally:
        arena.close()
    off, on = statistics.median(times[False]), statistics.median(times[True])
    lines = ["| Run (default model, 24 tokens, PyTorch + ONNX Runtime fp32) | Median wall time (s) |", "|---|---|",
             f"| without localization | {off:.2f} |", f"| with localization ({units} units) | {on:.2f} |",
             f"| localization's cost | {on - off:.2f} |", "",
             f"{args.rounds} interleaved rounds on {time.strftime('%Y-%m-%d')}; every round: "
             + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(times[False], times[True], strict=True)) + " s."]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("# The cost of localization\n\nWritten by `benchmarks/localize.py`.\n\n"
                                 + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
