"""The sweep as an API function (`ui.api` registers it as /load_sweep): its parameters are the request's declared
fields, like /compare_text's; refused in public mode before anything runs."""

from __future__ import annotations

import threading
from typing import Any

from arena.serving.request import LoadRunRequest
from arena.serving.sweep import PUBLIC_REFUSAL, run_sweep


def load_sweep_values(arena, values: dict[str, Any], cancel: threading.Event | None = None,
                      progress=None) -> dict[str, Any]:
    """A sweep from {field: value} (an API call's or a form's), or {"error": sentence}; ``progress(fraction,
    description)`` follows it."""
    if arena.policy.public:  # before the values are even read: nothing of a visitor's reaches a server
        return {"task": "load", "error": PUBLIC_REFUSAL, "servers": []}
    try:
        request = LoadRunRequest.from_values({k: v for k, v in values.items() if v is not None})
    except (ValueError, TypeError) as exc:
        return {"task": "load", "error": str(exc), "servers": []}
    return run_sweep(arena, request, progress or (lambda *_: None), cancel=cancel)


SUMMARY = ("Sweep OpenAI-compatible servers over concurrency levels (or Poisson request rates): TTFT, inter-token "
           "and end-to-end latency p50/p90/p99, tokens/s per user and in total, requests/s, goodput, failed "
           "requests with reasons, and every level's greedy answers judged against the reference and the server's "
           "first level. Not available on a public server.")
RETURNS = "the sweep as JSON: servers[].levels[] with figures, machine (busy marks), verdict and answers."
