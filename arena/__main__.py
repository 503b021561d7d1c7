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
from arena.registry import DEFAULT_BACKENDS
from arena.tasks import TASKS
from arena.types import BackendSpec, ImageRunRequest, TextRunRequest


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


def build_parser() -> argparse.ArgumentParser:
    """Every command's flags; a request's are its declared fields (`arena.fields.add_arguments`)."""
    from arena.judging.check import CheckRequest

    parser = argparse.ArgumentParser(prog="python -m arena", description=__doc__, epilog=backend_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for task in TASKS.values():
        command = sub.add_parser(task.name, help=f"compare {task} generation across backends", epilog=backend_help(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(command, task.request)
        command.add_argument("--backend", action="append", type=parse_backend, dest="backends",
                             help="repeatable; default: " + " and ".join(DEFAULT_BACKENDS))
        command.add_argument("--cache-dir", default=None)
        command.add_argument("--json", action="store_true", help="print the structured result instead of a "
                             + ("table" if task.streams_text else "summary"))
        command.add_argument("--report", metavar="DIR", help="also write the JSON, CSV and Markdown reports into DIR")
        if task.streams_text:  # its answers are token ids, which drift
            command.add_argument("--allow-drift", action="store_true", help="exit 0 even when token ids differ")
    check = sub.add_parser("check", help="is a candidate (e.g. an ONNX export) broken? verdicts + exit code",
                           epilog=backend_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    # The flags are CheckRequest's declared fields, as /check's parameters are; --candidate may be repeated.
    add_arguments(check, CheckRequest, backend_type=parse_backend, repeated=("candidate",))
    check.add_argument("--cache-dir", default=None)
    check.add_argument("--json", action="store_true", help="print the full report as JSON")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from arena.core import Arena

    def arena() -> Arena:
        return Arena(cache_dir=args.cache_dir)

    if args.command == "check":  # its request is checked before any Arena (and its workers) is made
        return run_check(args, arena)
    commands = {"prepare": run_prepare, "load": run_load, "image": run_image, "text": run_text}
    return commands[args.command](args, arena())


def run_text(args, arena) -> int:
    """``text``: the table (or ``--json``); exit 1 when a backend failed, or its token ids differ from the first
    backend's (unless ``--allow-drift``)."""
    try:
        request = TextRunRequest.from_values(cli_values(args, TextRunRequest))
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
    try:
        request = ImageRunRequest.from_values(cli_values(args, ImageRunRequest))
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


def run_check(args, make_arena) -> int:
    """``check``: one `CheckRequest` per ``--candidate``, refused before any work (exit 2) when a value is out of its
    bounds, with the API's sentence; the summary lines (or ``--json``); the exit code is the worst candidate's."""
    from arena.judging.check import CheckRequest, check, summary_lines

    values = cli_values(args, CheckRequest)
    try:
        requests = [CheckRequest.from_values(values | {"candidate": candidate}) for candidate in args.candidate]
    except ValueError as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        return 2
    problem = next((p for p in (r.refuse_bounds() for r in requests) if p), None)
    if problem:
        print(f"ERROR {problem}", file=sys.stderr)
        return 2
    arena = make_arena()
    reports = []
    # One reference, one caller: its passes over the same tokens (the fixed paragraph, its answer) are computed once
    # for every candidate and prompt of this command, not once per candidate.
    arena.keep_reference_distributions = True
    try:
        for request in requests:
            reports.append(check(arena, request, progress=phase_printer()))
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
