"""One colour map for every state a backend's result is in: the badges (assets/arena.css mirrors it, and a test
checks that they agree and that each badge's text reaches WCAG AA contrast) and every chart (bars, points, lines)
read it, so green, amber, red, blue and grey mean the same thing wherever they appear."""

from __future__ import annotations

from typing import Any

from arena import verdict_kind_state

# state: (fill, text on it). The fill is the badge's background and the chart's colour; the text colour is the one
# of the two (white, near-black) that reads on it at 4.5:1 or more.
STATES: dict[str, tuple[str, str]] = {
    "reference": ("#475569", "#ffffff"),  # slate: the yardstick, neither good nor bad (never red)
    "ok": ("#15803d", "#ffffff"),  # MATCH (and DONE before judging)
    "drift": ("#d97706", "#111827"),  # amber: DRIFT, a kind not declared, tokens that differ
    "error": ("#dc2626", "#ffffff"),  # every kind declared broken (arena.judging.kinds), a failed backend
    "waiting": ("#2563eb", "#ffffff"),  # blue: waiting, generating, judging (progress, not a verdict)
    "idle": ("#9ca3af", "#111827"),  # grey: NOT COMPARED, STOPPED, not run, not selected
}


def fill(state: str) -> str:
    return STATES[state][0]


def state_of(result: dict[str, Any] | None, reference: bool = False) -> str:
    """The colour state of one backend's result: stopped grey, failed or judged broken red, the reference slate,
    else its verdict kind's declared state (`arena.judging.kinds`: MATCH green, NOT COMPARED grey, DRIFT amber; a
    kind not declared amber); not judged (yet, or a stopped run's) grey."""
    if result is None:
        return "idle"
    if result.get("stopped"):
        return "idle"
    verdict = result.get("verdict") or {}
    if result.get("error") or verdict.get("broken"):
        return "error"
    if reference:
        return "reference"
    if not verdict:
        return "idle"
    return verdict_kind_state(verdict.get("kind"))


def is_reference(result: dict[str, Any], run: dict[str, Any] | None = None, index: int | None = None) -> bool:
    """Whether ``result`` is its run's reference: the run's index, an image result's flag, or a text verdict's
    reason ("the reference: …")."""
    if run is not None and index is not None and run.get("reference_index") is not None:
        return index == run["reference_index"]
    return bool(result.get("is_reference")
                or str((result.get("verdict") or {}).get("reason", "")).startswith("the reference"))


def result_color(run: dict[str, Any], index: int) -> str:
    """The chart colour of the run's ``index``-th result."""
    result = run["results"][index]
    return fill(state_of(result, is_reference(result, run, index)))


def relative_luminance(color: str) -> float:
    """WCAG 2's relative luminance of a #rrggbb colour."""
    channels = [int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG 2's contrast ratio of two #rrggbb colours (1 to 21; AA asks 4.5 for text)."""
    light, dark = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)
