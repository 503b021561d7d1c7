"""Turn result dicts into the Markdown the panels show. Pure functions: easy to test, no Gradio."""

from __future__ import annotations

import statistics
from typing import Any

from arena import OptionChoice, Quality, Where, task_of
from ui.colors import is_reference, state_of


def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def milliseconds(value: float | None) -> str:
    """A time in seconds, always written in ms (time to first token: the panel, the table and the chart agree)."""
    if value is None:
        return "–"
    return f"{value * 1000:.1f} ms" if value < 0.01 else f"{value * 1000:,.0f} ms"


def ratio_text(value: float | None) -> str:
    """A perplexity ratio: "×1.012", or in powers of ten once it is huge ("×8.6e15", not 8559575551647200.000)."""
    if value is None or value != value:
        return "–"
    if value == float("inf"):
        return "×∞"
    if abs(value) < 1000:
        return f"×{value:.3f}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"×{mantissa}e{int(exponent)}"


def panel_header(title: str, result: dict[str, Any] | None, state: str, detail: str = "") -> str:
    """The panel's title line with a status badge: waiting, generating (``detail``: tokens so far), done or
    error, then the verdict (the reference: REFERENCE, slate, unless it is broken itself)."""
    kind, text = {"idle": ("idle", "not run"), "waiting": ("waiting", "waiting"),
                  "generating": ("waiting", f"generating {detail}".strip()),
                  "skipped": ("idle", "not selected"), "ready": ("idle", "ready to run"),
                  "unavailable": ("idle", "unavailable here")}.get(state, ("idle", ""))
    if result is not None:
        kind, text = badge(result)
    label = result["label"] if result else title
    return f"### {label} <span class='arena-badge arena-badge-{kind}'>{text}</span>"


def badge(result: dict[str, Any], reference: bool | None = None) -> tuple[str, str]:
    """(colour state, text) of a result's badge: STOPPED, ERROR, DONE (not judged yet), REFERENCE or the verdict."""
    reference = is_reference(result) if reference is None else reference
    state = state_of(result, reference)
    verdict = result.get("verdict")
    if result.get("stopped"):
        return state, "STOPPED"
    if verdict:
        return state, "REFERENCE" if state == "reference" else verdict["kind"]
    return state, "ERROR" if result.get("error") else "DONE"


def idle_panel(name: str, selected: set[str], unavailable: str, run_failed: bool = False,
               ready: bool = False) -> tuple[str, str]:
    """(header state, metrics text) of a panel without a result yet: waiting (a run is on its way), ready (a link's
    settings are filled in, nothing runs yet), not selected, or unavailable here (then the metrics say why and how
    to install, as before the run)."""
    if name in selected and not run_failed:
        return ("ready" if ready else "waiting"), ""
    return ("unavailable", unavailable) if unavailable else ("skipped", "")


def verdict_line(result: dict[str, Any]) -> str:
    """"**MATCH** — identical tokens (64)": the verdict and its one-line reason, or "" before judging."""
    verdict = result.get("verdict")
    return f"**{verdict['kind']}** — {verdict['reason']}\n\n" if verdict and not result.get("error") else ""


def divergence_markdown(reference: str, text: str, before: int = 60, after: int = 160) -> str:
    """Where a text departs from the reference: the shared lead-in, then the differing span highlighted."""
    if text == reference:
        return ""
    common = next((i for i, (a, b) in enumerate(zip(text, reference, strict=False)) if a != b),
                  min(len(text), len(reference)))
    lead = ("…" if common > before else "") + text[max(0, common - before):common]
    rest = text[common:common + after] + ("…" if len(text) > common + after else "")
    escape = {"<": "&lt;", ">": "&gt;", "\n": " "}
    lead, rest = ("".join(escape.get(c, c) for c in part) for part in (lead, rest))
    return f"> Diverges from the reference at character {common + 1}: {lead}<mark>{rest or '(ends here)'}</mark>\n\n"


