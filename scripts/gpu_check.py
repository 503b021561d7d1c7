"""The GPU check: on a CUDA machine, run the GPU-marked tests and a short benchmark, and write a Markdown report.

    .venv/bin/python scripts/gpu_check.py [--out docs/gpu-report.md] [--rounds 3] [--max-new-tokens 64]

What it runs:
1. the facts of the machine (GPU, driver, torch/CUDA, onnxruntime providers, TensorRT);
2. ``pytest -m gpu``: every GPU test with its outcome; a skip is reported with its reason as NOT VERIFIED;
3. ``benchmarks/text_latency.py --device gpu``: PyTorch CUDA fp32 and fp16, ONNX Runtime CUDA and TensorRT
   providers, the native TensorRT backend; configurations that cannot run here are listed as not verified.
Exit status: 1 when a test failed, else 0. Nothing is ever reported as passed unless it ran and passed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.environment import probe_environment, provider_summary  # noqa: E402


def machine_lines(env: dict) -> list[str]:
    torch, ort, trt = env.get("torch", {}), env.get("onnxruntime", {}), env.get("tensorrt", {})
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, check=False) if _has("nvidia-smi") else None
    gpus = smi.stdout.strip().splitlines() if smi and smi.returncode == 0 else []
    return [
        f"- GPU: {'; '.join(gpus) if gpus else 'none found (nvidia-smi absent or failed)'}",
        f"- CPU: {env.get('cpu_count')} cores, {env.get('memory_gb')} GiB; {env.get('platform')}",
        f"- torch {torch.get('version')} (CUDA build {torch.get('cuda_build')}, CUDA available: "
        f"{torch.get('cuda_available')}, devices: {torch.get('devices')})",
        f"- onnxruntime {ort.get('version')} providers: {provider_summary(ort)}",
        *(f"  - {name}: {status['reason']}" for name, status in ort.get("provider_status", {}).items()
          if not status.get("ok")),
        f"- TensorRT: {trt.get('version') if trt.get('installed') else 'not installed'}",
    ]


def _has(command: str) -> bool:
    from shutil import which

    return which(command) is not None


def run_gpu_tests(report: Path) -> tuple[list[tuple[str, str, str]], str]:
    """(test id, outcome, reason) for every GPU-marked test (from pytest's JUnit XML), and pytest's last line."""
    import xml.etree.ElementTree as ET

    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={report}"], cwd=ROOT, capture_output=True, text=True, check=False)
    rows = []
    if report.is_file():
        for case in ET.parse(report).getroot().iter("testcase"):
            test = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
            outcome, reason = "PASSED", ""
            for tag in ("skipped", "failure", "error"):
                found = case.find(tag)
                if found is not None:
                    outcome = {"skipped": "SKIPPED", "failure": "FAILED", "error": "ERROR"}[tag]
                    reason = (found.get("message") or "").replace("\n", " ").replace("|", "/")
            rows.append((test, outcome, reason))
        report.unlink()
    summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    return rows, summary


def run_benchmark(rounds: int, max_new_tokens: int, table_path: Path) -> str:
    done = subprocess.run([sys.executable, "benchmarks/text_latency.py", "--device", "gpu", "--rounds", str(rounds),
                           "--max-new-tokens", str(max_new_tokens), "--markdown", str(table_path)],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not table_path.is_file():
        return f"The benchmark failed (exit {done.returncode}):\n\n```\n{done.stderr[-2000:]}\n```"
    return table_path.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "gpu-report.md")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    started = time.time()
    env = probe_environment()
    tests, summary = run_gpu_tests(args.out.with_suffix(".junit.xml"))
    table = run_benchmark(args.rounds, args.max_new_tokens, args.out.with_suffix(".table.md"))
    args.out.with_suffix(".table.md").unlink(missing_ok=True)
    not_verified = [f"- `{test}`: {reason or 'skipped'}" for test, outcome, reason in tests if outcome == "SKIPPED"]
    not_verified += [f"- benchmark {row.split('|')[1].strip()}: {row.split('not run:')[1].split(' | ')[0].strip()}"
                     for row in table.splitlines() if "not run:" in row]
    lines = [
        "# GPU check report",
        "",
        f"Written by `scripts/gpu_check.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"in {time.time() - started:.0f} s.",
        "",
        "## Machine",
        *machine_lines(env),
        "",
        "## GPU-marked tests",
        f"pytest: {summary}",
        "",
        "| Test | Outcome | Reason |",
        "|---|---|---|",
        *[f"| `{test}` | {'not verified (skipped)' if outcome == 'SKIPPED' else outcome.lower()} | "
          f"{reason[:120]} |" for test, outcome, reason in tests],
        "",
        f"## Benchmark: embedded text model, {args.max_new_tokens} new tokens, {args.rounds} interleaved rounds "
        "(medians)",
        "",
        "\n".join(row.split("not run:")[0] + "not run (reason below) | | | | | | | | |" if "not run:" in row
                  else row for row in table.strip().splitlines()),
        "",
        "## Not verified on this machine",
        *(not_verified or ["- nothing: every GPU path ran"]),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    sys.exit(1 if any(outcome in ("FAILED", "ERROR") for _, outcome, _ in tests) else 0)


if __name__ == "__main__":
    main()
