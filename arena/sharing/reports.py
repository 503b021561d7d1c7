"""Reports a person can keep and paste: one run as JSON (everything, raw values and statistics computed from
them), CSV (one row per backend) and Markdown (ready for a GitHub issue of the runtime that failed), each with
the command that reproduces the run with the CLI. Pure functions over the result dict; stdlib + numpy only.

Secrets never appear: values of secret-looking environment variables (tokens, API keys, passwords) and
token-shaped strings are replaced by ``<redacted>`` in every report, and no environment variable is written.
In public mode, callers pass the visitor's view of the result (`Arena.public_view`), so no server path either.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import shlex
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arena.fields import cli_arguments
from arena.judging.results import Quality, Where, component_summary, error_text
from arena.public.secrets import REDACTED, SECRET_NAME, SECRET_SHAPES, scrub, scrub_data  # noqa: F401 - re-exported
from arena.tasks import task_of

REPORT_FORMAT = "backend-arena-report/1"
# The versions a runtime's issue tracker asks for: each backend's packages (`Backend.distributions`), then these.
COMMON_PACKAGES = ("transformers", "diffusers", "accelerate", "gradio")


def report_packages() -> tuple[str, ...]:
    """The packages whose versions a report lists first: the backends' own in registry order, then the common ones."""
    from arena.registry import all_backends

    found: list[str] = []
    for cls in all_backends().values():
        found += [d for d in cls.distributions() if d not in found]
    return (*found, *(d for d in COMMON_PACKAGES if d not in found))


# --- statistics ----------------------------------------------------------------------------------------------
def describe(values: list[float]) -> dict[str, Any] | None:
    """count, mean, median, p90, min, max and stdev of raw values (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, max(0, round(0.9 * (len(ordered) - 1))))]
    return {"count": len(values), "mean": statistics.fmean(values), "median": statistics.median(values),
            "p90": p90, "min": ordered[0], "max": ordered[-1],
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}


def backend_statistics(result: dict[str, Any]) -> dict[str, Any]:
    """Statistics of one backend's raw timings: per-token gaps for text, per-step times for images."""
    timings = result.get("timings") or {}
    out: dict[str, Any] = {}
    if "token_times_s" in timings:
        stamps = list(timings.get("token_times_s") or [])
        out["new_tokens"] = len(stamps)
        out["first_token_s"] = stamps[0] if stamps else None
        out["inter_token_s"] = describe([b - a for a, b in zip(stamps, stamps[1:], strict=False)])
        out["repeat_total_s"] = describe(list(timings.get("total_s_all") or []))
    if "step_times_s" in timings:
        steps = list(timings.get("step_times_s") or [])
        out["steps"] = len(steps)
        out["step_s"] = describe(steps)
        out["steps_sum_s"] = sum(steps) if steps else None
    return out


# --- reproduce -----------------------------------------------------------------------------------------------
def backend_argument(option_values: dict[str, Any]) -> str:
    """``name:key=value,...`` with only the options of that backend that differ from its defaults (CLI syntax)."""
    from arena.types import BackendSpec

    name = option_values["backend"]
    try:
        defaults = BackendSpec(name).options
    except ValueError:
        defaults = {}
    changed = [f"{k}={_cli_value(v)}" for k, v in option_values.items()
               if k in defaults and v not in (None, "") and defaults[k] != v]
    return name + (":" + ",".join(changed) if changed else "")


def _cli_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def reproduce_command(run: dict[str, Any], task: str) -> str:
    """The shell command that runs this comparison again with the CLI (``python -m arena text|image``)."""
    request = run.get("request") or {}
    parts = ["python", "-m", "arena", task_of(task).name, *cli_arguments(task_of(task).request, request)]
    for backend in request.get("backends") or []:
        parts += ["--backend", backend_argument(backend)]
    return scrub(" ".join(shlex.quote(p) for p in parts))


