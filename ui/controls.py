"""Widgets shared by the Text and Image tabs: one accordion of options per backend."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import gradio as gr

from arena import SERVER_SIDE_KINDS, ArenaError, BackendSpec, FieldInfo, OptionChoice, OptionInfo
from ui.format import choice_labels, unavailable_note

RUN_CONCURRENCY_ID = "arena-run"  # every run (UI or API, text or image) shares one slot: timed runs never overlap


@dataclass
class BackendOptionControls:
    name: str
    title: str
    enabled: gr.Checkbox
    widgets: dict[str, gr.components.Component]
    unavailable: str = ""  # why this backend cannot run here at all, with the install command ("" if it can)

    def values(self, data: dict) -> dict[str, Any]:
        """This backend's fields from a Gradio input dict (``enabled`` plus every option)."""
        return {"enabled": data[self.enabled], **{key: data[w] for key, w in self.widgets.items()}}


def build_backend_controls(backend_options: dict[str, dict[str, Any]], prefix: str, task: str = "text",
                           allow_paths: bool = True) -> list[BackendOptionControls]:
    """One accordion per backend that runs ``task``: run checkbox, then a widget per option of that task, built
    from the backend's options (`backends.contract.option`): a choice is a radio (a dropdown past three choices)
    labelled with why a choice cannot run here, a flag a checkbox, a path or text a textbox.

    ``prefix`` keeps element ids unique between tabs ("" for the Text tab, "image-" for the Image tab).
    ``allow_paths`` False (public mode) leaves out the options that reach outside the server's own work (paths,
    secrets: `SERVER_SIDE_KINDS`), which the policy refuses anyway; a URL becomes a dropdown of the endpoints the
    operator configured, by name (left out when there are none). A backend that is not ``enabled_by_default`` (it
    needs a server the user runs) starts unticked.
    """
    from arena import configured_endpoints

    endpoints = list(configured_endpoints())
    controls = []
    for name, info in backend_options.items():
        if task not in info.get("tasks", (task,)):
            continue
        available = info["availability"]
        with gr.Accordion(info["title"], open=True):
            enabled = gr.Checkbox(value=available.ok and info.get("enabled_by_default", True),
                                  label=f"Run {info['title']}", interactive=available.ok,
                                  elem_id=f"{prefix}enable-{name}",
                                  info=None if available.ok else available.sentence())
            widgets = {}
            defaults = {field.name: field.default for field in info["fields"]}
            for field in info["fields"]:
                if task not in field.tasks:
                    continue
                elem_id = f"{prefix}{name}-{field.name}"
                if not allow_paths and field.kind == "url":
                    widget = endpoint_dropdown(field, endpoints, elem_id)
                elif allow_paths or field.kind not in SERVER_SIDE_KINDS:
                    widget = option_widget(field, info["options"].get(field.name), task, elem_id,
                                           visible=field.is_used(defaults))
                else:
                    widget = None
                if widget is not None:
                    widgets[field.name] = widget
            show_when_used(info["fields"], widgets)
            note = unavailable_note(info["options"], info["fields"], task)
            if note:
                with gr.Accordion(f"Not offered here ({note.count(chr(10)) + 1}): why, and how to install",
                                  open=False):
                    gr.Markdown(note, elem_classes=["arena-unavailable"])
        controls.append(BackendOptionControls(name, info["title"], enabled, widgets,
                                              "" if available.ok else available.sentence()))
    return controls


