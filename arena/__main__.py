"""Headless command line: the same core as the dashboard.

    python -m arena text --prompt "My name is Arthur and I live in" \\
        --backend pytorch --backend onnxruntime:precision=int8,provider=CPUExecutionProvider
    python -m arena check --model /models/llama --candidate onnxruntime:onnx_dir=/exports/llama
    python -m arena check --model /models/llama --candidate onnxruntime:onnx_dir=/exports/fp32 \\
        --candidate onnxruntime:onnx_dir=/exports/int8

``load`` sweeps OpenAI-compatible servers over concurrency levels (``--concurrency 1,2,4,8``) or Poisson request
rates (``--rates``): TTFT, inter-token and end-to-end latency percentiles, throughput, goodput and every level's
answers judged (docs/load.md); ``--report DIR`` writes its JSON, CSV and Markdown.
``image`` draws one prompt through each backend and prints each verdict. ``--report DIR`` (text and image) also
writes the JSON, CSV and Markdown reports the dashboard offers for download. ``text`` prints a table (or
``--json``); its exit code is 1 when a backend failed or the token ids disagree with
the first backend (unless ``--allow-drift``). ``check`` runs the candidate next to the reference (PyTorch fp32)
on a few prompts and prints each verdict; exit code 0 when nothing is broken, 1 when a verdict says broken
(GIBBERISH, EMPTY, DIFFERENT, BLANK, NOISE, NAN, ERROR, WRONG, LOSSY), 2 when the check could not run (no such
model). ``--candidate`` is repeatable: several exports of one model are checked in one process with warm workers
(the model is prepared once; the reference still runs beside each candidate); ``--json`` then prints a list with
one report per candidate, and the exit code is the worst of theirs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from arena.fields import add_arguments, cli_values
from arena.registry import DEFAULT_BACKENDS, default_reference
from arena.types import REQUESTS, BackendSpec, ImageRunRequest, TextRunRequest


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_backend(text: str) -> BackendSpec:
    """``name`` or ``name:key=value,key=value`` (e.g. ``onnxruntime:onnx_dir=/exports/llama``): the values are
    parsed and checked by the backend's own options (`BackendSpec.from_any`)."""
    name, _, options = text.partition(":")
    fields: dict[str, str] = {"backend": name}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"backend option '{item}' is not key=value")
        fields[key.strip()] = value.strip()
    try:
        return BackendSpec.from_any(fields)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def tolerance_value(text: str) -> tuple[str, float]:
    """``0.5`` (every precision class) or ``fp16:0.5`` (one class), as Polygraphy's ``--atol [out:]value``."""
    klass, _, value = text.rpartition(":")
    try:
        return klass, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None


def tolerances_of(args) -> dict[str, dict[str, float]] | None:
    """The check's ``--atol``/``--rtol``/``--min-psnr``/``--min-ssim`` as `check`'s ``tolerances``, or None."""
    from arena.judging.verdicts import TOLERANCE_OVERRIDES

    found = {name: dict(getattr(args, name)) for name in TOLERANCE_OVERRIDES if getattr(args, name, None)}
    return found or None


def backend_help() -> str:
    """Each registered backend with its options and choices, for ``--help``."""
    from arena.registry import all_backends

    lines = []
    for name, cls in all_backends().items():
        options = ", ".join(f"{i.name}={'|'.join(i.choices) if i.choices else i.kind}"
                            for i in cls.Options.fields_info())
        lines.append(f"  {name}" + (f" ({', '.join(cls.aliases)})" if cls.aliases else "") + f": {options}")
    return "backends (name:option=value,...):\n" + "\n".join(lines)