# --- environment ---------------------------------------------------------------------------------------------
def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_summary(env: dict[str, Any]) -> dict[str, Any]:
    """The facts an issue needs: OS, CPU, GPU and driver, CUDA, package versions, what each runtime says (its
    version; ONNX Runtime's providers), as the backends word it (`arena.running.environment.runtime_facts`).

    Versions come from the probe (the workers' interpreter); one the probe did not list is read from this
    interpreter's package metadata (no import)."""
    from arena.running.environment import runtime_facts

    versions = dict(env.get("versions") or {})
    packages = report_packages()
    for dist in packages:
        if versions.get(dist) is None and dist not in versions:
            versions[dist] = _installed(dist)
    runtimes = runtime_facts(env)
    cpu = env.get("cpu") or {}
    gpus = runtimes["gpus"]
    return {
        "os": env.get("platform"),
        "python": env.get("python"),
        "cpu": (f"{cpu.get('effective')} of {cpu.get('host_cores')} cores ({cpu.get('source')})" if cpu
                else f"{env.get('cpu_count')} cores"),
        "memory_gb": env.get("memory_gb"),
        "gpu": [g if isinstance(g, str) else g.get("name", str(g)) for g in gpus] or None,
        "driver": runtimes["driver"] or env.get("nvidia_driver") or (env.get("gpu") or {}).get("driver"),
        "cuda": runtimes["cuda"],
        "versions": {d: versions.get(d) for d in (*packages, *sorted(set(versions) - set(packages)))},
        "runtimes": runtimes["runtimes"],
    }


# --- the three formats ---------------------------------------------------------------------------------------
def report_data(run: dict[str, Any], task: str, created: str | None = None) -> dict[str, Any]:
    """Everything about the run (raw per-token and per-step values included) plus statistics computed from
    those raw values, the environment summary and the reproduce command; secrets scrubbed."""
    data = {
        "format": REPORT_FORMAT,
        "task": task,
        "created": created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "reproduce": reproduce_command(run, task),
        "environment_summary": environment_summary(run.get("environment") or {}),
        "statistics": [{"label": r.get("label"), **backend_statistics(r)} for r in run.get("results") or []],
        "run": run,
    }
    return scrub_data(json.loads(json.dumps(data, default=str)))


def report_json(run: dict[str, Any], task: str, created: str | None = None) -> str:
    return json.dumps(report_data(run, task, created), indent=2)


CSV_COLUMNS = ("label", "backend", "options", "verdict", "broken", "reason", "error", "ttft_s", "tokens_per_s",
               "decode_tokens_per_s", "total_s", "new_tokens", "text_encoder_s", "unet_s", "vae_s", "psnr_db",
               "ssim", "export_s", "export_cached", "load_s", "provider", "threads", "memory_mb")


