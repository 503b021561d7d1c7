"""Chat templates are a repository's code: Jinja run in transformers' sandbox, which stops attribute tricks but not
work. ``{{ 'x' * 300000000 }}`` took a worker to 15.8 GB in 30 s. `bound_chat_templates` tightens the sandbox class
that transformers compiles every chat template with (in the preparation worker only, where templates are rendered):

- ``*`` and ``**`` are intercepted: a string or list repeated into more than ``max_chars`` items, or a power with a
  huge exponent, is a `SecurityError`;
- calls (methods such as ``center``/``ljust``/``zfill``/``format``) and filters (``indent``, ``center``,
  ``tojson(indent=...)``, ``format``, ``wordwrap``...) refuse a width or count over `MAX_WIDTH` and a format
  string asking for one;
- the rendered text is gathered piece by piece and refused past ``max_chars`` (loops that print forever).

What this cannot bound (a template that loops ``range(100000)`` inside ``range(100000)`` printing nothing) is
bounded by time: the worker's phase budget (`arena.running.workers.phase_budget`) stops it.
"""

from __future__ import annotations

import functools
import re
from typing import Any

MAX_WIDTH = 10_000  # a width, indent or repeat count no real template needs more of
DEFAULT_MAX_CHARS = 1_000_000
_FORMAT_WIDTH = re.compile(r"\d{5,}")  # '%99999s', '{:>99999}': a width of five digits or more

_state = {"max_chars": DEFAULT_MAX_CHARS, "installed": False}


def _refuse(what: str) -> None:
    from jinja2.exceptions import SecurityError

    raise SecurityError(what)


def _check_args(name: str, args: tuple, kwargs: dict) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_WIDTH:
            _refuse(f"the chat template asks {name} for {value:,}; this server's template sandbox takes widths "
                    f"and counts up to {MAX_WIDTH:,}")


def _check_format(template: Any) -> None:
    """A format string (``'%99999s' % x``, ``'{:>99999}'.format(x)``, ``x|format``) asking for a huge width."""
    found = _FORMAT_WIDTH.search(template) if isinstance(template, str) and ("%" in template or "{" in template) \
        else None
    if found:
        _refuse(f"the chat template formats with a width of {found.group()}; this server's template sandbox takes "
                f"widths up to {MAX_WIDTH:,}")


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


def _binop(self, context, operator: str, left: Any, right: Any) -> Any:
    limit = _state["max_chars"]
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            size = _size(seq)
            if size is not None and isinstance(count, int) and size * max(count, 0) > limit:
                _refuse(f"the chat template repeats a value {count:,} times ({size * count:,} items); this "
                        f"server's template sandbox allows results up to {limit:,}")
    if operator == "%":
        _check_format(left)
    if operator == "+" and (_size(left) or 0) + (_size(right) or 0) > limit:
        _refuse(f"the chat template joins values into {(_size(left) or 0) + (_size(right) or 0):,} items; this "
                f"server's template sandbox allows results up to {limit:,}")
    if operator == "**" and isinstance(right, int | float) and abs(right) > 64 and not (
            isinstance(left, int | float) and abs(left) <= 1):
        _refuse(f"the chat template raises a number to the power {right:g}; this server's template sandbox "
                "allows powers up to 64")
    return self.binop_table[operator](left, right)


