"""Drop the package indexes of a requirements file that do not answer from this machine.

    python scripts/pip_indexes.py IN OUT [--timeout S]

Writes OUT: IN without each `--extra-index-url` / `--index-url` / `-i` line whose host does not answer within S
seconds (default 4). pip would otherwise retry an unreachable index for every package it looks up (minutes).
Prints one line per skipped index to stdout, `URL<TAB>reason`; nothing when every index answers. Any HTTP answer,
even an error status, counts as answering: only a host that cannot be reached is skipped.
Standard library only: setup.sh runs it before the venv exists.
"""

from __future__ import annotations

import argparse
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

INDEX_LINE = re.compile(r"^\s*(--extra-index-url|--index-url|-i)(\s*=\s*|\s+)(?P<url>\S+)")


def index_url(line: str) -> str | None:
    """The URL of an index option line, or None for any other line."""
    match = INDEX_LINE.match(line)
    return match.group("url") if match else None


def unreachable_reason(url: str, timeout: float) -> str | None:
    """None when the index answers (any HTTP status), else why not, in a few words."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # the host answered
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, socket.gaierror):
            return f"name lookup failed ({reason.strerror})"
        return str(reason)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return str(exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--timeout", type=float, default=4.0)
    args = parser.parse_args(argv)
    kept: list[str] = []
    for line in args.source.read_text().splitlines(keepends=True):
        url = index_url(line)
        reason = unreachable_reason(url, args.timeout) if url else None
        if reason is None:
            kept.append(line)
        else:
            print(f"{url}\t{reason}")
            kept.append(f"# skipped here, does not answer: {line}")
    args.target.write_text("".join(kept))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
