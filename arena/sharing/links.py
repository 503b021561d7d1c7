"""Links that open the dashboard with a run's settings filled in: ``?tab=text&model=..&prompt=..&backends=<json>``.

`share_query` writes a request's settings as query parameters; `request_from_query` reads them back through the
same request types the forms use (`BackendSpec.from_any`, `TextRunRequest`, `ImageRunRequest`), so a link holds
nothing a form could not; the public-mode gate still applies when the filled form is run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from arena.preparing.catalog import DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL
from arena.types import BackendSpec, ImageRunRequest, TextRunRequest

TEXT_FIELDS = ("max_new_tokens", "prompt_format", "ignore_eos", "warmup", "repeats", "reference")
IMAGE_FIELDS = ("negative_prompt", "steps", "guidance_scale", "seed", "height", "width", "reference")


def _backend_options(backend: dict[str, Any]) -> dict[str, Any]:
    """A backend dict without its label and without options left at their default (short links)."""
    try:
        defaults = BackendSpec(backend["backend"]).options
    except ValueError:
        defaults = {}
    return {"backend": backend["backend"], **{k: v for k, v in backend.items()
                                              if k in defaults and v is not None and v != defaults[k]}}


def share_query(task: str, request: Mapping[str, Any]) -> dict[str, str]:
    """The query parameters of a request dict (``TextRunRequest.to_dict()`` or the image one)."""
    query = {"tab": task, "model": str(request.get("model", "")), "prompt": str(request.get("prompt", "")),
             "backends": json.dumps([_backend_options(b) for b in request.get("backends") or []],
                                    separators=(",", ":"))}
    for name in TEXT_FIELDS if task == "text" else IMAGE_FIELDS:
        value = request.get(name)
        if value is not None and value != "":
            query[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return query


def share_link(base_url: str, task: str, request: Mapping[str, Any]) -> str:
    """``base_url`` (the dashboard's address) with the request's settings as query parameters."""
    return base_url.split("?")[0].split("#")[0] + "?" + urlencode(share_query(task, request))


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"'{value}' is not true or false.")


def request_from_query(params: Mapping[str, str]) -> tuple[str, TextRunRequest | ImageRunRequest] | None:
    """(task, request) from a link's query parameters; None when the link carries no settings.

    A malformed value is a ValueError whose message names it (shown to the visitor instead of filling)."""
    if not any(k in params for k in ("model", "prompt", "backends")):
        return None
    task = params.get("tab", "text")
    if task not in ("text", "image"):
        raise ValueError(f"The link's tab '{task}' is not text or image.")
    try:
        items = json.loads(params["backends"]) if params.get("backends") else ["pytorch", "onnxruntime"]
        if not isinstance(items, list):
            raise ValueError("backends must be a JSON list")
        backends = tuple(BackendSpec.from_any(b) for b in items)
        if task == "text":
            return task, TextRunRequest(
                model=params.get("model") or DEFAULT_TEXT_MODEL, prompt=params.get("prompt", ""), backends=backends,
                max_new_tokens=int(params.get("max_new_tokens", 64)),
                prompt_format=params.get("prompt_format", "auto"),
                ignore_eos=_flag(params.get("ignore_eos", "false")), warmup=int(params.get("warmup", 1)),
                repeats=int(params.get("repeats", 1)), reference=params.get("reference", "auto"))
        return task, ImageRunRequest(
            model=params.get("model") or DEFAULT_IMAGE_MODEL, prompt=params.get("prompt", ""), backends=backends,
            negative_prompt=params.get("negative_prompt", ""), steps=int(params.get("steps", 20)),
            guidance_scale=float(params.get("guidance_scale", 4.0)), seed=int(params.get("seed", 0)),
            height=int(params["height"]) if params.get("height") not in (None, "", "None") else None,
            width=int(params["width"]) if params.get("width") not in (None, "", "None") else None,
            reference=params.get("reference", "auto"))
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"This link's settings cannot be read: {exc}") from exc
