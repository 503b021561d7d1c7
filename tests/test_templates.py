"""The chat-template sandbox (`arena.public.templates`): real templates render as before; repetitions, widths,
joins and endless output are refused within milliseconds, whatever route the template takes."""

from __future__ import annotations

import time

import pytest

from arena.public.templates import bound_chat_templates
from tests.support.tiny_models import CHAT_TEMPLATE

MESSAGES = [{"role": "system", "content": "Be brief {12345} %99999."}, {"role": "user", "content": "Hello"}]
# Shapes real templates use (Llama 3, Qwen, Gemma, Mistral): loops, slices, tojson, format, ~ joins, raise_exception.
ORDINARY = (
    "{{ bos_token }}{% for m in messages %}{% if loop.first and m['role'] == 'system' %}{% set s = m['content'] %}"
    "{% endif %}<|{{ m['role'] }}|>{{ m['content'] | trim }}{{ m['role'] | tojson }}{{ '%5d' % loop.index }}"
    "{{ '{:>4}'.format(loop.length) }}{{ ('x' * 3) ~ ('-' | center(9)) }}{{ m['content'][:4] | indent(2) }}"
    "{% endfor %}{% for i in range(3) %}{{ i + 1 }}{% endfor %}{{ 2 ** 10 }}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def render():
    bound_chat_templates(32_000)
    from transformers.utils.chat_template_utils import render_jinja_template

    def run(template: str) -> str:
        rendered, _ = render_jinja_template([MESSAGES], chat_template=template, add_generation_prompt=True,
                                            bos_token="<s>")
        return rendered[0]

    return run


def test_ordinary_templates_render_as_jinja_renders_them(render):
    import jinja2.sandbox

    expected = jinja2.sandbox.SandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        ORDINARY).render(messages=MESSAGES, add_generation_prompt=True, bos_token="<s>")
    assert render(ORDINARY) == expected
    assert render(CHAT_TEMPLATE).endswith("assistant:")


@pytest.mark.parametrize("template, words", [
    ("{{ 'x' * 300000000 }}", "repeats a value 300,000,000 times"),
    ("{{ ['a'] * 100000000 }}", "repeats a value 100,000,000 times"),
    ("{{ 10 ** 100000 }}", "power 100000"),
    ("{{ messages | tojson(indent=100000000) }}", "asks the filter tojson for 100,000,000"),
    ("{{ 'x' | center(100000000) }}", "asks the filter center for 100,000,000"),
    ("{{ 'x'.ljust(100000000) }}", "asks ljust for 100,000,000"),
    ("{{ 'x' | indent(100000000) }}", "asks the filter indent for 100,000,000"),
    ("{{ '%099999999d' % 1 }}", "a width of 099999999"),
    ("{{ '%99999999s' | format(1) }}", "a width of 99999999"),
    ("{% for i in range(100000) %}{% endfor %}", "asks safe_range for 100,000"),
    ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "joins"),
    ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "joins"),
    ("{% for i in range(10000) %}{% for j in range(10000) %}xxxxxxxx{% endfor %}{% endfor %}", "renders more than"),
    ("{% macro m() %}{% for j in range(10000) %}xxxxxxxx{% endfor %}{% endmacro %}"
     "{% for i in range(10000) %}{{ m() }}{% endfor %}", "more than 32,000"),
    # Found by the attacker review: each step under the cap, the exception's text 784 million characters.
    ("{% set s = 'x' * 28000 %}{{ raise_exception([s] * 28000) }}", "passes raise_exception more than 32,000"),
])
def test_a_template_that_would_render_without_end_is_refused_at_once(render, template, words):
    from jinja2.exceptions import SecurityError

    start = time.monotonic()
    with pytest.raises(SecurityError) as caught:
        render(template)
    assert words in str(caught.value), caught.value
    assert time.monotonic() - start < 1.0
