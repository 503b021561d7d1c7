"""Request fields declared once, the way backends declare their options (`backends.contract.option`).

A request dataclass (`arena.types.TextRunRequest`, `ImageRunRequest`) makes each field with `request_field`:
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

FieldKind = Literal["int", "float", "bool", "text", "size", "backends"]
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

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, value: Any) -> Any:
        """``value`` (a Python value, or the string a link, the CLI or a form gives) as this field's type, or a
        ValueError that names the field. None (and an empty string, but for text) is the default."""
        if value is None or (isinstance(value, str) and not value.strip() and self.kind != "text"):
            return self.default
        if self.parser is not None:
            return self.parser(value)  # the backends: each backend's own options say what is wrong
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
                "size": "a whole number of pixels (0: native)", "backends": "a list of backends"}[self.kind]

    def measure(self, value: Any) -> float:
        """What the public cap is compared with: the number, or a text's length."""
        if self.kind == "text":
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
                  parser: Callable[[Any], Any] | None = None, choices: tuple[str, ...] = ()) -> Any:
    """A field of a request dataclass, with what the forms, the API, the CLI, links and the public gate need."""
    info = {"kind": kind, "label": label, "help": help, "minimum": minimum, "maximum": maximum,
            "form_maximum": form_maximum, "step": step,
            "public_cap": public_cap, "cap_text": cap_text, "group": group,
            "blank_is_default": blank_is_default, "parser": parser, "choices": tuple(choices)}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata={"request": info})
    return dataclasses.field(default=default, metadata={"request": info})


class RequestFields:
    """What a request dataclass gets from its declaration (mixed into `TextRunRequest` and `ImageRunRequest`)."""

    task: str = ""

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
            raise ValueError(f"Unknown {cls.task} request field(s) {unknown}; the fields: {sorted(names)}.")
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
    written out, defaults too (a later version's defaults may differ); empty texts and unset flags are left out."""
    parts: list[str] = []
    for info in request_cls.fields():
        value = values.get(info.name, info.default)
        if info.kind == "backends" or value in (None, "") or (info.kind == "bool" and not value):
            continue
        if info.kind == "bool":
            parts.append(info.flag)
        else:
            parts += [info.flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return parts


def add_arguments(parser: argparse.ArgumentParser, request_cls: type[RequestFields]) -> None:
    """One flag per field (``--max-new-tokens``), parsed and checked by the field; backends are the caller's
    (``--backend`` is repeatable, with options)."""
    for info in request_cls.fields():
        if info.kind == "backends":
            continue
        if info.kind == "bool":
            parser.add_argument(info.flag, action="store_true", default=None, help=info.help)
            continue
        parser.add_argument(info.flag, type=_cli_type(info), default=None, required=info.name == "prompt",
                            choices=info.choices or None,
                            help=f"{info.help} (default: {info.default})" if info.help else f"default: {info.default}")


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


API_TYPES = {"int": int, "float": float, "bool": bool, "text": str, "size": int, "backends": list[Any] | None}


def api_parameters(request_cls: type[RequestFields]) -> list[FieldInfo]:
    """The fields in the API's order: the prompt first (what every call sends), then the declaration's order."""
    infos = list(request_cls.fields())
    return sorted(infos, key=lambda info: info.name != "prompt")


def api_docstring(summary: str, request_cls: type[RequestFields], returns: str = "") -> str:
    """A docstring Gradio reads for the API page and MCP tool descriptions: ``Args:`` from the fields' help."""
    lines = [summary, "", "Args:"]
    for info in api_parameters(request_cls):
        default = "" if info.kind == "backends" or info.name == "prompt" else f" Default: {info.default!r}."
        lines.append(f"    {info.name}: {info.help or info.label}.{default}".replace("..", "."))
    if returns:
        lines += ["Returns:", f"    {returns}"]
    return "\n".join(lines)