def option_widget(field: OptionInfo, choices: list[OptionChoice] | None, task: str,
                  elem_id: str, visible: bool = True) -> gr.components.Component | None:
    """The widget for one backend option; ``choices`` (a choice option's values and their availability here)
    come from the backend's probe, else from the option's declared choices. ``visible`` False: unused by the
    other options' values (`show_when_used` shows it when they change)."""
    if field.kind == "choice":
        choices = choices or [OptionChoice(value, value) for value in field.choices]
        # A choice that cannot run this tab's task is not offered here (the tab's note says why).
        left_out = [c.label for c in choices if not field.runs_task(c.value, task)]
        choices = [c for c in choices if field.runs_task(c.value, task)]
        if not choices:
            return None
        runnable = [c.value for c in choices if c.availability.ok]
        value = field.default if field.default in runnable else (runnable or [choices[0].value])[0]
        widget = gr.Dropdown if len(choices) > 3 else gr.Radio
        info = f"Not for {task} models: {', '.join(left_out)} (the Text tab has them)." if left_out else None
        return widget(choices=choice_labels(choices), value=value, label=field.title(), elem_id=elem_id, info=info,
                      visible=visible)
    if field.kind == "bool":
        return gr.Checkbox(bool(field.default), label=field.title(), info=field.help or None, elem_id=elem_id,
                           visible=visible)
    return gr.Textbox(value=field.default or "", label=field.title(), placeholder=field.placeholder_for(task),
                      info=field.help or None, elem_id=elem_id, visible=visible)


def show_when_used(fields: tuple[OptionInfo, ...], widgets: dict[str, gr.components.Component]) -> None:
    """Hide each option while the backend's other options make it unused (`OptionInfo.used_with`: the
    quantization settings while fp32 is picked), and show it again when they change (a user's pick, an example,
    a link): one event per deciding option, updating every option it decides."""
    dependent = [f for f in fields if f.used_with and f.name in widgets and set(f.used_with) <= set(widgets)]
    for trigger in dict.fromkeys(name for f in dependent for name in f.used_with):
        decided = [f for f in dependent if trigger in f.used_with]
        names = list(dict.fromkeys(name for f in decided for name in f.used_with))

        def update(*values, decided=decided, names=names):
            chosen = dict(zip(names, values, strict=True))
            return [gr.update(visible=f.is_used(chosen)) for f in decided]

        widgets[trigger].change(update, [widgets[n] for n in names], [widgets[f.name] for f in decided],
                                queue=False, show_progress="hidden", api_visibility="private")


def endpoint_dropdown(field: OptionInfo, endpoints: list[str], elem_id: str) -> gr.Dropdown | None:
    """A "url" option on a public server: the operator's endpoints by name (`arena.public.policy.configured_endpoints`),
    never a URL; None when the operator configured none."""
    if not endpoints:
        return None
    return gr.Dropdown(endpoints, value=endpoints[0], label=field.title(), elem_id=elem_id,
                       info="The servers this public arena offers.")


def reference_dropdown(backend_options: dict[str, dict[str, Any]], elem_id: str,
                       task: str | None = None) -> gr.Dropdown:
    """Which backend the others are judged against (auto: PyTorch fp32, else the first selected); with ``task``,
    only the backends that run it."""
    choices = [(info["title"], name) for name, info in backend_options.items()
               if task is None or task in info.get("tasks", (task,))]
    return gr.Dropdown([("auto (PyTorch fp32, else the first)", "auto"), *choices],
                       value="auto", label="Reference", elem_id=elem_id,
                       info="Verdicts compare every backend with this one (it must be selected).")


def field_widget(info: FieldInfo, policy, **kwargs: Any) -> gr.components.Component:
    """The widget of one request field (`arena.fields`): its label, help, default and bounds, the upper bound
    lowered to the field's public cap on a public server. A number with a step is a slider; a size's 0 means
    the model's native size."""
    maximum = info.form_maximum or info.maximum
    if policy.public and info.public_cap and info.kind != "text":
        cap = getattr(policy.limits, info.public_cap)
        maximum = cap if maximum is None else min(maximum, cap)
    common = {"label": info.label, "info": info.help[:1].upper() + info.help[1:] + "." if info.help else None}
    if info.kind == "bool":
        return gr.Checkbox(bool(info.default), **common, **kwargs)
    if info.choices:
        return gr.Radio(list(info.choices), value=info.default, **common, **kwargs)
    if info.kind in ("int", "float") and info.step is not None:
        return gr.Slider(info.minimum, maximum, value=info.default, step=info.step, **common, **kwargs)
    if info.kind in ("int", "float", "size"):
        return gr.Number(info.default or 0 if info.kind == "size" else info.default,
                         precision=None if info.kind == "float" else 0,
                         minimum=0 if info.kind == "size" else info.minimum, maximum=maximum, **common, **kwargs)
    return gr.Textbox(info.default, **common, **kwargs)


