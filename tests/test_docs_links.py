"""Every relative link and image in README.md and docs/*.md points at a file that exists, and every `#anchor` into a
Markdown file at one of its headings (GitHub's slugs). Pure text: no model, no app, well under a second."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks, with inline code spans blanked."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, CODE_SPAN.sub("", line)


def links(page: Path) -> list[tuple[int, str]]:
    return [(number, match.group(1)) for number, line in prose_lines(page.read_text())
            for match in LINK.finditer(line)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(page.read_text()):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_the_pages_are_found():
    assert (ROOT / "README.md") in PAGES and len(PAGES) > 5


def test_the_slugs_follow_github():
    assert slug("Sequence-dependent bugs (teacher-forced)") == "sequence-dependent-bugs-teacher-forced"
    assert slug("/check: is this export broken?") == "check-is-this-export-broken"
    assert slug("What the H100 run says (2026-11-27, [gpu-report.md](gpu-report.md))") == \
        "what-the-h100-run-says-2026-11-27-gpu-reportmd"


def test_the_link_parser_sees_links_and_images_but_not_code():
    page = ROOT / "README.md"
    found = [target for _, target in links(page)]
    assert "docs/screenshots/text-arena.png" in found
    assert any(target.startswith("docs/reference.md") for target in found)


def broken_links(page: Path) -> list[str]:
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{page.name}:{number}: {target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{page.name}:{number}: {target} (no heading '#{anchor}' in {file.name})")
    return broken


def test_a_broken_link_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section (with notes)\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md) [ok](other.md#a-section-with-notes) [ok](#top) ![ok](https://x.org/a.png)\n"
                    "# Top\n"
                    "[missing](nothing.md) ![missing](img/none.png) [bad anchor](other.md#nowhere)\n"
                    "`[in code](skipped.md)`\n```\n[in a fence](skipped.md)\n```\n")
    assert broken_links(page) == ["page.md:3: nothing.md (no such file)", "page.md:3: img/none.png (no such file)",
                                  "page.md:3: other.md#nowhere (no heading '#nowhere' in other.md)"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    broken = broken_links(page)
    assert not broken, "broken links:\n" + "\n".join(broken)