def panel_metrics(result: dict[str, Any] | None, reference_text: str | None = None) -> str:
    """Verdict, where the text diverges, timing, load and provider facts; or the error with the log tail."""
    if result is None:
        return ""
    if result.get("stopped"):
        return (f"**Stopped:** {result['error']}" + (" What it had written is kept above, unjudged."
                                                     if result.get("text") else ""))
    if result.get("error"):
        text = f"**Error:** {result['error']}"
        if result.get("log_tail"):
            text += "\n\n<details><summary>Last log lines</summary>\n\n```\n" + result["log_tail"] + "\n```\n</details>"
        return text
    timings, load = result.get("timings") or {}, result.get("load") or {}
    rows = [
        ("Time to first token", milliseconds(timings.get("ttft_s"))),
        ("Tokens/s (decode)", f"{timings.get('tokens_per_s', 0):.1f} ({timings.get('decode_tokens_per_s', 0):.1f})"),
        *quality_rows(result),
        ("Total time", seconds(timings.get("total_s"))),
        ("New tokens", str(result.get("num_new_tokens", 0))),
        *load_rows(load),
        ("Worker memory", f"{load['memory_mb']:.0f} MB" if load.get("memory_mb") else "–"),
        *([("GPU memory (device)", f"{load['gpu_memory_mb']:.0f} MB")] if load.get("gpu_memory_mb") else []),
        *machine_rows(result),
    ]
    table = "| Measure | Value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    notes = load.get("notes") or []
    drift = divergence_markdown(reference_text, result.get("text", "")) if reference_text is not None else ""
    return verdict_line(result) + where_markdown(result) + drift + table + ("\n\n" + "; ".join(notes) if notes else "")


def machine_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The machine while this backend ran (`arena.running.load`): busy (why) or quiet, as a panel row."""
    load = result.get("machine_load")
    if not load:
        return []
    if load.get("busy"):
        return [("Machine while timed", "**busy**: " + "; ".join(load["reasons"]) + " (timings slower than it can do)")]
    others = load.get("others_share")
    return [("Machine while timed", "quiet" + (f" (others {others:.0%} of the CPUs)" if others is not None else ""))]


def kept_note(run: dict[str, Any]) -> str:
    """An example shown from this server's earlier run of it: when, and how to run it live ("" otherwise)."""
    if not run.get("kept_at"):
        return ""
    return (f"<span class='arena-badge arena-badge-idle'>KEPT RESULT</span> This example as this server ran it at "
            f"{run['kept_at']} (the same models, exports and settings, so the same verdicts; its timings are from "
            "then). Press Run to run it live. ")


def busy_badge(run: dict[str, Any]) -> str:
    """The run's busy-machine sentence with its badge ("" on a quiet machine)."""
    sentence = run.get("busy_machine")
    return f" <span class='arena-badge arena-badge-idle'>BUSY MACHINE</span> {sentence}" if sentence else ""


def where_markdown(result: dict[str, Any]) -> str:
    """The "Where?" line of a localized backend (`arena.Where.sentence`): the first divergent unit (text) or
    component (images), its error, and the likely cause; or why it was not localized."""
    metrics = (result.get("verdict") or {}).get("metrics") or {}
    if "where" not in metrics:
        return ""
    if metrics["where"] is None:
        return f"**Where?** Not localized: {metrics.get('where_unavailable', 'no layer outputs')}.\n\n"
    return f"**Where?** {Where.from_dict(metrics['where']).sentence(markup=True)}\n\n"


