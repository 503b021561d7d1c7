"""The two tasks the arena compares, each declared once: text generation and image generation.

What differs between them is data on its `Task` (its request and result types, whether its results carry pictures
or stream text, its catalog, the prompts a check runs, its report's evidence columns) or one method per stage
named by the task: ``Preparer.prepare_<task>``, ``BackendHost.run_<task>``, ``JudgingStage.<task>``,
``Arena.run_<task>``, the broken examples' ``Demos.<task>_request`` (`Task.step` finds it). A third task (say
speech) is one declaration here, its request and result types, and one method in each of those stages; the core
tests no task's name.

Pure data and stdlib: safe in the UI process. The name ("text", "image") is what requests, results, links, History
and reports carry; `task_of` turns any of them back into the `Task`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arena.preparing.catalog import (
    EXAMPLE_PROMPTS,
    IMAGE_CATALOG,
    IMAGE_EXAMPLE_PROMPTS,
    find_catalog_model,
    find_image_catalog_model,
)
from arena.types import ImageRunRequest, ImageRunResult, TextRunRequest, TextRunResult

# The prompts `check` runs on a text model when none are given: three kinds of answer (an explanation, verse, a
# simplification).
TEXT_CHECK_PROMPTS = (
    "Why should one run machine learning models on-premises?",
    "Write a short poem about the sea.",
    "Explain what a neural network is to a child.",
)


@dataclass(frozen=True)
class Task:
    name: str  # "text" / "image": the value requests, results, links, History and reports carry
    title: str
    request: type  # its request type (`arena.types`): links, History and the CLI find its fields there
    result: type  # its run's result type
    pictures: bool  # its results carry a picture per backend (kept as PNG beside History, heatmaps in reports)
    streams_text: bool  # its backends write text token by token (answers, tokens/s, TTFT, the prompt estimate)
    example_prompts: tuple[str, ...]
    check_prompts: tuple[str, ...]  # what `check` runs when given no prompts
    find_model: Callable[[str], Any]  # its catalog entry for a key or hub id, or None
    evidence: tuple[str, ...]  # the report's figures beside each verdict
    unit: str  # what localization names: a layer or sub-module ("unit"), or a pipeline component

    def step(self, stage: Any, pattern: str = "{}") -> Callable[..., Any]:
        """``stage``'s method for this task, named by ``pattern`` (``task.step(preparer, "prepare_{}")`` is
        ``preparer.prepare_text`` for text)."""
        return getattr(stage, pattern.format(self.name))

    def __str__(self) -> str:
        return self.name


TEXT = Task("text", "Text", TextRunRequest, TextRunResult, pictures=False, streams_text=True,
            example_prompts=EXAMPLE_PROMPTS, check_prompts=TEXT_CHECK_PROMPTS, find_model=find_catalog_model,
            evidence=("Top-1 agreement", "KL (nats)", "Perplexity ratio"), unit="unit")
IMAGE = Task("image", "Image", ImageRunRequest, ImageRunResult, pictures=True, streams_text=False,
             example_prompts=IMAGE_EXAMPLE_PROMPTS, check_prompts=IMAGE_EXAMPLE_PROMPTS[:3],
             find_model=find_image_catalog_model, evidence=("PSNR (dB)", "SSIM"), unit="component")
TASKS: dict[str, Task] = {task.name: task for task in (TEXT, IMAGE)}


def task_of(value: Any) -> Task:
    """The task of a name ("text"), a `Task`, or anything with a ``task`` attribute or key (a request, a prepared
    input, a result, a History entry, a result dict). Unknown: ValueError naming the tasks."""
    if isinstance(value, Task):
        return value
    name = value.get("task") if isinstance(value, dict) else getattr(value, "task", value)
    if isinstance(name, Task):
        return name
    try:
        return TASKS[str(name)]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}; the tasks: {', '.join(TASKS)}.") from None


def image_fallback_entry(model: str) -> Any:
    """The image catalog entry for ``model``, or the embedded one's (a local pipeline folder takes its settings)."""
    return find_image_catalog_model(model) or IMAGE_CATALOG[0]
