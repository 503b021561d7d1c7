"""The GPU check: on a CUDA machine, run the GPU-marked tests and a short benchmark, and write a Markdown report.

    .venv/bin/python scripts/gpu_check.py [--out docs/gpu-report.md] [--rounds 3] [--max-new-tokens 64]
    python3 scripts/gpu_check.py --offline .gpu-bundle      # a GPU machine without network (below)

What it runs:
1. the facts of the machine (GPU, driver, torch/CUDA, onnxruntime providers, TensorRT);
2. ``pytest -m gpu`` on the test files that hold GPU tests: every GPU test with its outcome and the figures it
   recorded (token agreement, logits error, PSNR, SSIM, GPU memory); a skip is reported as NOT VERIFIED with its
   reason;
3. ``benchmarks/text_latency.py --device gpu``: PyTorch CUDA fp32, fp16 and bf16, ONNX Runtime CUDA and TensorRT
   providers, the native TensorRT backend; configurations that cannot run here are listed as not verified;
4. with CUDA, the peak GPU memory of the benchmark model per precision (weights, then a whole generation).
Exit status: 1 when a test failed, else 0. Nothing is ever reported as passed unless it ran and passed.

Offline (``--offline BUNDLE``, the folder scripts/build_gpu_wheels.sh makes): for a GPU machine that has its own
torch but no network and other versions of the Hugging Face stack. The bundle's wheels (transformers 5.25,
tokenizers, huggingface-hub 2.x and its httpx2, diffusers, accelerate, onnxscript, kernels) are installed with
``--no-deps`` into a private folder (``--target``) that goes first on PYTHONPATH for this process and every process
it starts (pytest, the arena's spawned workers, the benchmark), so the machine's own packages, torch above all, are
never touched. The embedded SmolLM2 (a 98 MB GGUF) does not travel: the benchmark runs a model with SmolLM2-135M's exact
config and tokenizer (from the bundle) and seeded random weights, made here; speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.running.environment import probe_environment  # noqa: E402
from backends.onnxruntime.providers import provider_summary  # noqa: E402

# What the bundle must provide, as import name -> distribution name (checked to come from the private folder).
BUNDLED = {"transformers": "transformers", "tokenizers": "tokenizers", "huggingface_hub": "huggingface-hub",
           "diffusers": "diffusers", "accelerate": "accelerate", "onnxscript": "onnxscript", "httpx2": "httpx2",
           "kernels": "kernels"}
# The machine's own (never installed by the check).
MACHINE = {"torch": "torch", "numpy": "numpy", "onnx": "onnx", "onnxruntime": "onnxruntime",
           "safetensors": "safetensors", "skimage": "scikit-image"}
NEVER_BUNDLED = ("torch", "nvidia", "onnxruntime", "tensorrt", "triton")
TEST_TIMEOUT_S, BENCHMARK_TIMEOUT_S, PROBE_TIMEOUT_S = 270, 110, 60  # under 8 minutes in all


def say(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the offline bundle -------------------------------------------------------------------------------------
def install_bundle(bundle: Path, target: Path) -> list[str]:
    """Install the bundle's wheels into ``target`` (emptied first) and put it first on PYTHONPATH for this process
    and its children. Returns the wheel file names."""
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    if not wheels:
        sys.exit(f"No wheels in {bundle / 'wheels'}: build the bundle with `bash scripts/build_gpu_wheels.sh`.")
    wrong = [w.name for w in wheels if w.name.lower().startswith(NEVER_BUNDLED)]
    if wrong:
        sys.exit(f"The bundle must not carry the machine's own runtime: {', '.join(wrong)}.")
    shutil.rmtree(target, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--disable-pip-version-check", "--target", str(target),
                           *map(str, wheels)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"Installing the bundle failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    say(f"installed {len(wheels)} wheels into {target} in {time.time() - started:.0f} s")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.path.insert(0, str(target))
    # No hub in reach: every model here is local; fail fast instead of waiting on the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return [w.name for w in wheels]


def stack_versions(target: Path | None) -> dict[str, dict[str, str]]:
    """Version and origin ("bundle" or "machine") of each package the arena imports, read in a fresh process
    with this process's PYTHONPATH (what pytest, the workers and the benchmark see)."""
    code = (
        "import importlib, importlib.metadata as md, json, sys\n"
        f"names = {json.dumps({**BUNDLED, **MACHINE})}\n"
        "out = {}\n"
        "for module, dist in names.items():\n"
        "    try:\n"
        "        m = importlib.import_module(module)\n"
        "        where = getattr(m, '__file__', None) or ' '.join(getattr(m, '__path__', []))  # namespace packages\n"
        "        out[module] = {'dist': dist, 'version': md.version(dist), 'file': where}\n"
        "    except Exception as exc:\n"
        "        out[module] = {'dist': dist, 'error': f'{type(exc).__name__}: {exc}'}\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0 or not done.stdout.strip():
        sys.exit(f"Could not read the package versions:\n{done.stderr[-3000:]}")
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    for fact in facts.values():
        fact["origin"] = "bundle" if target and fact.get("file", "").startswith(str(target)) else "machine"
    if target is not None:
        misplaced = [f"{m} ({f.get('error') or f['file']})" for m, f in facts.items()
                     if m in BUNDLED and f["origin"] != "bundle"]
        if misplaced:
            sys.exit("The bundle does not win over the machine's packages: " + "; ".join(misplaced))
    return facts


def stack_line(facts: dict[str, dict[str, str]]) -> str:
    shown = []
    for fact in facts.values():
        what = f"{fact['dist']} {fact['version']}" if "version" in fact else f"{fact['dist']}: {fact['error']}"
        shown.append(f"{what} ({fact['origin']})")
    return ", ".join(shown)


# --- the throughput model -------------------------------------------------------------------------------------
def build_shaped_model(shape_dir: Path, out: Path, seed: int = 0) -> Path:
    """A causal LM with the config and tokenizer in ``shape_dir`` and seeded random weights, saved to ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(shape_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()  # float32
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(shape_dir).save_pretrained(out)
    return out


def shape_line(model_dir: Path) -> str:
    config = json.loads((model_dir / "config.json").read_text())
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
            "vocab_size", "tie_word_embeddings", "rope_theta", "max_position_embeddings")
    rope = config.get("rope_parameters") if isinstance(config.get("rope_parameters"), dict) else {}
    # transformers 5 writes rope_theta inside rope_parameters (4.x wrote it at the top level)
    return ", ".join(f"{k} {config.get(k, rope.get(k))}" for k in keys)


def memory_probe(model_dir: str, max_new_tokens: int) -> None:
    """(In its own process.) Per precision on CUDA: torch's GPU memory after loading and the peak during one greedy
    generation of ``max_new_tokens`` from the benchmark prompt. Prints one JSON line."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arena.preparing.catalog import EXAMPLE_PROMPTS

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": EXAMPLE_PROMPTS[0]}], add_generation_prompt=True,
                                        return_tensors="pt")
    ids = (ids["input_ids"] if hasattr(ids, "keys") else ids).to("cuda")
    rows = {}
    for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to("cuda").eval()
        torch.cuda.synchronize()
        weights = torch.cuda.memory_allocated()
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                           min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        torch.cuda.synchronize()
        rows[precision] = {"loaded_mb": weights / 2**20, "peak_mb": torch.cuda.max_memory_allocated() / 2**20,
                           "reserved_mb": torch.cuda.max_memory_reserved() / 2**20}
        del model
    free, total = torch.cuda.mem_get_info()
    print(json.dumps({"rows": rows, "prompt_tokens": int(ids.shape[1]), "device_used_mb": (total - free) / 2**20}))


