"""Request fields declared once, the way backends declare their options (`backends.contract.option`).

A request dataclass (`arena.types.TextRunRequest`, `ImageRunRequest`, `arena.serving.request.LoadRunRequest`,
`arena.judging.check.CheckRequest`) makes each field with `request_field`:
its default, bounds, label, help and public-mode cap. Everything that shows, reads or checks a request is
derived from that declaration:

- the request parses its values by their fields when it is made (a form's, a link's or the CLI's strings), and
  the core checks the bounds before any work (`RequestFields.refuse_bounds`), so a form, the API, the CLI, a
  link and "run again" all get the same sentence for a bad value;
- the forms build their widgets (`ui.controls.field_widget`), the API its signature and docstring
  (`api_signature`), the CLI its flags (`add_arguments`), links and the reproduce command their parameters
  (`non_default_values`, `cli_arguments`), and the public gate its caps (`RequestFields.refuse_public`).

Adding a field is one declaration in the request plus its use in the core. Pure stdlib: safe in the UI process.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

# "backends": a run's list of backend specs; "backend": one spec (a check's candidate and reference); "texts": a list
# of texts (a check's prompts).
FieldKind = Literal["int", "float", "bool", "text", "size", "backends", "backend", "texts"]
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off", "")


@dataclass(frozen=True)
class FieldInfo:
    """One request field: what it is, its bounds and how each front end shows it."""

    name: str
    default: Any
    kind: FieldKind
    label: str
    help: str = ""
    minimum: float | None = None  # bounds: the core refuses a run outside them (from a form, the API, the CLI...)
    maximum: float | None = None
    form_maximum: float | None = None  # the form's upper end, when the bound is too far for a slider
    step: float | None = None  # a slider's step (a field with a step is shown as a slider)
    public_cap: str | None = None  # the `arena.public.policy.PublicLimits` field that caps it for visitors
    cap_text: str = ""  # the refusal with {cap} and {asked}, when "<label> is capped at ..." reads wrong
    group: str = ""  # where the form shows it ("timing": the timing-protocol accordion)
    blank_is_default: bool = False  # a text that is empty (or only spaces) means the default; kept stripped
    parser: Callable[[Any], Any] | None = None  # reads a value of a kind the field module does not know (backends)
    choices: tuple[str, ...] = ()  # a text field that takes one of these
    required: bool = False  # the API and the CLI ask for it (no default there); its parser also sees a missing value
    cli_flag: str = ""  # the CLI flag when not the field's name (a list's flag is given once per item: ``--prompt``)
    flag_alone: Any = None  # the value a CLI flag given without a value means (``--localize``: "all")

    @property
    def flag(self) -> str:
        return self.cli_flag or "--" + self.name.replace("_", "-")

    def parse(self, value: Any) -> Any:
        """``value`` (a Python value, or the string a link, the CLI or a form gives) as this field's type, or a
        ValueError that names the field. None (and an empty string, but for text) is the default."""
        missing = value is None or (isinstance(value, str) and not value.strip() and self.kind != "text")
        if missing and not (self.required and self.parser is not None):
            return self.default
        if self.parser is not None:
            return self.parser(value)  # the backends: each backend's own options say what is wrong
        if self.kind == "texts":
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{self.label} must be a list of texts, not {type(value).__name__}.")
            return tuple(value)
        try:
            if self.kind == "bool":
                if isinstance(value, bool):
                    return value
                word = str(value).strip().lower()
                if word not in TRUE_WORDS + FALSE_WORDS:
                    raise ValueError
                return word in TRUE_WORDS
            if self.kind == "text":
                text = (str(value).strip() or self.default) if self.blank_is_default or self.choices else str(value)
                if self.choices and text not in self.choices:
                    raise ValueError(f"{self.label} takes one of {', '.join(self.choices)}, not {value!r}.")
                return text
            number = float(value)
            if self.kind in ("int", "size"):
                if number != int(number):
                    raise ValueError
                number = int(number)
        except (TypeError, ValueError, OverflowError) as exc:
            if self.choices:
                raise ValueError(str(exc)) from None
            raise ValueError(f"{self.label} takes {self.kind_words()}, not {value!r}.") from None
        if self.kind == "size" and number == 0:
            return None  # 0: the model's native size
        return number

    def refuse_bounds(self, value: Any) -> str | None:
        """A sentence when a number is outside the field's bounds (None: inside, or not a number)."""
        if self.kind not in ("int", "float", "size") or value is None:
            return None
        low, high = self.minimum, self.maximum
        if (low is None or value >= low) and (high is None or value <= high):
            return None
        if low is not None and high is not None:
            return f"{self.label} must be between {low:g} and {high:g}, not {value:g}."
        return f"{self.label} must be at least {low:g}, not {value:g}." if low is not None else \
            f"{self.label} must be at most {high:g}, not {value:g}."

    def kind_words(self) -> str:
        return {"int": "a whole number", "float": "a number", "bool": "true or false", "text": "text",
                "size": "a whole number of pixels (0: native)", "backends": "a list of backends",
                "backend": "a backend", "texts": "a list of texts"}[self.kind]

    def measure(self, value: Any) -> float:
        """What the public cap is compared with: the number, a text's length, or a list's."""
        if self.kind in ("text", "texts"):
            return len(value or "")
        return 0 if value is None else value

    def refuse_public(self, value: Any, limits: Any) -> str | None:
        if self.public_cap is None:
            return None
        cap, asked = getattr(limits, self.public_cap), self.measure(value)
        if asked <= cap:
            return None
        if self.cap_text:
            return self.cap_text.format(cap=f"{cap:g}", asked=f"{asked:g}")
        return f"{self.label} is capped at {cap:g} on this public server (asked: {asked:g})."


