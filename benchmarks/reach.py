"""What the long reach costs: the default text run (PyTorch and ONNX Runtime, fp32) with the long reach off and at
1,024, 2,048 and 4,096 positions, interleaved in one process with warm workers; medians and the difference from
"off", with the candidate's own share (its full pass and its KV-cache tail) as its worker measured it.

    .venv/bin/python benchmarks/reach.py [--rounds 2] [--reaches 0,1024,2048,4096] [--markdown docs/reach-benchmark.md]

The reference teacher-forces the paragraph and the long text once (a full pass, its distributions kept compact:
top-64 per position); each candidate runs its own full pass, then a prefill of all but the last 32 positions and
32 one-token steps through its KV cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reaches", default="0,1024,2048,4096")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    reaches = [int(r) for r in args.reaches.split(",")]

    from arena.core import Arena
    from arena.preparing.catalog import EXAMPLE_PROMPTS
    from arena.types import TextRunRequest

    def request(reach: int) -> TextRunRequest:
        return TextRunRequest(prompt=EXAMPLE_PROMPTS[0], max_new_tokens=24, warmup=0, localize="off", reach=reach)

    arena = Arena()
    times: dict[int, list[float]] = {r: [] for r in reaches}
    candidate: dict[int, list[tuple[float, float]]] = {r: [] for r in reaches}
    loads = []
    try:
        arena.run_text_to_end(request(0))  # materialize, export and load once, untimed
        for _ in range(args.rounds):
            for reach in reaches:
                loads.append(os.getloadavg()[0])
                if hasattr(arena, "forget_judging"):
                    arena.forget_judging()  # judged from scratch, not from the figures kept by the last round
                start = time.perf_counter()
                result = arena.run_text_to_end(request(reach))
                times[reach].append(time.perf_counter() - start)
                quality = result.results[1].verdict.metrics.get("quality") or {}
                cached = ((quality.get("sequences") or {}).get("long text") or {}).get("cached") or {}
                candidate[reach].append((quality.get("seconds", 0.0), cached.get("seconds", 0.0)))
                print(f"reach {reach}: {times[reach][-1]:.1f} s ({result.results[1].verdict.kind})", flush=True)
    finally:
        arena.close()
    off = statistics.median(times[reaches[0]])
    lines = ["| Long reach (positions) | Median run (s) | Cost over off (s) | Candidate's teacher forcing (s) | "
             "of which its KV-cache tail (s) |", "|---|---|---|---|---|"]
    for reach in reaches:
        run = statistics.median(times[reach])
        full = statistics.median(c[0] for c in candidate[reach])
        tail = statistics.median(c[1] for c in candidate[reach])
        lines.append(f"| {reach or 'off (512-position paragraph)'} | {run:.1f} | {run - off:+.1f} | {full:.1f} | "
                     f"{tail:.1f} |")
    lines += ["", f"Default model (SmolLM2-135M-Instruct), 24 new tokens, PyTorch + ONNX Runtime fp32 on CPU; "
              f"{args.rounds} interleaved rounds on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, 1-minute "
              f"load average {min(loads):.1f} to {max(loads):.1f} during the runs."]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("# The cost of the long reach\n\nWritten by `benchmarks/reach.py`.\n\n"
                                 + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