# --- running things ---------------------------------------------------------------------------------------------
def run_streamed(cmd: list[str], timeout: float, prefix: str) -> tuple[int | None, str]:
    """Run ``cmd`` in its own process group, echoing its output line by line; kill the whole group (the arena's
    workers included) after ``timeout`` seconds. Returns (exit code or None on timeout, the output)."""
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines: list[str] = []

    def pump() -> None:
        for line in process.stdout:
            lines.append(line)
            print(f"{prefix}{line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: int | None = process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        code = None
    reader.join(5)
    return code, "".join(lines)


def gpu_test_files() -> list[str]:
    """The test files holding GPU tests (others may import what a GPU machine lacks, e.g. gradio): those marking
    tests `gpu` themselves, and those whose classes take the shared backend contract (its GPU variant is marked)."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if ("mark.gpu" in (text := p.read_text()) or "tests.support.backend_contract import" in text)
                  and "import gradio" not in text)


def run_gpu_tests(report: Path) -> tuple[list[dict], str]:
    """Every GPU-marked test (from pytest's JUnit XML): test id, outcome, reason, recorded figures; and pytest's
    last line."""
    import xml.etree.ElementTree as ET

    report.unlink(missing_ok=True)
    files = gpu_test_files()
    say(f"pytest -m gpu {' '.join(files)}")
    code, output = run_streamed([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                                 "--continue-on-collection-errors",
                                 "-o", "junit_family=legacy", f"--junitxml={report}", *files], TEST_TIMEOUT_S,
                                "  | ")
    rows = []
    if report.is_file():
        for case in ET.parse(report).getroot().iter("testcase"):
            row = {"test": f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}", "outcome": "PASSED",
                   "reason": "", "figures": {p.get("name"): p.get("value") for p in case.iter("property")}}
            for tag in ("skipped", "failure", "error"):
                found = case.find(tag)
                if found is not None:
                    row["outcome"] = {"skipped": "SKIPPED", "failure": "FAILED", "error": "ERROR"}[tag]
                    row["reason"] = (found.get("message") or "").replace("\n", " ").replace("|", "/")
            rows.append(row)
        report.unlink()
    lines = output.strip().splitlines() or ["(no output)"]
    summary = f"stopped after {TEST_TIMEOUT_S} s" if code is None else lines[-1]
    return rows, summary


def run_benchmark(rounds: int, max_new_tokens: int, table_path: Path, model: str) -> tuple[str, list[str]]:
    """The benchmark's Markdown table (or why it failed) and its '#' header lines."""
    table_path.unlink(missing_ok=True)
    say(f"benchmarks/text_latency.py --device gpu --model {model}")
    code, output = run_streamed([sys.executable, "benchmarks/text_latency.py", "--device", "gpu", "--rounds",
                                 str(rounds), "--max-new-tokens", str(max_new_tokens), "--model", model,
                                 "--markdown", str(table_path)], BENCHMARK_TIMEOUT_S, "  > ")
    notes = [line[2:] for line in output.splitlines() if line.startswith("# ") and not line.startswith("# round")]
    if code != 0 or not table_path.is_file():
        how = f"stopped after {BENCHMARK_TIMEOUT_S} s" if code is None else f"exit {code}"
        return f"The benchmark failed ({how}):\n\n```\n{output[-2000:]}\n```", notes
    table = table_path.read_text()
    table_path.unlink()
    return table, notes


def run_memory_probe(model_dir: Path, max_new_tokens: int) -> dict | str:
    code, output = run_streamed([sys.executable, str(Path(__file__).resolve()), "--memory-probe", str(model_dir),
                                 "--max-new-tokens", str(max_new_tokens)], PROBE_TIMEOUT_S, "  ~ ")
    found = [line for line in output.splitlines() if line.startswith("{")]
    if code != 0 or not found:
        return f"the memory probe failed ({'timeout' if code is None else f'exit {code}'}): {output[-500:]}"
    return json.loads(found[-1])


# --- the report -------------------------------------------------------------------------------------------------
def machine_lines(env: dict) -> list[str]:
    torch, ort, trt = env.get("torch", {}), env.get("onnxruntime", {}), env.get("tensorrt", {})
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, check=False) if _has("nvidia-smi") else None
    gpus = smi.stdout.strip().splitlines() if smi and smi.returncode == 0 else []
    header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False) if gpus else None
    driver_cuda = next((part.split(":")[1].strip(" |") for part in (header.stdout if header else "").split("  ")
                        if part.strip().startswith("CUDA Version")), None)
    gpu_line = "; ".join(gpus) if gpus else "none found (nvidia-smi absent or failed)"
    return [
        f"- GPU: {gpu_line}" + (f" (name, driver, memory); the driver supports CUDA {driver_cuda}"
                                if driver_cuda else ""),
        f"- CPU: {env.get('cpu_count')} cores, {env.get('memory_gb')} GiB; {env.get('platform')}; "
        f"Python {env.get('python')}",
        f"- torch {torch.get('version')} (CUDA build {torch.get('cuda_build')}, CUDA available: "
        f"{torch.get('cuda_available')}, devices: {torch.get('devices')}, bf16: {torch.get('bf16_cuda')})",
        f"- onnxruntime {ort.get('version')} providers: {provider_summary(ort)}",
        *(f"  - {name}: {status['reason']}" for name, status in ort.get("provider_status", {}).items()
          if not status.get("ok")),
        f"- TensorRT: {trt.get('version') if trt.get('installed') else 'not installed'}",
    ]


