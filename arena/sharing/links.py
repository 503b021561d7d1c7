"""Links that open the dashboard with a run's settings filled in: ``?tab=text&model=..&prompt=..&backends=<json>``.

`share_query` writes a request's declared fields (`arena.fields`) as query parameters; `request_from_query` reads
them back through the same declarations the forms use, so a link holds nothing a form could not; the public-mode
gate still applies when the filled form is run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from arena.types import REQUESTS, BackendSpec, ImageRunRequest, TextRunRequest


def _backend_options(backend: dict[str, Any]) -> dict[str, Any]:
    """A backend dict without its label and without options left at their default (short links)."""
    try:
        defaults = BackendSpec(backend["backend"]).options
    except ValueError:
        defaults = {}
    return {"backend": backend["backend"], **{k: v for k, v in backend.items()
                                              if k in defaults and v is not None and v != defaults[k]}}


def share_query(task: str, request: Mapping[str, Any]) -> dict[str, str]:
    """The query parameters of a request dict (``TextRunRequest.to_dict()`` or the image one): every declared
    field that is set, the backends as a JSON list of their non-default options."""
    query = {"tab": task}
    for info in REQUESTS[task].fields():
        value = request.get(info.name)
        if info.kind == "backends":
            query[info.name] = json.dumps([_backend_options(b) for b in value or []], separators=(",", ":"))
        elif value is not None and (value != "" or info.name == "prompt"):
            query[info.name] = str(value).lower() if isinstance(value, bool) else str(value)
    return query


def share_link(base_url: str, task: str, request: Mapping[str, Any]) -> str:
    """``base_url`` (the dashboard's address) with the request's settings as query parameters."""
    return base_url.split("?")[0].split("#")[0] + "?" + urlencode(share_query(task, request))


def carries_settings(params: Mapping[str, str]) -> bool:
    """Whether a page's query parameters are a settings link or a result link (``?run=<id>``), not, say, only a
    theme."""
    return any(k in params for k in ("model", "prompt", "backends", "run"))


def request_from_query(params: Mapping[str, str]) -> tuple[str, TextRunRequest | ImageRunRequest] | None:
    """(task, request) from a link's query parameters; None when the link carries no settings. Each parameter is
    read by its declared field (`arena.fields`); parameters that are not fields (a theme) are ignored.

    A malformed value is a ValueError whose message names it (shown to the visitor instead of filling)."""
    if not any(k in params for k in ("model", "prompt", "backends")):
        return None
    task = params.get("tab", "text")
    if task not in REQUESTS:
        raise ValueError(f"The link's tab '{task}' is not text or image.")
    request_cls = REQUESTS[task]
    names = {info.name for info in request_cls.fields()}
    try:
        return task, request_cls.from_values({k: v for k, v in params.items() if k in names})
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"This link's settings cannot be read: {exc}") from exc


def request_of(task: str, run: Mapping[str, Any]) -> TextRunRequest | ImageRunRequest:
    """The request a kept run was made from, read back through the request's declared fields (its backends
    through their own options)."""
    return REQUESTS[task].from_values(dict(run["request"]))
