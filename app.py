"""Backend Arena: parse flags, build the core, build the UI, launch. Nothing else happens here."""

from __future__ import annotations

import argparse
import os


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Backend Arena: compare PyTorch and ONNX Runtime side by side.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to serve on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--cache-dir", default=None,
                        help="where exports and materialized models live (default: $ARENA_CACHE_DIR or "
                             "~/.cache/backend-arena)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from arena.core import Arena
    from ui import build_ui, launch_options

    arena = Arena(cache_dir=args.cache_dir)
    demo = build_ui(arena)
    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, footer_links=["api", "settings"],
                **launch_options())


if __name__ == "__main__":
    main()
