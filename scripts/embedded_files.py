"""Write assets/embedded/<key>/: the config and tokenizer files transformers builds from the embedded model's GGUF,
so that materializing it reads only the weights from the GGUF (arena/preparing/prepare.py).

    .venv/bin/python scripts/embedded_files.py

Run it again after changing the embedded package or transformers: source.json records the GGUF (name, size,
sha256) and the transformers version, and a folder that does not match them is not used (the app then builds
everything from the GGUF, four parses, ~45 s). tests/test_embedded_files.py checks the folder against a fresh build.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arena.preparing.catalog import CATALOG  # noqa: E402
from arena.preparing.prepare import EMBEDDED_FILES, embedded_gguf_path, write_shipped_files  # noqa: E402


def main() -> None:
    for entry in CATALOG:
        if not entry.embedded_package:
            continue
        gguf = embedded_gguf_path(entry)
        if gguf is None:
            sys.exit(f"{entry.embedded_package} is not installed: {entry.embedded_install}")
        out = EMBEDDED_FILES / entry.key
        shutil.rmtree(out, ignore_errors=True)
        write_shipped_files(gguf, out)
        print(f"{out}: {', '.join(sorted(p.name for p in out.iterdir()))}")


if __name__ == "__main__":
    main()
