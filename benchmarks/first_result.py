"""How long a newcomer waits: start `python app.py` on a cache (fresh by default), time until the page answers, then
send the default /compare_text the moment it answers and time its answer; then a second one.

    .venv/bin/python benchmarks/first_result.py [--cache-dir DIR] [--port 7877] [--command "make run"] [-- APP ARGS]

Fresh cache: the app materializes and exports the default text model, loads both workers, and serves the page
when that pair is ready (`--serve-when-ready`, the local default). Pass a used --cache-dir for a second start;
`--command "make run"` in a fresh clone times the README's command, set-up included.
Targets (issue 22): the page within 150 s of a fresh clone's `make run`, the first result within 20 s of it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ("Why should one run machine learning models on-premises?", "Name three rivers.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder (a cold start)")
    parser.add_argument("--port", type=int, default=7877)
    parser.add_argument("--command", default=None, help="a shell command to start instead of app.py (run in the "
                        "repository root), e.g. \"make run\"")
    parser.add_argument("app_args", nargs="*", help="passed to app.py (after --)")
    args = parser.parse_args()
    cache = args.cache_dir or tempfile.mkdtemp(prefix="arena-first-result-")
    log = Path(cache) / "first-result-app.log"
    env = dict(os.environ, ARENA_CACHE_DIR=cache, GRADIO_SERVER_PORT=str(args.port), PYTHONUNBUFFERED="1")
    url = f"http://127.0.0.1:{args.port}/"
    start = time.monotonic()
    with open(log, "w") as out:
        command = ["bash", "-c", f"exec {args.command}"] if args.command else [sys.executable, "app.py",
                                                                                  *args.app_args]
        app = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        while True:
            if app.poll() is not None:
                sys.exit(f"app.py exited ({app.returncode}); its log: {log}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.25)
        page = time.monotonic() - start
        print(f"page answers {page:.1f} s after start ({'fresh' if not args.cache_dir else 'given'} cache {cache})",
              flush=True)
        from gradio_client import Client

        client = Client(url, verbose=False)
        for n, prompt in enumerate(PROMPTS, 1):
            sent = time.monotonic()
            result = client.predict(prompt=prompt, api_name="/compare_text")
            took = time.monotonic() - sent
            verdicts = ", ".join(f"{r['label']}: {r['verdict']['kind'] if r['verdict'] else r['error']}"
                                 for r in result["results"])
            print(f"{'first' if n == 1 else 'second'} default /compare_text: {took:.1f} s "
                  f"({'after the page answered' if n == 1 else 'right after the first'}); {verdicts}", flush=True)
    finally:
        with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(app.pid, signal.SIGTERM)  # make and the app it started
            app.wait(60)


if __name__ == "__main__":
    main()
