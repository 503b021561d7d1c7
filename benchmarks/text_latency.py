"""Text latency benchmark: the embedded model through every CPU configuration, interleaved rounds, medians.

    .venv/bin/python benchmarks/text_latency.py [--rounds 5] [--max-new-tokens 64] [--model KEY]

Each round runs every backend once on the same token ids (ABCD ABCD ...), so slow drifts of a shared machine
hit every backend alike; the table reports medians over rounds and ratios to PyTorch fp32 from the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arena.catalog import DEFAULT_TEXT_MODEL, EXAMPLE_PROMPTS  # noqa: E402
from arena.core import Arena  # noqa: E402
from arena.types import BackendSpec, TextRunRequest  # noqa: E402

CONFIGS = (
    BackendSpec("pytorch", precision="fp32"),
    BackendSpec("pytorch", precision="bf16"),
    BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision="fp32"),
    BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision="int8"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_TEXT_MODEL)
    parser.add_argument("--prompt", default=EXAMPLE_PROMPTS[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    arena = Arena()
    env = arena.environment()
    request = TextRunRequest(model=args.model, prompt=args.prompt, backends=CONFIGS,
                             max_new_tokens=args.max_new_tokens, ignore_eos=True, warmup=1, repeats=1)
    print(f"# {args.model}, {args.max_new_tokens} new tokens (EOS ignored), {args.rounds} interleaved rounds",
          flush=True)
    print(f"# {platform.processor() or platform.machine()}, {env.get('cpu_count')} cores, "
          f"torch {env['torch'].get('version')}, onnxruntime {env['onnxruntime'].get('version')}", flush=True)
    started = time.time()
    warm = arena.run_text_to_end(request)  # exports, loads and warms every backend; not timed below
    if warm.error:
        sys.exit(warm.error)
    load = {r.spec: r.load for r in warm.results}
    reference_ids = warm.results[0].token_ids
    samples: dict[BackendSpec, list] = {spec: [] for spec in CONFIGS}
    agreement: dict[BackendSpec, float] = {}
    errors: dict[BackendSpec, str] = {r.spec: r.error for r in warm.results if r.error}
    quick = dataclasses.replace(request, warmup=0)
    for round_index in range(args.rounds):
        result = arena.run_text_to_end(quick)
        for r in result.results:
            if r.error:
                errors[r.spec] = r.error
                continue
            samples[r.spec].append(r.timings)
            same = sum(a == b for a, b in zip(r.token_ids, reference_ids, strict=False))
            agreement[r.spec] = same / max(len(reference_ids), 1)
        print(f"# round {round_index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    arena.close()

    def med(spec, key):
        return statistics.median(getattr(t, key) for t in samples[spec]) if samples[spec] else float("nan")

    base = med(CONFIGS[0], "decode_tokens_per_s")
    print()
    print("| Backend | TTFT (ms) | Decode tok/s | Total (s) | vs PyTorch fp32 | Tokens equal to PyTorch fp32 "
          "| Worker RSS (MB) | Export / quantize (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in CONFIGS:
        if spec in errors and not samples[spec]:
            print(f"| {spec.label} | error: {errors[spec][:80]} | | | | | | |")
            continue
        info = load.get(spec)
        export = "-" if info.export_cached is None else ("cached" if info.export_cached else f"{info.export_s:.1f}")
        print(f"| {spec.label} | {med(spec, 'ttft_s') * 1000:.0f} | {med(spec, 'decode_tokens_per_s'):.1f} | "
              f"{med(spec, 'total_s'):.2f} | {med(spec, 'decode_tokens_per_s') / base:.2f}x | "
              f"{agreement.get(spec, 0) * 100:.0f}% | {info.memory_mb:.0f} | {export} |")
    print(f"\n# wall time {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