def request_field(default: Any = None, *, kind: FieldKind, label: str, help: str = "",
                  minimum: float | None = None, maximum: float | None = None, form_maximum: float | None = None,
                  step: float | None = None, public_cap: str | None = None, cap_text: str = "", group: str = "",
                  blank_is_default: bool = False, default_factory: Callable[[], Any] | None = None,
                  parser: Callable[[Any], Any] | None = None, choices: tuple[str, ...] = (), required: bool = False,
                  cli_flag: str = "", flag_alone: Any = None) -> Any:
    """A field of a request dataclass, with what the forms, the API, the CLI, links and the public gate need."""
    info = {"kind": kind, "label": label, "help": help, "minimum": minimum, "maximum": maximum,
            "form_maximum": form_maximum, "step": step,
            "public_cap": public_cap, "cap_text": cap_text, "group": group,
            "blank_is_default": blank_is_default, "parser": parser, "choices": tuple(choices),
            "required": required, "cli_flag": cli_flag, "flag_alone": flag_alone}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata={"request": info})
    return dataclasses.field(default=default, metadata={"request": info})


class RequestFields:
    """What a request dataclass gets from its declaration (mixed into `TextRunRequest`, `ImageRunRequest`,
    `LoadRunRequest` and `CheckRequest`)."""

    task: str = ""
    what: str = ""  # the request's name in a sentence, when not its task's ("check": its task is a field)

    def __post_init__(self) -> None:
        for info in self.fields():
            object.__setattr__(self, info.name, info.parse(getattr(self, info.name)))

    @classmethod
    def fields(cls) -> tuple[FieldInfo, ...]:
        """Every declared field, in declaration order."""
        return tuple(FieldInfo(name=f.name, default=_default(f), **f.metadata["request"])
                     for f in dataclasses.fields(cls) if "request" in f.metadata)

    @classmethod
    def field(cls, name: str) -> FieldInfo:
        return next(info for info in cls.fields() if info.name == name)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]):
        """A request from {field: value} (a form's widgets, a link's parameters, an API call's arguments): values
        parsed by their fields, defaults for what is missing, None or empty. An unknown name is an error."""
        names = {info.name for info in cls.fields()}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"Unknown {cls.what or cls.task} request field(s) {unknown}; the fields: {sorted(names)}.")
        return cls(**{name: value for name, value in values.items() if value is not None})

    def refuse_bounds(self) -> str | None:
        """The first field outside its bounds, as one sentence, or None (the core asks before any work)."""
        for info in self.fields():
            problem = info.refuse_bounds(getattr(self, info.name))
            if problem:
                return problem
        return None

    def refuse_public(self, limits: Any) -> str | None:
        """The first public-mode cap this request exceeds, as one sentence, or None."""
        for info in self.fields():
            problem = info.refuse_public(getattr(self, info.name), limits)
            if problem:
                return problem
        return None

    def non_default_values(self) -> dict[str, Any]:
        """The fields whose value differs from the default (short links and commands), backends excepted."""
        return {info.name: getattr(self, info.name) for info in self.fields()
                if info.kind != "backends" and getattr(self, info.name) != info.default}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def cli_arguments(request_cls: type[RequestFields], values: Mapping[str, Any]) -> list[str]:
    """The CLI flags that make ``values`` (a request's dict, as kept in a report) again. Every setting is
    written out, defaults too (a later version's defaults may differ); empty texts and unset flags are left out,
    and so are backends (the caller writes them with their options)."""
    parts: list[str] = []
    for info in request_cls.fields():
        value = values.get(info.name, info.default)
        if info.kind in ("backends", "backend") or value in (None, "") or (info.kind == "bool" and not value):
            continue
        if info.kind == "bool":
            parts.append(info.flag)
        elif info.kind == "texts":
            parts += [part for item in value for part in (info.flag, str(item))]
        else:
            parts += [info.flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return parts


def add_arguments(parser: argparse.ArgumentParser, request_cls: type[RequestFields],
                  backend_type: Callable[[str], Any] | None = None, repeated: tuple[str, ...] = ()) -> None:
    """One flag per field (``--max-new-tokens``), parsed by the field; its bounds are the request's to check (the
    same sentence as the API's). A list of backends is the caller's (``--backend`` is repeatable, with options);
    one backend takes ``backend_type`` (the CLI's ``name:key=value`` reader), or is the caller's without it; a
    list of texts is one flag per item (``--prompt A --prompt B``). ``repeated``: fields the caller lets the
    command line give several times, each value a request of its own (``check --candidate A --candidate B``):
    they come back as a list."""
    for info in request_cls.fields():
        if info.kind == "backends" or (info.kind == "backend" and backend_type is None):
            continue
        described = f"{info.help} ({_cli_default(info)})" if info.help and _cli_default(info) else \
            info.help or _cli_default(info)
        if info.kind == "bool":
            parser.add_argument(info.flag, dest=info.name, action="store_true", default=None, help=info.help)
            continue
        if info.kind == "texts":
            parser.add_argument(info.flag, dest=info.name, action="append", default=None, required=info.required,
                                metavar=info.flag.removeprefix("--").replace("-", "_").upper(),
                                help=f"{described}; repeatable" if described else "repeatable")
            continue
        read = backend_type if info.kind == "backend" else _cli_type(info)
        many = info.name in repeated
        parser.add_argument(info.flag, dest=info.name, type=read, default=None, required=info.required,
                            choices=info.choices or None, action="append" if many else "store",
                            **({"nargs": "?", "const": info.flag_alone} if info.flag_alone is not None else {}),
                            help=f"{described}; repeatable" if many else described)


def _cli_default(info: FieldInfo) -> str:
    """"default: 48" for ``--help``, or "" where the help says it (backends, lists, an unset default)."""
    if info.required or info.kind in ("backend", "texts") or info.default is None:
        return ""
    return f"default: {info.default}"


def _cli_type(info: FieldInfo) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return info.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    parse.__name__ = info.kind
    return parse


def cli_values(args: argparse.Namespace, request_cls: type[RequestFields]) -> dict[str, Any]:
    """The fields given on the command line (the rest take their defaults in the request)."""
    return {info.name: getattr(args, info.name) for info in request_cls.fields()
            if getattr(args, info.name, None) is not None}


API_TYPES = {"int": int, "float": float, "bool": bool, "text": str, "size": int, "backends": list[Any] | None,
             "backend": Any, "texts": list[str] | None}


def api_parameters(request_cls: type[RequestFields]) -> list[FieldInfo]:
    """The fields in the API's order: the required ones first (what every call sends: the prompt, a check's model
    and candidate), then the declaration's order."""
    infos = list(request_cls.fields())
    return sorted(infos, key=lambda info: not info.required)


def api_default(info: FieldInfo) -> Any:
    """The API parameter's default: none for a required field; None (the field's default) for backends and lists."""
    if info.required:
        return inspect.Parameter.empty
    return None if info.kind in ("backends", "backend", "texts") else info.default


def api_signature(request_cls: type[RequestFields]) -> list[inspect.Parameter]:
    """The API function's parameters, one per field: its name, default and type (Gradio reads them for the client
    and the MCP tool's input schema)."""
    return [inspect.Parameter(info.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=api_default(info),
                              annotation=API_TYPES[info.kind]) for info in api_parameters(request_cls)]


def api_docstring(summary: str, request_cls: type[RequestFields], returns: str = "") -> str:
    """A docstring Gradio reads for the API page and MCP tool descriptions: ``Args:`` from the fields' help."""
    lines = [summary, "", "Args:"]
    for info in api_parameters(request_cls):
        default = "" if api_default(info) is inspect.Parameter.empty or info.kind in ("backends", "backend", "texts") \
            else f" Default: {info.default!r}."
        lines.append(f"    {info.name}: {info.help or info.label}.{default}".replace("..", "."))
    if returns:
        lines += ["Returns:", f"    {returns}"]
    return "\n".join(lines)