def quality_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The teacher-forced quality against the reference (once judged): top-1 agreement, KL, perplexity ratio."""
    verdict = result.get("verdict") or {}
    metrics = verdict.get("metrics") or {}
    if not verdict:
        return []
    quality = Quality.from_dict(metrics.get("quality"))
    rows = [("Precision (judged at)", str(metrics["precision"]))] if metrics.get("precision") else []
    if quality.unavailable:
        return rows + [("Quality vs reference", f"not available ({quality.unavailable})")]
    if not metrics.get("quality"):
        return rows + [("Quality vs reference", "not measured")]
    if verdict.get("reason", "").startswith("the reference"):
        return rows + [("Quality vs reference", f"the reference (perplexity {quality.ppl_ref:.2f} over "
                                                f"{quality.positions} positions)")]
    return rows + [("Top-1 agreement (teacher-forced)", f"{quality.top1:.1%} of {quality.positions} positions"),
                   ("KL divergence vs reference", f"{quality.kl:.4g} nats/token"),
                   ("Perplexity ratio", f"{ratio_text(quality.ppl_ratio)} ({big_number(quality.ppl_cand)} vs "
                                        f"{big_number(quality.ppl_ref)})")]


def big_number(value: float | None, digits: int = 2) -> str:
    """A figure with ``digits`` decimals, in powers of ten once it is huge (a perplexity of a broken model)."""
    if value is None or value != value:
        return "–"
    if abs(value) < 1e6:
        return f"{value:.{digits}f}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def load_rows(load: dict[str, Any]) -> list[tuple[str, str]]:
    """How the model got there: export (new or cached), TensorRT engine build, load, what runs it."""
    export = {True: "from cache", False: f"{seconds(load.get('export_s'))} (new)"}.get(load.get("export_cached"), "–")
    rows = [("Export", export)]
    if load.get("engine_build_s"):
        rows.append(("Engine build", seconds(load["engine_build_s"])))
    if load.get("compile_s"):
        rows.append(("Compile", seconds(load["compile_s"])))
    runs_on = f"`{load.get('provider') or '?'}`"
    if load.get("threads"):  # what the CPU budget (affinity, cgroup quota, $CPU_CORES) gave the runtime
        runs_on += f", {load['threads']} thread{'' if load['threads'] == 1 else 's'}"
    return rows + [("Load", seconds(load.get("load_s"))), ("Runs on", runs_on)]


def run_summary(run: dict[str, Any]) -> str:
    """One status line above the panels: the error before any backend ran, or agreement of token ids."""
    if run.get("error"):
        return f"<span class='arena-badge arena-badge-error'>ERROR</span> {run['error']}"
    results = [r for r in run.get("results", []) if not r.get("error")]
    prompt_tokens = len(run.get("prompt_token_ids") or [])
    head = kept_note(run) + f"Prompt: {prompt_tokens} tokens, same ids for every backend." + verdict_summary(run)
    if run.get("phase") == "stopped":
        done = [r["label"] for r in results]
        return ("<span class='arena-badge arena-badge-idle'>STOPPED</span> You stopped the run: "
                + (f"{', '.join(done)} finished and {'is' if len(done) == 1 else 'are'} shown" if done else
                   "no backend had finished") + "; nothing was judged (a verdict needs every answer). "
                f"Prompt: {prompt_tokens} tokens.")
    model = run.get("model") or {}
    reach = model.get("reach_positions") or 0
    if run.get("phase") == "judging":
        head += (" <span class='arena-badge arena-badge-waiting'>JUDGING</span> Every backend has answered; "
                 "now the verdicts: perplexity under the reference, first-step logits and teacher-forced "
                 "agreement and KL of each backend against the reference (a forward pass over the "
                 + (f"long text's {reach:,} positions, and its last 32 through each KV cache" if reach else
                    "fixed paragraph") + " each)…")
    elif reach:
        head += (f" Long reach: {reach:,} positions teacher-forced (a full pass each, and the last 32 through each "
                 "backend's KV cache).")
    if model.get("reach_note"):
        head += f" Note: {model['reach_note']}."
    head += busy_badge(run)
    if len(results) >= 2:
        first = results[0]["token_ids"]
        same = [r["label"] for r in results[1:] if r["token_ids"] == first]
        differ = [r["label"] for r in results[1:] if r["token_ids"] != first]
        if not differ:
            head += f" <span class='arena-badge arena-badge-ok'>SAME</span> All {len(results)} backends generated " \
                    "identical token ids."
        else:
            # Red only when a differing backend is judged broken: tokens that drift at a reduced precision are
            # expected (DRIFT), and an amber note then agrees with its verdict.
            broken = any((r.get("verdict") or {}).get("broken") for r in results[1:] if r["token_ids"] != first)
            judged = any(r.get("verdict") for r in results)
            kind = "error" if broken or not judged else "drift"
            head += (f" <span class='arena-badge arena-badge-{kind}'>TOKENS DIFFER</span> "
                     f"Token ids differ from {results[0]['label']}: {', '.join(differ)}"
                     + (f" (identical: {', '.join(same)})" if same else "") + ".")
    reference = run.get("reference_index")
    if reference is not None and reference < len(run.get("results", [])):
        head += f" Reference: {run['results'][reference]['label']}."
    return head


def summary_rows(run: dict[str, Any], task: str = "text") -> list[dict[str, Any]]:
    """The summary table's rows, one per backend that ran: its label, its badge (colour state and words) and, per
    further column of `SUMMARY_COLUMNS`, (text, sort key or None)."""
    rows = []
    for index, result in enumerate(run.get("results") or []):
        state, text = badge(result, is_reference(result, run, index))
        timings, load = result.get("timings") or {}, result.get("load") or {}
        memory = load.get("memory_mb")
        cells: list[tuple[str, float | None]] = []
        if task_of(task).pictures:  # a pipeline's figures: its UNet step, its memory, its picture's PSNR
            median = statistics.median(timings["step_times_s"]) if timings.get("step_times_s") else None
            reference = bool(result.get("is_reference"))
            psnr = "reference" if reference else "–" if result.get("error") else _psnr_text(result)
            cells += [(milliseconds(median), median), (f"{memory:,.0f} MB" if memory else "–", memory),
                      (psnr, 1e9 if reference else result.get("psnr_vs_reference_db"))]
        else:
            quality = Quality.from_dict(((result.get("verdict") or {}).get("metrics") or {}).get("quality"))
            speed, ttft = timings.get("tokens_per_s"), timings.get("ttft_s")
            cells += [(f"{speed:.1f}" if speed is not None else "–", speed), (milliseconds(ttft), ttft),
                      (f"{memory:,.0f} MB" if memory else "–", memory)]
            if quality.measured and state == "reference":
                cells += [("reference", quality.top1), ("reference", quality.kl), ("reference", quality.ppl_ratio)]
            elif quality.measured:
                cells += [(f"{quality.top1:.1%}", quality.top1), (f"{quality.kl:.3g}", quality.kl),
                          (ratio_text(quality.ppl_ratio), quality.ppl_ratio)]
            else:
                cells += [("–", None)] * 3
        rows.append({"label": result.get("label", result.get("backend", "?")), "state": state, "verdict": text,
                     "cells": cells})
    return rows


SUMMARY_COLUMNS = {
    "text": ("Backend", "Verdict", "Tokens/s", "TTFT", "Load memory", "Top-1", "KL (nats)", "Perplexity ratio"),
    "image": ("Backend", "Verdict", "Median step", "Load memory", "PSNR vs reference"),
}
# The verdict column sorts from broken to fine (a click on its header brings the broken rows to the top).
SEVERITY = {"error": 0, "drift": 1, "idle": 2, "waiting": 3, "ok": 4, "reference": 5}


def summary_table(run: dict[str, Any], task: str = "text") -> str:
    """The run at a glance, under its status line: one row per backend (label, verdict badge, speed, memory and
    quality against the reference), in a box of its own that scrolls sideways on a narrow screen (never the
    page), its columns sortable by a click on their header (assets/arena.js). "" before any backend ran."""
    rows = summary_rows(run, task)
    if not rows:
        return ""
    escape = str.maketrans({"<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&#39;"})
    head = "".join(f"<th scope='col' tabindex='0' aria-sort='none' title='Sort by this column'>{name}</th>"
                   for name in SUMMARY_COLUMNS[task])
    body = []
    for row in rows:
        cells = [f"<th scope='row'>{row['label'].translate(escape)}</th>",
                 f"<td data-sort='{SEVERITY[row['state']]}'><span class='arena-badge arena-badge-{row['state']}'>"
                 f"{row['verdict']}</span></td>"]
        cells += [f"<td class='arena-num'{'' if key is None else f' data-sort={key:.6g}'}>{text.translate(escape)}</td>"
                  for text, key in row["cells"]]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ("<div class='arena-summary-box' role='region' aria-label='Summary of the run' tabindex='0'>"
            f"<table class='arena-summary arena-summary-{task}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def verdict_summary(run: dict[str, Any]) -> str:
    """" Verdicts: 2 MATCH, 1 GIBBERISH (ONNX Runtime · CPU · int8)." once the run is judged."""
    verdicts = [(r["label"], r["verdict"]) for r in run.get("results", []) if r.get("verdict")]
    if not verdicts:
        return ""
    counts: dict[str, list[str]] = {}
    for label, verdict in verdicts:
        counts.setdefault(verdict["kind"], []).append(label)
    broken = [label for label, verdict in verdicts if verdict["broken"]]
    parts = ", ".join(f"{len(labels)} {kind}" for kind, labels in counts.items())
    kind = "error" if broken else "ok"
    return (f" <span class='arena-badge arena-badge-{kind}'>{'BROKEN' if broken else 'OK'}</span> Verdicts: "
            f"{parts}" + (f"; broken: {', '.join(broken)}" if broken else "") + ".")


def unavailable_note(options: dict[str, list[OptionChoice]], fields: tuple = (), task: str | None = None) -> str:
    """List each option value that cannot run here, with why and how to install what is missing, and (with the
    backend's ``fields`` and the tab's ``task``) each value that cannot run this task, with why."""
    lines = []
    by_name = {field.name: field for field in fields}
    for option, choices in options.items():
        field = by_name.get(option)
        for choice in choices:
            refusal = field.task_refusal(choice.value, task, "") if field is not None and task else None
            if refusal:
                lines.append(f"- **{choice.label}** ({option}) not for {task} models: {refusal}")
            elif not choice.availability.ok:
                lines.append(f"- **{choice.label}** ({option}) unavailable here: {choice.availability.sentence()}")
    return "\n".join(lines)


def choice_labels(choices: list[OptionChoice]) -> list[tuple[str, str]]:
    """(label, value) pairs for a Radio/Dropdown; unavailable values say so in their label."""
    return [(c.label if c.availability.ok else f"{c.label} — unavailable", c.value) for c in choices]


def image_metrics(result: dict[str, Any]) -> str:
    """Time split, load facts and similarity to the reference for one image backend, and where it broke."""
    if result.get("error"):  # a NaN guard's stop is localized too: its "Where?" line follows the error
        where = where_markdown(result)
        return panel_metrics(result) + ("\n\n" + where if where else "")
    timings, load = result.get("timings") or {}, result.get("load") or {}
    similarity = "reference" if result.get("is_reference") else _psnr_text(result)
    rows = [
        ("Total", seconds(timings.get("total_s"))),
        ("Text encoder", seconds(timings.get("text_encoder_s"))),
        ("UNet loop", f"{seconds(timings.get('unet_s'))} ({len(timings.get('step_times_s') or [])} steps)"),
        ("VAE decode", seconds(timings.get("vae_s"))),
        ("PSNR vs reference", similarity),
        *load_rows(load),
        *machine_rows(result),
    ]
    notes = load.get("notes") or []
    return verdict_line(result) + where_markdown(result) + "| Measure | Value |\n|---|---|\n" + \
        "\n".join(f"| {k} | {v} |" for k, v in rows) + ("\n\n" + "; ".join(notes) if notes else "")


def image_summary(run: dict[str, Any]) -> str:
    """The status line of an image run: the error, or each backend's PSNR against the reference."""
    if run.get("error"):
        return f"<span class='arena-badge arena-badge-error'>ERROR</span> {run['error']}"
    model = run.get("model") or {}
    head = (kept_note(run) + f"{model.get('width')}x{model.get('height')} px, same latents and scheduler for every "
            "backend." + verdict_summary(run))
    notes = model.get("notes") or []
    if notes:
        head += " Config: " + "; ".join(notes) + "."
    done = [r for r in run.get("results", []) if not r.get("error")]
    reference = next((r for r in done if r.get("is_reference")), None)
    others = [r for r in done if r is not reference]
    if reference is not None and others:
        head += " PSNR vs " + reference["label"] + ": " + ", ".join(
            f"{r['label']} {_psnr_text(r)}" for r in others) + "."
    return head + busy_badge(run)


def _psnr_text(result: dict[str, Any]) -> str:
    if result.get("identical_to_reference"):
        return "identical"
    value = result.get("psnr_vs_reference_db")
    return "–" if value is None else f"{value:.1f} dB"