def report_csv(run: dict[str, Any]) -> str:
    """One row per backend: verdict, timings, load facts."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in run.get("results") or []:
        timings, load, verdict = r.get("timings") or {}, r.get("load") or {}, r.get("verdict") or {}
        metrics = verdict.get("metrics") or {}
        options = {k: v for k, v in (r.get("options") or {}).items() if k not in ("backend", "label")}
        writer.writerow({
            "label": r.get("label"), "backend": r.get("backend"), "options": json.dumps(options),
            "verdict": verdict.get("kind"), "broken": verdict.get("broken"), "reason": verdict.get("reason"),
            "error": r.get("error"), "new_tokens": r.get("num_new_tokens"),
            "psnr_db": r.get("psnr_vs_reference_db", metrics.get("psnr_db")), "ssim": metrics.get("ssim"),
            **{k: timings.get(k) for k in ("ttft_s", "tokens_per_s", "decode_tokens_per_s", "total_s",
                                            "text_encoder_s", "unet_s", "vae_s")},
            **{k: load.get(k) for k in ("export_s", "export_cached", "load_s", "provider", "threads", "memory_mb")},
        })
    return scrub(out.getvalue())


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _excerpt(reference: str, text: str, before: int = 80, after: int = 200) -> tuple[int, str, str]:
    """(first differing character, reference excerpt, candidate excerpt) around the first divergence."""
    common = next((i for i, (a, b) in enumerate(zip(text, reference, strict=False)) if a != b),
                  min(len(text), len(reference)))
    start = max(0, common - before)
    lead = "…" if start else ""
    return common, lead + reference[start:common + after], lead + text[start:common + after]


def _fence(text: str) -> str:
    return "````text\n" + text.replace("````", "'```") + "\n````"


class _TextSections:
    """What a text run's report shows that an image run's does not (`_SECTIONS`): the evidence beside each verdict
    (teacher-forced figures against the reference), the generation settings, where the answer departs, timings."""

    evidence = "Top-1 agreement | KL (nats) | Perplexity ratio"
    timing_header = ("| Backend | TTFT | Tokens/s | Decode tokens/s | Total | New tokens | Export | Load | Runs on |",
                     "|---|---|---|---|---|---|---|---|---|")

    @staticmethod
    def evidence_cells(result: dict[str, Any]) -> str:
        quality = Quality.from_dict(((result.get("verdict") or {}).get("metrics") or {}).get("quality"))
        if quality.top1 is None:
            return "– | – | –"
        return f"{quality.top1:.1%} | {quality.kl:.3g} | ×{quality.ppl_ratio:.3g}"

    @staticmethod
    def settings(request: dict[str, Any], model: dict[str, Any]) -> str:
        return (f"- Max new tokens {request.get('max_new_tokens')}, prompt format {request.get('prompt_format')}, "
                f"greedy, ignore EOS {request.get('ignore_eos')}, warm-up {request.get('warmup')}, "
                f"repeats {request.get('repeats')}")

    @staticmethod
    def difference(r: dict[str, Any], reference: dict[str, Any], _heatmap: str | None) -> list[str]:
        if r.get("text") == reference.get("text"):
            return []
        at, ref_part, cand_part = _excerpt(reference.get("text", ""), r.get("text", ""))
        return [f"**{r['label']}** departs from the reference at character {at + 1}:", "",
                f"Reference ({reference['label']}):", "", _fence(ref_part), "",
                f"{r['label']}:", "", _fence(cand_part), ""]

    @staticmethod
    def timing_cells(r: dict[str, Any], t: dict[str, Any]) -> list[str]:
        return [_ms(t.get("ttft_s")), f"{t.get('tokens_per_s', 0):.1f}" if t else "–",
                f"{t.get('decode_tokens_per_s', 0):.1f}" if t else "–", _ms(t.get("total_s")),
                str(r.get("num_new_tokens", "–"))]


class _ImageSections:
    """An image run's: PSNR/SSIM beside each verdict, the pipeline settings, the difference heatmaps, the
    pipeline's timings by component."""

    evidence = "PSNR (dB) | SSIM"
    timing_header = ("| Backend | Total | Text encoder | UNet loop | VAE decode | Export | Load | Runs on |",
                     "|---|---|---|---|---|---|---|---|")

    @staticmethod
    def evidence_cells(result: dict[str, Any]) -> str:
        metrics = (result.get("verdict") or {}).get("metrics") or {}
        psnr = result.get("psnr_vs_reference_db", metrics.get("psnr_db"))
        return " | ".join("–" if v is None else f"{v:g}" for v in (psnr, metrics.get("ssim")))

    @staticmethod
    def settings(request: dict[str, Any], model: dict[str, Any]) -> str:
        return (f"- Steps {request.get('steps')}, guidance {request.get('guidance_scale')}, seed "
                f"{request.get('seed')}, size {model.get('width')}x{model.get('height')}")

    @staticmethod
    def difference(r: dict[str, Any], _reference: dict[str, Any], heatmap: str | None) -> list[str]:
        if r.get("identical_to_reference"):
            return []
        metrics = (r.get("verdict") or {}).get("metrics") or {}
        psnr, ssim = r.get("psnr_vs_reference_db", metrics.get("psnr_db")), metrics.get("ssim")
        lines = [f"**{r['label']}**: PSNR {psnr if psnr is not None else '–'} dB, SSIM "
                 f"{ssim if ssim is not None else '–'} against the reference."]
        if heatmap:
            lines += ["", f"![difference heatmap, {r['label']}]({heatmap})"
                      " (|reference − candidate| per pixel; attach the PNG to the issue)", ""]
        return lines

    @staticmethod
    def timing_cells(_r: dict[str, Any], t: dict[str, Any]) -> list[str]:
        return [_ms(t.get("total_s")), _ms(t.get("text_encoder_s")), _ms(t.get("unet_s")), _ms(t.get("vae_s"))]


