"""Text latency benchmark: the embedded model through every configuration, interleaved rounds, medians.

    .venv/bin/python benchmarks/text_latency.py [--device cpu|gpu|llamacpp] [--rounds 5] [--max-new-tokens 64]
                                                [--model KEY] [--markdown FILE]

``--device gpu`` compares PyTorch CUDA fp32/fp16/bf16, ONNX Runtime CUDA and TensorRT providers and the native
TensorRT backend; ``--device llamacpp`` puts llama.cpp on the embedded model's own Q4_1 GGUF next to PyTorch fp32
and ONNX Runtime fp32 (CPU). Configurations this machine cannot run are listed as "not run" with the reason.
``--model`` takes a local folder too (scripts/gpu_check.py passes a SmolLM2-shaped model with random weights where
the embedded one cannot travel).

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

CONFIGS = {
    "cpu": (
        BackendSpec("pytorch", precision="fp32"),
        BackendSpec("pytorch", precision="bf16"),
        BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision="fp32"),
        BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision="int8"),
    ),
    "gpu": (
        BackendSpec("pytorch", device="cuda", precision="fp32"),
        BackendSpec("pytorch", device="cuda", precision="fp16"),
        BackendSpec("pytorch", device="cuda", precision="bf16"),
        BackendSpec("onnxruntime", provider="CUDAExecutionProvider", precision="fp32"),
        BackendSpec("onnxruntime", provider="TensorrtExecutionProvider", precision="fp16"),
        BackendSpec("tensorrt", precision="fp16"),
    ),
    "llamacpp": (
        BackendSpec("pytorch", precision="fp32"),
        BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision="fp32"),
        BackendSpec("llamacpp"),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_TEXT_MODEL)
    parser.add_argument("--prompt", default=EXAMPLE_PROMPTS[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", choices=sorted(CONFIGS), default="cpu")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()
    configs = CONFIGS[args.device]

    arena = Arena()
    env = arena.environment()
    request = TextRunRequest(model=args.model, prompt=args.prompt, backends=configs,
                             max_new_tokens=args.max_new_tokens, ignore_eos=True, warmup=1, repeats=1)
    print(f"# {args.model}, {args.max_new_tokens} new tokens (EOS ignored), {args.rounds} interleaved rounds",
          flush=True)
    print(f"# {platform.processor() or platform.machine()}, {env.get('cpu_count')} cores, "
          f"torch {env['torch'].get('version')}, onnxruntime {env['onnxruntime'].get('version')}"
          + (f", llama-cpp-python {env.get('llama_cpp', {}).get('version')}" if args.device == "llamacpp" else ""),
          flush=True)
    started = time.time()
    warm = arena.run_text_to_end(request)  # exports, loads and warms every backend; not timed below
    if warm.error:
        sys.exit(warm.error)
    print(f"# prompt: {len(warm.prepared.prompt_token_ids)} tokens", flush=True)
    load = {r.spec: r.load for r in warm.results}
    reference_ids = warm.results[0].token_ids
    samples: dict[BackendSpec, list] = {spec: [] for spec in configs}
    agreement: dict[BackendSpec, float] = {}
    errors: dict[BackendSpec, str] = {r.spec: r.error for r in warm.results if r.error}
    # PyTorch precisions on one device share a worker, which reloads the model for each: on a GPU, one untimed
    # 2-token warm-up after each reload keeps lazy CUDA set-up out of the timed run.
    quick = dataclasses.replace(request, warmup=1 if args.device == "gpu" else 0)
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

    base = med(configs[0], "decode_tokens_per_s")
    reference = configs[0].label
    lines = [f"| Backend | TTFT (ms) | Decode tok/s | Total (s) | vs {reference} | Tokens equal to {reference} "
             "| Worker RSS (MB) | GPU memory (MB) | Export / quantize (s) | Engine build (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for spec in configs:
        if spec in errors and not samples[spec]:
            lines.append(f"| {spec.label} | not run: {errors[spec].splitlines()[0]} | | | | | | | | |")
            continue
        info = load.get(spec)
        export = "-" if info.export_cached is None else ("cached" if info.export_cached else f"{info.export_s:.1f}")
        gpu = f"{info.gpu_memory_mb:.0f}" if info.gpu_memory_mb else "-"
        build = f"{info.engine_build_s:.1f}" if info.engine_build_s else "-"
        lines.append(f"| {spec.label} | {med(spec, 'ttft_s') * 1000:.0f} | {med(spec, 'decode_tokens_per_s'):.1f} | "
                     f"{med(spec, 'total_s'):.2f} | {med(spec, 'decode_tokens_per_s') / base:.2f}x | "
                     f"{agreement.get(spec, 0) * 100:.0f}% | {info.memory_mb:.0f} | {gpu} | {export} | {build} |")
    verdicts = [f"- {r.spec.label}: {r.verdict.kind if r.verdict else '-'}"
                f"{': ' + r.verdict.reason if r.verdict else ''}; load {r.load.load_s:.2f} s"
                f"{'; ' + ' '.join(r.load.notes) if r.load.notes else ''}"
                for r in warm.results if r.load is not None]
    table = "\n".join(lines) + "\n\nVerdicts of the warm-up run (against " + reference + "):\n" + "\n".join(verdicts)
    print("\n" + table)
    print(f"\n# wall time {time.time() - started:.0f} s")
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