def _deep_chars(value: Any, limit: int) -> int:
    """Characters of the strings inside ``value`` (lists, tuples, dicts), counted until past ``limit``: what its
    text would be (``str([s] * 28000)`` of a 28,000-character ``s`` is 784 million)."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list | tuple):
            total += len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
    return total


def _call(__self, __context, __obj, *args, **kwargs):  # noqa: N807 - Jinja's own signature
    _check_args(getattr(__obj, "__name__", "a function"), args, kwargs)
    chars = _deep_chars([*args, *kwargs.values()], _state["max_chars"])
    if chars > _state["max_chars"]:  # raise_exception(huge), a join of a huge list: refused before its text exists
        _refuse(f"the chat template passes {getattr(__obj, '__name__', 'a function')} more than "
                f"{_state['max_chars']:,} characters; this server's template sandbox allows {_state['max_chars']:,}")
    if getattr(__obj, "__name__", "") in ("format", "format_map"):
        _check_format(getattr(__obj, "__self__", None))
    result = _original_call(__self, __context, __obj, *args, **kwargs)
    size = _size(result)
    if size is not None and size > _state["max_chars"]:
        _refuse(f"a call in the chat template made {size:,} characters; this server's template sandbox allows "
                f"{_state['max_chars']:,}")
    return result


def _concat(pieces) -> str:
    """``"".join`` that stops once the text passes the cap (a loop printing forever never finishes the list)."""
    limit, total, out = _state["max_chars"], 0, []
    for piece in pieces:
        total += len(str(piece))
        if total > limit:
            _refuse(f"the chat template renders more than {limit:,} characters, the most this server's template "
                    "sandbox takes")
        out.append(piece)
    return "".join(out)


def _bounded_join(join):
    @functools.wraps(join)
    def bounded(seq):
        seq = list(seq)
        total = sum(len(v) if isinstance(v, str) else 0 for v in seq)
        if total > _state["max_chars"]:
            _refuse(f"the chat template joins {total:,} characters; this server's template sandbox allows "
                    f"{_state['max_chars']:,}")
        return join(seq)

    return bounded


class _BoundedFilters(dict):
    """The environment's filters, each wrapped to check its arguments and its result's size, including filters
    set after construction (transformers adds its own ``tojson``)."""

    def __setitem__(self, name, function):
        super().__setitem__(name, _bounded_filter(name, function))


def _bounded_filter(name: str, function):
    if getattr(function, "_arena_bounded", False):
        return function

    skip = 2 if getattr(function, "jinja_pass_arg", None) is not None else 1  # (the context,) the value

    @functools.wraps(function)
    def bounded(*args, **kwargs):
        _check_args(f"the filter {name}", args[skip:], kwargs)
        if name == "format" and len(args) >= skip:
            _check_format(args[skip - 1])
        result = function(*args, **kwargs)
        size = _size(result)
        if size is not None and size > _state["max_chars"]:
            _refuse(f"the filter {name} in the chat template made {size:,} characters; this server's template "
                    f"sandbox allows {_state['max_chars']:,}")
        return result

    bounded._arena_bounded = True  # (functools.wraps keeps Jinja's pass_context marker)
    return bounded


_original_call = None


def bound_chat_templates(max_chars: int = DEFAULT_MAX_CHARS) -> None:
    """Tighten ``jinja2.sandbox.ImmutableSandboxedEnvironment`` (the class transformers renders chat templates with)
    in this process. Idempotent; ``max_chars`` is the longest text a template may make."""
    global _original_call
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

    _state["max_chars"] = int(max_chars)
    if _state["installed"]:
        return
    cls = ImmutableSandboxedEnvironment
    _original_call = SandboxedEnvironment.call
    original_init = cls.__init__

    def __init__(self, *args, **kwargs):  # noqa: N807
        original_init(self, *args, **kwargs)
        filters = _BoundedFilters()
        for name, function in self.filters.items():
            filters[name] = function
        self.filters = filters

    cls.__init__ = __init__
    cls.intercepted_binops = frozenset({"*", "**", "%", "+"})
    cls.call_binop = _binop
    cls.call = _call
    cls.concat = staticmethod(_concat)
    # ``a ~ b`` compiles to jinja2.runtime's str_join/markup_join, looked up when a template is compiled.
    import jinja2.runtime

    for name in ("str_join", "markup_join"):
        setattr(jinja2.runtime, name, _bounded_join(getattr(jinja2.runtime, name)))
    _state["installed"] = True
