"""Backend Arena core. The folders are its jobs:

- ``core.py`` (the `Arena` every front end calls), ``types.py`` (requests and results), ``registry.py`` (the
  line per backend), ``errors.py``;
- ``running/``: worker processes, the backend host inside them, CPU and memory budgets, the machine's facts,
  start-up warm-up;
- ``preparing/``: the model catalog, model resolution and shared inputs, the artifact cache, the embedded image
  model's scenes, the server-made broken exports;
- ``judging/``: verdicts, image similarity, the headless check;
- ``public/``: the public border (the request gate and its limits, the server's secrets, Hub repositories read as
  data);
- ``sharing/``: run history, reports and settings links.

Importing this package never imports torch, transformers or onnxruntime: those live in worker processes.

Its public surface is `PUBLIC`: the names a front end (ui/, app.py) imports, ``from arena import Arena,
TextRunRequest``, each from the module that defines it, imported when first asked (PEP 562), so ``import
arena.errors`` in a worker costs what it did. ui/ and app.py import nothing else of arena and nothing of backends/
(tests/test_layout.py).
"""

import importlib as _importlib
import os as _os

# huggingface_hub 2.x reports usage to the Hub on a process's first call (GET /api/agent-harnesses) unless told not
# to: the arena's processes (the app, its workers, the CLI) make no request a user did not ask for. A user's own
# setting wins.
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# {public name: "module" (the same name there) or "module:name"}. A front end needing more of the core adds it here.
PUBLIC = {
    # running: the one object every front end calls, its errors, requests and results
    "Arena": "arena.core",
    "ArenaError": "arena.errors",
    "BackendSpec": "arena.types",
    "ImageRunRequest": "arena.types",
    "ImageRunResult": "arena.types",
    "REQUESTS": "arena.types",
    "TextRunRequest": "arena.types",
    "Task": "arena.tasks",
    "TASKS": "arena.tasks",
    "task_of": "arena.tasks",
    # request fields and backends as the forms and the API describe them
    "API_TYPES": "arena.fields",
    "FieldInfo": "arena.fields",
    "api_docstring": "arena.fields",
    "api_parameters": "arena.fields",
    "api_signature": "arena.fields",
    "DEFAULT_BACKENDS": "arena.registry",
    "default_reference": "arena.registry",
    "OptionChoice": "backends.contract",
    "OptionInfo": "backends.contract",
    "SERVER_SIDE_KINDS": "backends.contract",
    "configured_endpoints": "arena.public.policy",
    # the models and prompts the forms offer
    "CATALOG": "arena.preparing.catalog",
    "EXAMPLE_PROMPTS": "arena.preparing.catalog",
    "PROMPT_FORMATS": "arena.preparing.catalog",
    "find_catalog_model": "arena.preparing.catalog",
    "IMAGE_CATALOG": "arena.preparing.catalog",
    "IMAGE_EXAMPLE_PROMPTS": "arena.preparing.catalog",
    "find_image_catalog_model": "arena.preparing.catalog",
    # judging, as shown: the headless check, the difference picture, the verdict kinds, typed results (where it
    # broke, teacher-forced quality), where an image broke
    "CHECK_REACH": "arena.judging.check",
    "CheckRequest": "arena.judging.check",
    "check": "arena.judging.check",
    "difference_heatmap": "arena.judging.verdicts",
    "VERDICT_KINDS": "arena.judging.kinds:KINDS",
    "verdict_kind_state": "arena.judging.kinds:kind_state",
    "Quality": "arena.judging.results",
    "Where": "arena.judging.results",
    "IMAGE_COMPONENT_TITLES": "arena.judging.results:COMPONENT_TITLES",
    "image_where_at_step": "arena.judging.results:at_step",
    "image_where_figures": "arena.judging.results:component_summary",
    # the machine, and what a run leaves behind
    "runtime_facts": "arena.running.environment",
    "HistoryEntry": "arena.sharing.history",
    "carries_settings": "arena.sharing.links",
    "request_from_query": "arena.sharing.links",
    "request_of": "arena.sharing.links",
    "backend_class": "arena.registry",
    "share_link": "arena.sharing.links",
    "write_reports": "arena.sharing.reports",
    # serving under load (the Load tab and /load_sweep)
    "LoadRunRequest": "arena.serving.request",
    "server_backends": "arena.serving.request",
    "load_sweep_values": "arena.serving.api",
    "LOAD_SWEEP_SUMMARY": "arena.serving.api:SUMMARY",
    "LOAD_SUMMARY_HEADER": "arena.serving.report:SUMMARY_HEADER",
    "load_summary_rows": "arena.serving.report:summary_rows",
    "load_report_markdown": "arena.serving.report:report_markdown",
    "LOAD_PUBLIC_REFUSAL": "arena.serving.sweep:PUBLIC_REFUSAL",
    # starting the server (app.py): secrets out of the environment, ZeroGPU, the public policy, the warm-up
    "hide_initial_environment": "arena.public.secrets",
    "zerogpu_active": "arena.running.zerogpu:active",
    "zerogpu_install": "arena.running.zerogpu:install",
    "Policy": "arena.public.policy",
    "PublicLimits": "arena.public.policy",
    "parse_limit_overrides": "arena.public.policy",
    "WarmUp": "arena.running.warmup",
}
__all__ = sorted(PUBLIC)


def __getattr__(name: str):
    """A public name, imported from its module on first use (then kept here)."""
    if name not in PUBLIC:
        raise AttributeError(f"module 'arena' has no attribute {name!r} (its public names: arena.PUBLIC)")
    module, _, attribute = PUBLIC[name].partition(":")
    value = getattr(_importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(PUBLIC))