def table(result: dict) -> str:
    rows = [("backend", "tokens", "TTFT ms", "tok/s", "total s", "export", "provider", "same ids", "")]
    reference = next((r["token_ids"] for r in result["results"] if not r["error"]), None)
    for r in result["results"]:
        t, load = r["timings"] or {}, r["load"] or {}
        export = {True: "cache", False: f"{load.get('export_s', 0):.1f}s", None: "-"}[load.get("export_cached")]
        rows.append((r["label"], str(r["num_new_tokens"]), f"{t.get('ttft_s', 0) * 1000:.0f}",
                     f"{t.get('tokens_per_s', 0):.1f}", f"{t.get('total_s', 0):.2f}", export,
                     str(r["provider"] or "-"), "-" if r["error"] else str(r["token_ids"] == reference),
                     "error" if r["error"] else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines += [f"\n{r['label']}: {r['error']}" for r in result["results"] if r["error"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from arena.judging.check import CHECK_REACH
    from arena.judging.verdicts import TOLERANCE_OVERRIDES

    parser = argparse.ArgumentParser(prog="python -m arena", description=__doc__, epilog=backend_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for task, request_cls in REQUESTS.items():
        command = sub.add_parser(task, help=f"compare {task} generation across backends", epilog=backend_help(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(command, request_cls)
        command.add_argument("--backend", action="append", type=parse_backend, dest="backends",
                             help="repeatable; default: " + " and ".join(DEFAULT_BACKENDS))
        command.add_argument("--cache-dir", default=None)
        command.add_argument("--json", action="store_true", help="print the structured result instead of a "
                             + ("table" if task == "text" else "summary"))
        command.add_argument("--report", metavar="DIR", help="also write the JSON, CSV and Markdown reports into DIR")
        if task == "text":
            command.add_argument("--allow-drift", action="store_true", help="exit 0 even when token ids differ")
    check = sub.add_parser("check", help="is a candidate (e.g. an ONNX export) broken? verdicts + exit code")
    check.add_argument("--model", required=True, help="the reference model: catalog key, hub id or directory")
    check.add_argument("--candidate", required=True, type=parse_backend, action="append", dest="candidates",
                       help="e.g. onnxruntime:onnx_dir=/path/to/export or onnxruntime:precision=int8; repeatable")
    check.add_argument("--reference", type=parse_backend, default=BackendSpec(default_reference()),
                       help="default: the first backend that can be a reference in its default configuration")
    check.add_argument("--task", choices=("auto", "text", "image"), default="auto")
    check.add_argument("--prompt", action="append", dest="prompts", default=[],
                       help="repeatable; default: three built-in prompts")
    check.add_argument("--max-new-tokens", type=int, default=48)
    check.add_argument("--reach", type=int, default=CHECK_REACH, metavar="POSITIONS",
                       help="text checks: teacher-force the long shipped text up to this many positions (cut to the "
                            f"model's context; default {CHECK_REACH:,}; 0 or up to 512: the fixed paragraph only), a "
                            "full pass and its last positions through the candidate's KV cache")
    check.add_argument("--steps", type=positive_int, default=None, help="image checks only: denoising steps "
                       "(default: the catalog entry's, else 20)")
    check.add_argument("--cache-dir", default=None)
    check.add_argument("--json", action="store_true", help="print the full report as JSON")
    for flag, name in (("--atol", "atol"), ("--rtol", "rtol"), ("--min-psnr", "min_psnr"),
                       ("--min-ssim", "min_ssim")):
        task, meaning = TOLERANCE_OVERRIDES[name]
        check.add_argument(flag, action="append", type=tolerance_value, dest=name, metavar="[PRECISION:]VALUE",
                           help=f"{task} checks: {meaning.split(' (')[0]}, in place of the per-precision table's "
                                "(as Polygraphy's comparator: one value for every precision, or PRECISION:VALUE "
                                "for one class, fp32|fp16|bf16|int8|int4; repeatable)")
    check.add_argument("--localize", action="store_true", help="where did it break: compare each layer's output "
                       "(text) or each component's, text encoder / UNet / VAE decoder (images), with the reference's "
                       "for any candidate (a broken or drifting one always is)")
    from arena.serving.request import LoadRunRequest

    load = sub.add_parser("load", help="sweep OpenAI-compatible servers over concurrency levels: latency "
                          "percentiles, throughput, goodput, answers judged at every level")
    add_arguments(load, LoadRunRequest)
    load.add_argument("--backend", action="append", type=parse_backend, dest="backends", required=True,
                      help="repeatable: openai:base_url=http://127.0.0.1:8000/v1[,model=NAME]")
    load.add_argument("--cache-dir", default=None)
    load.add_argument("--json", action="store_true", help="print the structured result instead of a table")
    load.add_argument("--report", metavar="DIR", help="also write the JSON, CSV and Markdown reports into DIR")
    prepare = sub.add_parser("prepare", help="prepare the default models (materialize, export, load once) into the "
                             "cache and exit (a container image's build step, a CI cache); the app does the same "
                             "at start-up")
    prepare.add_argument("--cache-dir", default=None)
    prepare.add_argument("--examples", action="store_true",
                         help="also make the broken-conversion examples' exports (the app makes them in the "
                              "background after start-up)")
    args = parser.parse_args(argv)

    from arena.core import Arena

    if args.command == "prepare":
        return run_prepare(args, Arena(cache_dir=args.cache_dir))
    if args.command == "load":
        return run_load(args, Arena(cache_dir=args.cache_dir))
    if args.command == "check":
        return run_check(args, Arena(cache_dir=args.cache_dir))
    if args.command == "image":
        return run_image(args, Arena(cache_dir=args.cache_dir))

    request = TextRunRequest.from_values(cli_values(args, TextRunRequest))
    arena = Arena(cache_dir=args.cache_dir)
    try:
        result = arena.run_text_to_end(request, phase_printer()).to_dict()
    finally:
        arena.close()
    print(json.dumps(result, indent=2, default=str) if args.json else (result["error"] or table(result)))
    write_report(args.report, result, "text")
    if result["error"] or any(r["error"] for r in result["results"]):
        return 1
    ids = [r["token_ids"] for r in result["results"]]
    if not args.allow_drift and any(i != ids[0] for i in ids):
        return 1
    return 0


def write_report(directory: str | None, result: dict, task: str, images: list | None = None) -> None:
    """``--report DIR``: the same JSON, CSV and Markdown files the dashboard offers for download."""
    if directory:
        from arena.sharing.reports import write_reports

        for path in write_reports(result, task, directory, images=images):
            print(f"... wrote {path}", file=sys.stderr)


def run_load(args, arena) -> int:
    """``load``: the summary table (or ``--json``); exit 1 when the sweep could not run, a server failed, a request
    failed or a level's answers are broken."""
    from arena.serving import report
    from arena.serving.request import LoadRunRequest
    from arena.serving.sweep import run_sweep

    try:
        request = LoadRunRequest.from_values(cli_values(args, LoadRunRequest) | {"backends": args.backends})
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        sweep = run_sweep(arena, request, phase_printer())
    finally:
        arena.close()
    print(report.report_json(sweep) if args.json else report.text_table(sweep))
    if args.report:
        for path in report.write_reports(sweep, args.report):
            print(f"... wrote {path}", file=sys.stderr)
    levels = [lv for s in sweep["servers"] for lv in s["levels"]]
    failed = sweep["error"] or any(s["error"] for s in sweep["servers"]) or \
        any(lv["figures"]["failed"] or lv["verdict"].get("broken") for lv in levels)
    return 1 if failed else 0


def run_image(args, arena) -> int:
    """``image``: one line per backend (verdict, total time); exit 1 when a backend failed or is broken."""
    request = ImageRunRequest.from_values(cli_values(args, ImageRunRequest))
    try:
        final = arena.run_image_to_end(request, phase_printer())
    finally:
        arena.close()
    result = final.to_dict()
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif result["error"]:
        print(result["error"])
    for r in result["results"] if not args.json else ():
        verdict = r["verdict"] or {}
        total = (r["timings"] or {}).get("total_s")
        print(f"{verdict.get('kind', 'ERROR'):<9} {r['label']}: " + (r["error"] or
              f"{total:.2f} s; {verdict.get('reason', '')}"))
    write_report(args.report, result, "image", [r.image for r in final.results])
    failed = result["error"] or any(r["error"] or (r["verdict"] or {}).get("broken") for r in result["results"])
    return 1 if failed else 0


def run_check(args, arena) -> int:
    from arena.judging.check import check, summary_lines

    reports = []
    # One reference, one caller: its passes over the same tokens (the fixed paragraph, its answer) are computed once
    # for every candidate and prompt of this command, not once per candidate.
    arena.keep_reference_distributions = True
    try:
        for candidate in args.candidates:
            reports.append(check(arena, args.model, candidate, task=args.task, prompts=tuple(args.prompts),
                                 reference=args.reference, max_new_tokens=args.max_new_tokens, steps=args.steps,
                                 progress=phase_printer(), localize=args.localize, reach=args.reach,
                                 tolerances=tolerances_of(args)))
    finally:
        arena.close()
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2, default=str))
    else:
        print("\n\n".join("\n".join(summary_lines(report)) for report in reports))
    return max(2 if report["error"] else 1 if report["broken"] else 0 for report in reports)


def run_prepare(args, arena) -> int:
    """The app's start-up preparation, in the foreground with its status lines printed; 1 on a problem."""
    from arena.running.warmup import WarmUp

    printer = phase_printer()
    start = time.monotonic()
    try:
        problems = WarmUp(arena, examples=args.examples, report=lambda line: printer(None, line)).run()
    finally:
        arena.close()
    if problems:
        print(f"prepare: {'; '.join(problems)}", file=sys.stderr)
        return 1
    print(f"prepare: the default models are ready in {arena.cache_dir} ({time.monotonic() - start:.0f} s)",
          file=sys.stderr)
    return 0


def phase_printer():
    last = [""]

    def progress(_fraction, description):
        stem = re.sub(r"[\d.]+", "#", description)  # one line per phase, not per token or second
        if stem != last[0]:
            last[0] = stem
            print(f"... {description}", file=sys.stderr, flush=True)

    return progress


if __name__ == "__main__":
    sys.exit(main())
