"""The Environment tab: what this machine has, and for everything missing, why and how to install it."""

from __future__ import annotations

from typing import Any

import gradio as gr

from arena import Arena, runtime_facts


def cpu_line(env: dict[str, Any]) -> str:
    """"1 CPU for this app (affinity: 1 of 2 host cores; cgroup quota: none), 23.5 GB RAM (container limit: none)"."""
    cpu = env.get("cpu")
    limit = env.get("memory_limit_gb")
    memory = f"{env.get('memory_gb')} GB RAM (container limit: {f'{limit} GB' if limit else 'none'})"
    if not cpu:  # facts from an older probe
        return f"{env.get('cpu_count')} CPU cores, {memory}"
    n, host, quota = cpu.get("effective"), cpu.get("host_cores"), cpu.get("cgroup_quota")
    why = [f"affinity: {cpu['affinity']} of {host} host cores" if cpu.get("affinity") else f"{host} host cores",
           f"cgroup quota: {_cpus(quota)}" if quota else "cgroup quota: none"]
    if cpu.get("cpu_cores_env"):
        why.append(f"CPU_CORES={cpu['cpu_cores_env']}")
    return f"{_cpus(n)} for this app ({'; '.join(why)}), {memory}"


def _cpus(n: float) -> str:
    return f"{n:g} CPU" + ("" if n == 1 else "s")


def environment_markdown(env: dict[str, Any], backend_options: dict[str, dict[str, Any]]) -> str:
    """Facts of the machine and every backend option's availability, as Markdown."""
    if env.get("probe_error"):
        return f"**The environment probe failed:** {env['probe_error']}"
    runtimes = runtime_facts(env)  # what each backend's runtime says (`Backend.machine_facts`)
    gpus = ", ".join(f"{d['name']} (sm {d['capability']}, {d['memory_gb']} GB)" for d in runtimes["gpus"])
    seen_by = f"GPUs seen by {runtimes['gpus_seen_by']}" if runtimes["gpus_seen_by"] else "GPUs"
    lines = [
        "### Machine",
        f"- Python {env.get('python')} on {env.get('platform')}",
        f"- {cpu_line(env)}",
        f"- {seen_by}: {gpus or 'none'}",
        *(f"- {line}" for line in runtimes["runtimes"]),
        "",
        "### Backends and options",
        "| Backend | Option | Value | Status |",
        "|---|---|---|---|",
    ]
    for info in backend_options.values():
        whole = info["availability"]
        if not whole.ok:
            lines.append(f"| {info['title']} | – | – | unavailable: {whole.sentence()} |")
            continue
        for option, choices in info["options"].items():
            for choice in choices:
                status = "available" if choice.availability.ok else f"unavailable: {choice.availability.sentence()}"
                lines.append(f"| {info['title']} | {option} | {choice.label} | {status} |")
    versions = env.get("versions", {})
    lines += ["", "### Package versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v)]
    return "\n".join(lines)


def build_environment_tab(arena: Arena) -> gr.Markdown:
    return gr.Markdown(environment_markdown(arena.environment(), arena.backend_options()),
                       elem_id="environment")
