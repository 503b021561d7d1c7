"""Which of today's architectures each ONNX exporter covers, measured: writes docs/exporters.md.

The matrix of tests/test_architectures.py (the architectures of `tests.support.architectures`, tiny random models built
from transformers' own config classes), with its figures: each architecture exported by torch.onnx's dynamo exporter and
by ONNX Runtime GenAI's model builder, run by the arena's own loop and compared with the PyTorch fp32 reference.

    .venv/bin/python scripts/exporter_coverage.py [--out docs/exporters.md] [--only KEY ...] [--workers 2]

Prints the table and writes the page (1 to 4 minutes on 2 shared cores). No network.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.support.architectures import (  # noqa: E402 - after the path set-up
    ALL,
    ANSWER_TOKENS,
    BY_KEY,
    EXPORTERS,
    KNOWN_FAILURES,
    NOTES,
    PROMPT,
    WINDOW,
    Cell,
    judge_cell,
    prepare_all,
    reference,
    versions,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch.onnx colours its messages
MARK = {"pass": "✅ pass", "refused": "⛔ refused", "fail": "❌ fail"}
TITLE = {"dynamo": "torch.onnx (dynamo)", "genai-builder": "GenAI model builder (fp32)"}


def run(keys: list[str], workers: int) -> tuple[list[Cell], float, int]:
    """Every cell of ``keys`` x `EXPORTERS`, in a temporary folder; the seconds it took and the prompt's length in
    tokens (one tokenizer for all)."""
    start = time.perf_counter()
    cells, prompt_tokens = [], 0
    with tempfile.TemporaryDirectory(prefix="exporter-coverage-") as tmp:
        futures = prepare_all(keys, tmp, workers)
        try:
            for key in keys:
                exported = futures[key].result()
                ref = reference(Path(tmp) / key / "model")
                prompt_tokens = len(ref["prompt"])
                for exporter in EXPORTERS:
                    cell = judge_cell(key, exported[exporter], ref)
                    for attribute in ("refused", "error"):  # the builder names the folder: not the page's business
                        if getattr(cell, attribute):
                            setattr(cell, attribute, getattr(cell, attribute).replace(tmp, "<tmp>"))
                    cells.append(cell)
                    print(f"{key:18} {exporter:14} {cell.outcome:8} {brief(cell)}", flush=True)
        finally:
            futures["pool"].shutdown(wait=True, cancel_futures=True)
    return cells, time.perf_counter() - start, prompt_tokens


def brief(cell: Cell) -> str:
    if cell.figures:
        f = cell.figures
        return (f"max|Δlogit| {f['logits']['max_abs']:.2g}, first step {f['first_step']['max_abs']:.2g}, "
                f"decode KL {f['decode']['kl']:.2g} (max {f['decode']['kl_max']:.2g}), top-1 {f['decode']['top1']:.0%}")
    return (cell.refused or cell.error or "")[:160]


def cell_text(text: str) -> str:
    """Text fit for one Markdown line (and table cell): no terminal colours, no bars, no line breaks."""
    return ANSI.sub("", text).replace("|", "\\|").replace("\n", " ").strip()


def page(cells: list[Cell], seconds: float, prompt_tokens: int) -> str:
    from arena.judging.verdicts import POSITION_KL, SAME_PRECISION_FLOOR, TEXT_TOLERANCES

    abs_tol, rel_tol = TEXT_TOLERANCES["fp32"]
    min_top1, max_kl = SAME_PRECISION_FLOOR["fp32"]
    by = {(c.architecture, c.exporter): c for c in cells}
    keys = list(dict.fromkeys(c.architecture for c in cells))
    counts = {e: sum(by[k, e].outcome == "pass" for k in keys) for e in EXPORTERS}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# ONNX exporters: which of today's architectures they cover (measured)",
        "",
        "The ONNX Runtime backend has two exporters (its `exporter` option, "
        "[backends/conversion/onnx_export.py](../backends/conversion/onnx_export.py)): torch.onnx's dynamo exporter "
        "(`dynamo`, the default) and ONNX Runtime GenAI's model builder at fp32 (`genai-builder`). This page is what "
        "each does with today's architectures, measured: tiny random models built from transformers' own config "
        "classes ([tests/support/architectures.py](../tests/support/architectures.py): 2 layers, hidden size 64, "
        "each architecture's "
        "own quirks kept), exported, run by the arena's own loop "
        "([backends/loops.py](../backends/loops.py)) and compared with the PyTorch fp32 reference. The same matrix "
        "is a test, [tests/test_architectures.py](../tests/test_architectures.py).",
        "",
        f"Generated {stamp} by `scripts/exporter_coverage.py` in {seconds / 60:.1f} min "
        f"({platform.machine()}, {os.cpu_count()} CPU cores). Versions: "
        + ", ".join(f"{name} {version}" for name, version in versions().items() if version) + ".",
        "",
        "**Regenerate it** after a change to an exporter, the loop or a package version: "
        "`.venv/bin/python scripts/exporter_coverage.py` (1 to 4 minutes on 2 shared cores; no network), then commit "
        "`docs/exporters.md`.",
        "",
        "## How each cell is measured",
        "",
        f"- The prompt \"{PROMPT}\" ({prompt_tokens} tokens, longer than the sliding windows of {WINDOW} tokens "
        "the tiny models keep) through the export with "
        "an empty cache: **max |Δlogit|** over every prompt position against the reference's logits, and the "
        "first step's (the last position's, which the arena's verdict reads). fp32 tolerance (the verdicts' "
        f"`TEXT_TOLERANCES[\"fp32\"]`): absolute {abs_tol:g} or relative {rel_tol:g}.",
        f"- The **decode path**: the export's own cache, fed the reference's greedy answer ({ANSWER_TOKENS} tokens) "
        "one token at a time (`kv_step_logits`), against the reference's full pass over the same tokens: "
        "**KL** (mean and worst step, nats) and top-1 agreement. fp32 floor (`SAME_PRECISION_FLOOR`, "
        f"`POSITION_KL`): mean KL ≤ {max_kl:g}, top-1 ≥ {min_top1:.0%}, every step ≤ {POSITION_KL['fp32']:g}.",
        "- **pass**: inside both; **refused**: the exporter said it cannot (`ExportRefused`, one sentence naming "
        "the exporter and the architecture); **fail**: an export was written but the arena cannot run it, or it "
        "computes something else than the model.",
        "- **export s**: the exporter's seconds on this machine (tiny models: the exporter's fixed cost).",
        "",
        "## Coverage",
        "",
        f"dynamo passes {counts['dynamo']} of {len(keys)}, the GenAI model builder {counts['genai-builder']} of "
        f"{len(keys)}.",
        "",
        "| Architecture | Class | " + " | ".join(TITLE[e] for e in EXPORTERS) + " |",
        "|---|---|" + "---|" * len(EXPORTERS),
    ]
    for key in keys:
        arch = BY_KEY[key]
        lines.append(f"| {arch.title} (`{key}`) | `{arch.model_class}` | "
                     + " | ".join(MARK[by[key, e].outcome] for e in EXPORTERS) + " |")
    lines += ["", "What each tiny model keeps of its architecture:", ""]
    lines += [f"- **{BY_KEY[k].title}** (`{k}`): {BY_KEY[k].quirk}." for k in keys]
    lines += [
        "",
        "## Figures",
        "",
        "| Architecture | Exporter | Outcome | max \\|Δlogit\\| (prompt) | first step | decode KL mean / max | "
        "top-1 | export s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        for exporter in EXPORTERS:
            c = by[key, exporter]
            if c.figures:
                f = c.figures
                figures = (f"{f['logits']['max_abs']:.2g} | {f['first_step']['max_abs']:.2g} | "
                           f"{f['decode']['kl']:.2g} / {f['decode']['kl_max']:.2g} | {f['decode']['top1']:.0%}")
            else:
                figures = "– | – | – | –"
            lines.append(f"| `{key}` | {exporter} | {MARK[c.outcome]} | {figures} | {c.seconds:.1f} |")
    lines += ["", "## Refusals and failures, in the exporters' words", ""]
    for key in keys:
        for exporter in EXPORTERS:
            c = by[key, exporter]
            if c.outcome == "pass":
                continue
            said = c.refused or c.error or "; ".join(c.problems)
            why = KNOWN_FAILURES.get((exporter, key)) or NOTES.get((exporter, key))
            lines.append(f"- `{key}` × {exporter} ({c.outcome}): {cell_text(said)}"
                         + (f" — *Why:* {cell_text(why)}." if why else ""))
    lines += [
        "",
        "## Reading it",
        "",
        "- A **refusal** is the exporter's answer in the arena too: the ONNX Runtime candidate ends in ERROR with that "
        "sentence, and the PyTorch backend still runs the model (all of these but Mistral3ForConditionalGeneration, "
        "which AutoModelForCausalLM does not load).",
        "- A **fail** is what the arena's judge would catch on a real model of that architecture (WRONG, or ERROR "
        "when ONNX Runtime cannot run the graph); each is expected to fail in the test until it is fixed.",
        "- The tiny models are random: their text is gibberish on both sides, which is fine: the figures compare "
        "the export with the model, not the model with language.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "exporters.md"))
    parser.add_argument("--only", nargs="*", help="architecture keys (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="processes that build and export")
    args = parser.parse_args(argv)
    keys = args.only or [a.key for a in ALL]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown:
        parser.error(f"unknown architecture(s) {', '.join(unknown)}: pick from {', '.join(BY_KEY)}")
    cells, seconds, prompt_tokens = run(keys, args.workers)
    text = page(cells, seconds, prompt_tokens)
    Path(args.out).write_text(text)
    print(f"\nwrote {args.out} ({sum(c.outcome == 'pass' for c in cells)} of {len(cells)} cells pass, "
          f"{seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
