"""The run that ships with the repo (assets/reference-run/, written by scripts/record_reference_run.py): a real
comparison of the default models shown in the panels on page load, until the visitor runs their own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

STORED = Path(__file__).resolve().parent.parent / "assets" / "reference-run"


def load_stored(name: str) -> dict[str, Any] | None:
    """``text`` or ``image``: the stored record, or None when the file is missing or unreadable."""
    try:
        return json.loads((STORED / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def banner(record: dict[str, Any]) -> str:
    machine = record.get("machine", {})
    return (f"<span class='arena-badge arena-badge-idle'>STORED RUN</span> Recorded on {record.get('date', '?')} "
            f"on {machine.get('summary', 'an unknown machine')} — shown until you press Run.\n\n")


def stored_text_updates(tab) -> dict:
    from ui.format import run_summary
    from ui.text_tab import render_run

    record = load_stored("text")
    if record is None:  # nothing stored: change nothing (an empty dict would be an error badge on every output)
        return {tab.status: gr.update()}
    run = record["run"]
    updates = render_run(tab, run, {r["backend"] for r in run["results"]})
    updates[tab.status] = banner(record) + run_summary(run)
    return updates


def stored_image_updates(tab) -> dict:
    from PIL import Image

    from ui.format import image_summary
    from ui.image_tab import render_image_dict

    record = load_stored("image")
    if record is None:
        return {tab.status: gr.update()}
    run = record["run"]
    images = [np.asarray(Image.open(STORED / name).convert("RGB")) if name else None for name in record["images"]]
    updates = render_image_dict(tab, run, images, {r["backend"] for r in run["results"]})
    updates[tab.status] = banner(record) + image_summary(run)
    return updates