def example_prompts(prompt: gr.Textbox, prompts, elem_id: str) -> None:
    """The example prompts as small buttons that fill the prompt box (``gr.Examples`` draws empty "· · ·"
    buttons in a tab that starts hidden, such as the Image tab)."""
    def fill(text: str):
        return lambda: text

    gr.Markdown("Example prompts:", elem_classes=["arena-notes"])
    with gr.Row(elem_id=elem_id):
        for text in prompts:
            gr.Button(text, size="sm", variant="secondary", min_width=80).click(
                fill(text), None, prompt, api_visibility="private", queue=False)


def run_row(task: str, status_id: str) -> tuple[gr.Button, gr.Button, gr.Markdown, gr.HTML, gr.Markdown]:
    """A tab's Run and Stop buttons, its status line, the run's summary table under it (`format.summary_table`)
    and the line that gets the run's link."""
    with gr.Row():
        run = gr.Button("Run", variant="primary", elem_id=f"run-{task}", scale=4)
        stop = gr.Button("Stop", variant="stop", elem_id=f"stop-{task}", scale=1)
    status = gr.Markdown("", elem_id=status_id, min_height=60)
    summary = gr.HTML("", elem_id=f"summary-{task}", elem_classes=["arena-summary-block"])
    share = gr.Markdown("", elem_id=f"share-{task}", elem_classes=["arena-notes"])
    return run, stop, status, summary, share


def form_request(request_cls, fields: dict[str, gr.components.Component], data: dict, panels: list):
    """The request from a form: each field widget's value read by its declaration, the ticked backends' specs."""
    backends = {panel.name: panel.controls.values(data) for panel in panels}
    return request_cls.from_values({name: data[widget] for name, widget in fields.items()}
                                   | {"backends": specs_from_form(backends)})


def form_updates(fields: dict[str, gr.components.Component], request) -> dict:
    """Each field widget set to the request's value (a size's None, "native", is the widget's 0)."""
    return {widget: 0 if getattr(request, name) is None and isinstance(widget, gr.Number) else getattr(request, name)
            for name, widget in fields.items()}


def backend_updates(panels: list, backends) -> dict:
    """Each backend panel's "run" checkbox and option widgets from the request's specs (the first spec of a
    backend, when a request names one twice: a form holds one configuration per backend)."""
    first: dict[str, Any] = {}
    for spec in backends:
        first.setdefault(spec.backend, spec)
    updates: dict = {}
    for panel in panels:
        spec = first.get(panel.name)
        if panel.controls.unavailable:
            continue
        updates[panel.controls.enabled] = spec is not None
        if spec is None:
            continue
        for key, widget in panel.controls.widgets.items():
            value = spec.get(key)
            updates[widget] = "" if value is None and isinstance(widget, gr.Textbox) else value
    return updates


def form_components(tab, panels: list) -> list:
    """A tab's form: its field widgets and each backend's "run" box and option widgets."""
    return [*tab.fields.values(), *(c for p in panels for c in (p.controls.enabled, *p.controls.widgets.values()))]