def _has(command: str) -> bool:
    return shutil.which(command) is not None


def figures_text(figures: dict[str, str]) -> str:
    return "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in figures.items() if k != "provider").replace("|", "/")


def memory_lines(probe: dict | str | None) -> list[str]:
    if probe is None:
        return ["Not measured: CUDA is not available here."]
    if isinstance(probe, str):
        return [probe]
    return [
        f"torch's allocator in a fresh process, the benchmark model, a {probe['prompt_tokens']}-token prompt and "
        "the same number of new tokens as the benchmark (CUDA context not included; the benchmark's GPU memory "
        "column is the whole device after loading, context included).",
        "",
        "| Precision | After loading (MB) | Peak during generation (MB) | Peak reserved (MB) |",
        "|---|---|---|---|",
        *(f"| {p} | {r['loaded_mb']:.0f} | {r['peak_mb']:.0f} | {r['reserved_mb']:.0f} |"
          for p, r in probe["rows"].items()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "gpu-report.md")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--offline", type=Path, default=None, metavar="BUNDLE",
                        help="install the bundle's wheels privately first (scripts/build_gpu_wheels.sh)")
    parser.add_argument("--target", type=Path, default=Path(tempfile.gettempdir()) / "arena-gpu-site",
                        help="the private folder for the bundle's packages (emptied first)")
    parser.add_argument("--model", default=None, help="benchmark model (default: the embedded SmolLM2, or offline "
                        "the SmolLM2-shaped random model)")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe, args.max_new_tokens)
        return

    started = time.time()
    wheels = install_bundle(args.offline, args.target) if args.offline else []
    stack = stack_versions(args.target if args.offline else None)
    say("stack: " + stack_line(stack))
    env = probe_environment()
    if "probe_error" in env:
        sys.exit(env["probe_error"])
    cuda = bool(env.get("torch", {}).get("cuda_available"))
    say(f"environment probed; CUDA available: {cuda}")

    tests, summary = run_gpu_tests(args.out.with_suffix(".junit.xml"))

    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    model, model_note, model_dir = args.model, None, None
    shape = args.offline / "smollm2-shape" if args.offline else None
    if model is None and shape is not None and (shape / "config.json").is_file():
        model_dir = build_shaped_model(shape, scratch / "smollm2-shaped")
        model = str(model_dir)
        model_note = ("SmolLM2-135M's architecture with seeded random weights (the embedded model's 98 MB GGUF "
                      f"cannot travel to this machine; speed does not depend on the weights): {shape_line(model_dir)}; "
                      "its tokenizer and chat template. With random weights the outputs are noise, so the verdicts "
                      "and the tokens-equal column say nothing about correctness here (the tests above do).")
    elif model is None:
        from arena.preparing.catalog import DEFAULT_TEXT_MODEL

        model = DEFAULT_TEXT_MODEL
    table, bench_notes = run_benchmark(args.rounds, args.max_new_tokens, args.out.with_suffix(".table.md"), model)
    probe = run_memory_probe(model_dir or Path(model), args.max_new_tokens) if cuda and (
        model_dir or Path(model).is_dir()) else (None if not cuda else "Not measured: the benchmark model is not a "
                                                 "local folder.")
    shutil.rmtree(scratch, ignore_errors=True)

    ort, trt = env.get("onnxruntime", {}), env.get("tensorrt", {})
    not_verified = [f"- `{t['test']}`: {t['reason'] or 'skipped'}" for t in tests if t["outcome"] == "SKIPPED"]
    not_verified += [f"- benchmark {row.split('|')[1].strip()}: {row.split('not run:')[1].split(' | ')[0].strip()}"
                     for row in table.splitlines() if "not run:" in row]
    runtimes = []
    if "CUDAExecutionProvider" not in ort.get("providers", []):
        runtimes.append(f"onnxruntime-gpu is not installed here (onnxruntime {ort.get('version')} is the CPU "
                        "package), so the ONNX Runtime CUDA and TensorRT providers did not run")
    if not trt.get("installed"):
        runtimes.append("TensorRT is not installed here, so the native TensorRT backend did not run")
    if runtimes and args.offline:
        runtimes.append("this machine has no network and only the bundle's wheels could be brought to it; "
                        "onnxruntime-gpu and TensorRT with their CUDA libraries (gigabytes) are not in it")
    failed = [t for t in tests if t["outcome"] in ("FAILED", "ERROR")]
    lines = [
        "# GPU check report",
        "",
        f"Written by `scripts/gpu_check.py{' --offline' if args.offline else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {time.time() - started:.0f} s, on "
        + (f"a CUDA machine ({env['torch']['devices'][0]['name']})." if cuda else "a machine without CUDA."),
        "",
        "## Machine",
        *machine_lines(env),
        f"- Packages: {stack_line(stack)}",
        *([f"- Offline bundle ({len(wheels)} wheels, installed with `--no-deps` into a private folder first on "
           f"PYTHONPATH; the machine's own torch untouched): {', '.join(wheels)}"] if wheels else []),
        "",
        "## GPU-marked tests",
        f"pytest: {summary}",
        "",
        "| Test | Outcome | Figures | Reason |",
        "|---|---|---|---|",
        *[f"| `{t['test']}` | {'not verified (skipped)' if t['outcome'] == 'SKIPPED' else t['outcome'].lower()} | "
          f"{figures_text(t['figures'])} | {t['reason'][:300]} |" for t in tests],
        "",
        f"## Throughput: {args.max_new_tokens} new tokens, {args.rounds} interleaved rounds (medians)",
        "",
        *([model_note, ""] if model_note else []),
        *([f"Benchmark: {'; '.join(bench_notes)}", ""] if bench_notes else []),
        "\n".join(row.split("not run:")[0] + "not run (reason below) | | | | | | | | |" if "not run:" in row
                  else row for row in table.strip().splitlines()),
        "",
        "## GPU memory",
        "",
        *memory_lines(probe),
        "",
        "## Failed on this machine",
        *([f"- `{t['test']}`: {t['reason'][:1000]}" for t in failed] or ["- nothing"]),
        "",
        "## Not verified on this machine",
        *([f"- ONNX Runtime GPU providers and TensorRT: {'; '.join(runtimes)}."] if runtimes else []),
        *(not_verified or ["- nothing: every GPU path ran"]),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