# Each task's report sections, by the task's name (`arena.tasks`): a new task adds its class here.
_SECTIONS = {"text": _TextSections, "image": _ImageSections}


def report_markdown(run: dict[str, Any], task: str, heatmaps: Mapping[int, str] | None = None) -> str:
    """A GitHub-issue-ready report: what was compared, verdicts with reasons, the differing outputs (text excerpt
    at the first divergence; for images the difference heatmap file in ``heatmaps`` {result index: file name}),
    timings, errors with their log tails, the environment, and the reproduce command."""
    request, results = run.get("request") or {}, run.get("results") or []
    ref_index = run.get("reference_index")
    reference = results[ref_index] if ref_index is not None and ref_index < len(results) else None
    broken = [r["label"] for r in results if (r.get("verdict") or {}).get("broken") or r.get("error")]
    model = run.get("model") or {}
    title = (f"{', '.join(broken)} broken" if broken else "all backends agree") + f" on {request.get('model')}"
    lines = [f"## Backend Arena: {title}", "",
             f"**What was compared:** the {task} model `{request.get('model')}`"
             + (f" ({model.get('source')})" if model.get("source") else "")
             + f", the same input through {len(results)} backend(s)"
             + (f", judged against **{reference['label']}**." if reference else "."), ""]
    sections = _SECTIONS[task_of(task).name]
    lines += [f"- Prompt: {json.dumps(request.get('prompt', ''), ensure_ascii=False)}",
              sections.settings(request, model)]
    if run.get("error"):
        lines += ["", f"**The run failed before any backend ran:** {run['error']}"]
    if run.get("busy_machine"):
        lines += ["", f"**Busy machine.** {run['busy_machine']}"]

    # The evidence beside each verdict (text: teacher-forced figures against the reference; images: PSNR/SSIM).
    evidence = sections.evidence
    lines += ["", "### Verdicts", "", f"| Backend | Verdict | {evidence} | Reason |",
              "|---|---|" + "---|" * evidence.count("|") + "---|---|"]
    for r in results:
        verdict = r.get("verdict") or {}
        kind = verdict.get("kind") or ("ERROR" if r.get("error") else "–")
        reason = (verdict.get("reason") or r.get("error") or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['label']}{' (reference)' if r is reference else ''} | **{kind}** | "
                     f"{sections.evidence_cells(r)} | {reason} |")

    wheres = [(r, (r.get("verdict") or {}).get("metrics") or {}) for r in results]
    wheres = [(r, m) for r, m in wheres if "where" in m]
    if wheres:
        # Images: the first component (text encoder, UNet, VAE decoder) on the reference's inputs, and each one's
        # figures (`arena.judging.localize_image.summary`).
        image = task_of(task).pictures  # a pipeline: its components, each one's figures in a column
        lines += ["", "### Where did it break", "",
                  "| Backend | First divergent " + ("component" if image else "unit") + " | Error (tolerance) | "
                  "Likely cause |" + (" Each component on the reference's inputs |" if image else ""),
                  "|---|---|---|---|" + ("---|" if image else "")]
        for r, m in wheres:
            if m["where"] is None:
                lines.append(f"| {r['label']} | – | – | not localized: {m.get('where_unavailable', '')} |"
                             + (" – |" if image else ""))
                continue
            where = Where.from_dict(m["where"])
            unit = f"`{where.unit}`" if where.unit else "none"
            over = where.over  # a reduced precision's even growth past the line, standing out nowhere
            error = f"{error_text(where.error)} ({where.threshold:g})" if where.unit else \
                f"up to {over['error']:.3g} at `{over['unit']}` ({where.threshold:g}), none standing out" \
                if over else f"all within {where.threshold:g}"
            figures = f" {component_summary(m['where']) or '–'} |" if image else ""
            lines.append(f"| {r['label']} | {unit} | {error} | {where.cause or '–'} |{figures}")

    differing = []
    for index, r in enumerate(results):
        if r is reference or r.get("error") or reference is None:
            continue
        differing += sections.difference(r, reference, (heatmaps or {}).get(index))
    if differing:
        lines += ["", "### Differing outputs", "", *differing]

    lines += ["", "### Timings", ""]
    lines += list(sections.timing_header)
    for r in results:
        t, load = r.get("timings") or {}, r.get("load") or {}
        export = {True: "cached", False: _ms(load.get("export_s"))}.get(load.get("export_cached"), "–")
        tail = [export, _ms(load.get("load_s")), f"{load.get('provider') or '–'}"]
        cells = sections.timing_cells(r, t)
        lines.append("| " + " | ".join([r["label"], *cells, *tail]) + " |")

    failures = [r for r in results if r.get("error")]
    if failures:
        lines += ["", "### Failures", ""]
        for r in failures:
            lines += [f"**{r['label']}:** {r['error']}", ""]
            if r.get("log_tail"):
                lines += ["<details><summary>Log tail</summary>", "", _fence(r["log_tail"]), "", "</details>", ""]

    env = environment_summary(run.get("environment") or {})
    lines += ["", "### Environment", "",
              f"- OS: {env['os']}; Python {env['python']}",
              f"- CPU: {env['cpu']}; memory {env['memory_gb']} GB",
              f"- GPU: {', '.join(env['gpu']) if env['gpu'] else 'none'}; driver {env['driver'] or '–'}; "
              f"CUDA {env['cuda'] or '–'}",
              f"- Runtimes: {'; '.join(env['runtimes']) or '–'}",
              "- Versions: " + ", ".join(f"{d} {v or 'not installed'}" for d, v in env["versions"].items()),
              "", "### Reproduce", "", "```bash", reproduce_command(run, task), "```", "",
              "*Made by Backend Arena.*"]
    return scrub("\n".join(lines) + "\n")


def write_reports(run: dict[str, Any], task: str, directory: str | Path, stem: str = "arena-report",
                  images: list | None = None) -> list[Path]:
    """Write ``<stem>.json``, ``.csv`` and ``.md`` (and for images each candidate's difference heatmap PNG next to
    them) into ``directory``; returns the paths. ``images``: the run's images in result order, when at hand."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    heatmaps: dict[int, str] = {}
    pictures, paths = [], []
    index = run.get("reference_index")
    if task_of(task).pictures and images and index is not None and index < len(images) and images[index] is not None:
        from PIL import Image

        from arena.judging.verdicts import difference_heatmap

        for i, image in enumerate(images):
            if i != index and image is not None and image.shape == images[index].shape:
                name = f"{stem}-heatmap-{i}.png"
                Image.fromarray(difference_heatmap(images[index], image)).save(directory / name)
                heatmaps[i] = name
                pictures.append(directory / name)
    for suffix, text in ((".md", report_markdown(run, task, heatmaps)), (".json", report_json(run, task)),
                         (".csv", report_csv(run))):
        path = directory / f"{stem}{suffix}"
        path.write_text(text)
        paths.append(path)
    return paths + pictures
