"""Backend Arena: parse flags, build the core, build the UI, launch. Nothing else happens here."""

from __future__ import annotations

import argparse
import os

SERVE_WAIT_S = 600  # --serve-when-ready serves anyway after this long (a slow disk, a stuck export)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Backend Arena: compare PyTorch and ONNX Runtime side by side.")
    # On a Space ($SPACE_ID) the app must answer on every interface: the Space's proxy reaches it from outside.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or (
                            "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"),
                        help="address to serve on (default: $GRADIO_SERVER_NAME, else 0.0.0.0 on a Hugging Face "
                             "Space ($SPACE_ID set), else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--cache-dir", default=None,
                        help="where exports and materialized models live (default: $ARENA_CACHE_DIR or "
                             "~/.cache/backend-arena)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument("--public", action="store_true", default=bool(os.environ.get("SPACE_ID")),
                        help="public mode (on by itself on a Hugging Face Space, where $SPACE_ID is set): no "
                             "server paths, capped work, no diagnostics")
    parser.add_argument("--limit", action="append", metavar="NAME=VALUE",
                        help="change a public-mode cap, e.g. --limit max_new_tokens=128 (or $ARENA_MAX_NEW_TOKENS)")
    parser.add_argument("--warm-up", action=argparse.BooleanOptionalAction, default=True,
                        help="prepare the default models (materialize, export, load) in the background from start-up, "
                             "so the first click finds them ready; a click before then waits for that same "
                             "preparation (default: on)")
    parser.add_argument("--serve-when-ready", action=argparse.BooleanOptionalAction,
                        default=not os.environ.get("SPACE_ID"),
                        help="with --warm-up: serve the page once the default text models are prepared and loaded "
                             "(their progress is printed here), so that the first click answers in seconds; the "
                             "image model and the examples follow in the background (default: on, except on a "
                             "Hugging Face Space, where the page answers at once and shows the preparation's "
                             "progress)")
    parser.add_argument("--mcp", action=argparse.BooleanOptionalAction, default=None,
                        help="also serve the API as MCP tools at /gradio_api/mcp/ (default: on when the mcp package "
                             "is installed)")
    return parser.parse_args(argv)


def mcp_available() -> bool:
    """Gradio's MCP server needs the ``mcp`` package (gradio's ``[mcp]`` extra)."""
    import importlib.util

    return importlib.util.find_spec("mcp") is not None


def stop_on_sigterm() -> None:
    """SIGTERM (a Space restarting, docker stop, systemd) ends the app the way Ctrl-C does: Gradio closes its
    server and the core stops every worker and what they started (atexit), instead of dying at once and leaving
    them to notice their closed pipe."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def terminal_printer():
    """Prints each new phase of the start-up preparation once (not every token or second)."""
    import re
    import sys

    last = [""]

    def report(line: str) -> None:
        stem = re.sub(r"[\d.]+", "#", line)
        if stem != last[0]:
            last[0] = stem
            print(line, file=sys.stderr, flush=True)

    return report


def main(argv: list[str] | None = None) -> None:
    from arena import hide_initial_environment

    # Before anything else: re-executes this command once without the secret variables (their values travel in
    # a pipe), so that neither this process's /proc/<pid>/environ nor any worker's holds them.
    hide_initial_environment(reexec=argv is None)
    args = parse_args(argv)
    stop_on_sigterm()  # first: the start-up preparation may already run workers
    from arena import zerogpu_active, zerogpu_install

    if zerogpu_active():  # ZeroGPU hardware: import spaces and make its @spaces.GPU function before any worker,
        zerogpu_install()  # thread or launch (spaces reports the function to ZeroGPU at launch)
    from arena import Arena, Policy, PublicLimits, WarmUp, parse_limit_overrides
    from ui import build_ui, launch_options

    limits = PublicLimits.from_settings(overrides=parse_limit_overrides(args.limit))
    arena = Arena(cache_dir=args.cache_dir, policy=Policy(public=args.public, limits=limits))
    wait = args.warm_up and args.serve_when_ready
    warm_up = WarmUp(arena, report=terminal_printer() if wait else None).start() if args.warm_up else None
    demo = build_ui(arena, warm_up)  # built while the warm-up works
    if wait and not warm_up.wait_first(SERVE_WAIT_S):
        print(f"The default models are still being prepared after {SERVE_WAIT_S} s: serving now; the page shows "
              "how far the preparation got.", flush=True)
    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, footer_links=["api", "settings"],
                mcp_server=mcp_available() if args.mcp is None else args.mcp, **launch_options())


if __name__ == "__main__":
    main()