def wire_run(arena, tab, request_cls, panels: list, execute, notes, examples: tuple) -> list:
    """A tab's events. Run reads the form into a request by its declared fields (a bad value is one sentence on
    the status line), then ``execute(request, http, cancel, progress)`` (the tab's) yields the tab's updates;
    Stop ends it; the model's notes follow the model box (``notes(model)``). ``examples``: the (broken, good)
    example buttons and ``prepare(broken, progress)``, which builds the server's own request (its broken export
    made and cached the first time); they set the form to that request (so Run runs the same settings again;
    a server path the form does not show is said on the status line) and run through the same ``execute``.
    Returns the run events (Run, and each example), for what follows a run."""
    inputs = set(tab.fields.values())
    for panel in panels:
        inputs.add(panel.controls.enabled)
        inputs.update(panel.controls.widgets.values())

    def run_from_ui(data: dict, http: gr.Request, progress=gr.Progress()):
        try:
            run = form_request(request_cls, tab.fields, data, panels)
        except ValueError as exc:
            yield {tab.status: f"<span class='arena-badge arena-badge-error'>ERROR</span> {exc}"}
            return
        with arena.stoppable(session_of(http)) as cancel:
            yield from execute(run, http, cancel, clocked(progress))

    def example(broken: bool):
        def run_example(http: gr.Request, progress=gr.Progress()):
            yield {tab.status: "Preparing the example (the first time, the broken export is made and cached)…",
                   tab.share: "", tab.downloads: None}
            progress = clocked(progress)
            try:
                request = prepare(broken, progress=progress)
            except (ArenaError, OSError) as exc:
                yield {tab.status: "<span class='arena-badge arena-badge-error'>ERROR</span> The example could "
                                   f"not be prepared: {exc}"}
                return
            yield form_updates(tab.fields, request) | backend_updates(panels, request.backends)
            with arena.stoppable(session_of(http)) as cancel:  # a kept result at once, else live (`run_example`)
                yield from execute(request, http, cancel, progress, example=True)

        return run_example

    tab.model.change(notes, tab.model, tab.model_notes, api_visibility="private")
    # Progress shows on the status line only: a loading overlay on every output keeps the browser repainting,
    # which on a small machine steals cores from the workers being timed.
    slot = {"api_visibility": "private", "concurrency_limit": 1, "concurrency_id": RUN_CONCURRENCY_ID,
            "show_progress_on": [tab.status]}
    events = [tab.run.click(run_from_ui, inputs, tab.outputs(), **slot)]
    buttons, prepare = examples
    for button, broken in zip(buttons, (True, False), strict=True):
        events.append(button.click(example(broken), None, tab.outputs() + form_components(tab, panels), **slot))
    wire_stop(arena, tab.stop, tab.status)
    return events


def clocked(progress):
    """A run's progress line with the time since Run pressed (Gradio's own timer restarts at every update of the
    page, so it read 0.1 s seventy seconds into a run); the core repeats its line every second during a long step
    (a load, a prefill), so the clock moves."""
    start = time.monotonic()
    return lambda fraction, description: progress(
        fraction, desc=f"{description} · {time.monotonic() - start:,.0f} s since Run")


def specs_from_form(backends: dict[str, dict[str, Any]]) -> tuple[BackendSpec, ...]:
    """The enabled backends' specs from {name: {"enabled": bool, option: value}}."""
    return tuple(BackendSpec.from_any({"backend": name, **{k: v for k, v in fields.items() if k != "enabled"}})
                 for name, fields in backends.items() if fields["enabled"])


def is_mcp(request: gr.Request | None) -> bool:
    """A call from Gradio's MCP server: it relays every MCP client's call through ONE gradio_client of its own
    (marked ``x-gradio-user: mcp``), so their session is shared and says nothing about who called."""
    headers = getattr(request, "headers", None) or {}
    try:
        return (headers.get("x-gradio-user") or "").lower() == "mcp"
    except AttributeError:
        return False


def session_of(request: gr.Request | None) -> str:
    """Whose run this is: the browser tab's or API client's session (each gradio_client Client has one). Each MCP
    call is its own owner: one MCP client can neither stop another's run nor see its history."""
    if is_mcp(request):
        return f"mcp-{uuid.uuid4().hex}"
    return getattr(request, "session_hash", None) or "local"


def wire_stop(arena, button: gr.Button, status: gr.Markdown) -> None:
    """The Stop button: ends this browser tab's run at once (its worker and any export it started are killed);
    the run then shows what finished and "Stopped by you" where it was. Outside the run slot, so it never waits."""
    def stop_button(request: gr.Request):  # not "stop": that api_name is the public /stop endpoint's
        # No wait: the run's own handler writes the final status, this one must not land after it.
        if arena.stop(session_of(request), wait_s=0) is not None:
            return "Stopping…"
        return gr.update()

    button.click(stop_button, None, status, api_visibility="private", concurrency_limit=None, queue=False)
