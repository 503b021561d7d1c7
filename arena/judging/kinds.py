"""The verdict kinds, each declared once: its name, the tasks it judges, whether it means broken, how it is shown
(the colour state of `ui.colors.STATES`: its badge and its charts) and what it means in one line.

Everything else reads these declarations: `TEXT_BROKEN` and `IMAGE_BROKEN` (the load sweep's broken flag),
`Verdict` (its ``broken`` flag comes from its kind), the colour of a verdict (`kind_state`, through
`arena.VERDICT_KINDS` in the UI) and the documentation's table. A new kind is one `VerdictKind` line here plus the
rule that gives it (`arena.judging.verdicts.judge_text` or `judge_image`). Pure standard library: the UI process
imports it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

TASKS = ("text", "image")


@dataclass(frozen=True)
class VerdictKind:
    name: str
    tasks: tuple[str, ...]  # the tasks whose outputs can get it
    broken: bool  # a verdict of this kind says the backend is broken
    state: str  # how it is shown: a colour state of `ui.colors.STATES` ("ok", "drift", "error", "idle")
    meaning: str  # one line: what it says about the output

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"tasks": list(self.tasks)}

    def sentence(self) -> str:
        """"WRONG (broken; text and image): at the reference's precision, yet it computes something else"."""
        return (f"{self.name} ({'broken' if self.broken else 'not broken'}; {' and '.join(self.tasks)}): "
                f"{self.meaning}")


KINDS: dict[str, VerdictKind] = {kind.name: kind for kind in (
    VerdictKind("MATCH", TASKS, False, "ok", "agrees with the reference within its precision's tolerance (the "
                "reference itself: fluent, or a picture, on its own)"),
    VerdictKind("DRIFT", ("text",), False, "drift", "fluent, its tokens diverge from the reference's, and its "
                "precision explains it"),
    VerdictKind("NOT COMPARED", ("text",), False, "idle", "fluent on its own; the reference failed, so there is "
                "nothing to compare it with"),
    VerdictKind("WRONG", TASKS, True, "error", "at the reference's precision, yet it computes something else than "
                "the model (its logits, its teacher-forced distributions, its decode path or a pipeline component)"),
    VerdictKind("LOSSY", ("text",), True, "error", "a reduced precision that loses too much: teacher-forced top-1 "
                "agreement or KL against the reference out of bounds"),
    VerdictKind("GIBBERISH", ("text",), True, "error", "not language: unknown tokens, replacement characters, a "
                "short loop, mixed writing systems, or implausible under the reference model"),
    VerdictKind("EMPTY", ("text",), True, "error", "no text at all (or only special tokens)"),
    VerdictKind("ERROR", TASKS, True, "error", "the backend failed: no output to judge"),
    VerdictKind("DIFFERENT", ("image",), True, "error", "a picture, but PSNR and SSIM against the reference are "
                "both under its precision's tolerance"),
    VerdictKind("BLANK", ("image",), True, "error", "a near-constant image (black, white or one flat colour)"),
    VerdictKind("NOISE", ("image",), True, "error", "no spatial structure: neighbouring pixels do not correlate"),
    VerdictKind("NAN", ("image",), True, "error", "NaN or Inf pixels (an overflow, for instance an fp16 VAE)"),
)}


def broken_kinds(task: str) -> frozenset[str]:
    """The kinds of ``task`` that say broken."""
    return frozenset(k.name for k in KINDS.values() if k.broken and task in k.tasks)


TEXT_BROKEN = broken_kinds("text")
IMAGE_BROKEN = broken_kinds("image")


def kind_state(name: str | None, default: str = "drift") -> str:
    """The colour state a verdict of kind ``name`` is shown in (an undeclared name: ``default``)."""
    kind = KINDS.get(name or "")
    return kind.state if kind else default
