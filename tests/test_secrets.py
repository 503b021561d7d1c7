"""The server's secrets leave the environment: the app re-executes itself without them (so /proc/<pid>/environ
holds none), workers start without them, a backend that needs a key gets it in memory, and every output is
scrubbed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from arena.public import secrets
from arena.public.policy import Policy, PublicLimits
from arena.sharing.history import RunHistory, fit
from tests.support import ROOT

CANARY = "hf_canary0123456789abcdefghij"


def test_secret_names_are_words_of_the_name():
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD",
                 "MY_SERVER_KEY", "GITHUB_TOKEN"):
        assert secrets.is_secret_name(name), name
    for name in ("TOKENIZERS_PARALLELISM", "PATH", "HF_HOME", "KEYBOARD_LAYOUT", "ARENA_CACHE_DIR"):
        assert not secrets.is_secret_name(name), name


def test_taken_secrets_leave_the_environment_and_are_scrubbed_everywhere(monkeypatch):
    environ = {"HF_TOKEN": CANARY, "TOKENIZERS_PARALLELISM": "false", "OPENAI_API_KEY": "sk-canaryabcdefghijklmnop"}
    moved = secrets.take_from_environment(environ)
    assert set(moved) == {"HF_TOKEN", "OPENAI_API_KEY"} and environ == {"TOKENIZERS_PARALLELISM": "false"}
    monkeypatch.setattr(secrets, "_TAKEN", dict(moved))
    assert secrets.hf_token() == CANARY
    nested = {"error": f"failed with {CANARY}", "rows": [("x", "key=sk-canaryabcdefghijklmnop")], CANARY: 1}
    assert CANARY not in json.dumps(secrets.scrub_data(nested))
    assert "sk-canary" not in json.dumps(secrets.scrub_data(nested))
    # The redaction every visitor-facing result passes, in every mode.
    assert CANARY not in json.dumps(Policy(public=False).redact(nested))
    assert CANARY not in json.dumps(Policy(public=True).redact(nested))


def test_the_app_process_is_reexecuted_without_its_secrets():
    """What app.py does first: /proc/self/environ (what a fooled loader would read) has no secret afterwards, the
    value is still known in memory, the pid is the same, and a child process starts without it."""
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        sys.path.insert(0, {str(ROOT)!r})
        print("pid", os.getpid(), flush=True)
        from arena.public import secrets
        secrets.hide_initial_environment()
        environ = open("/proc/self/environ", "rb").read()
        child = subprocess.run([sys.executable, "-c", "print(open('/proc/self/environ','rb').read())"],
                               capture_output=True, text=True).stdout
        print("pid", os.getpid())
        print("environ", {CANARY!r}.encode() in environ, "child", {CANARY!r} in child,
              "known", secrets.get("HF_TOKEN") == {CANARY!r}, "fd", "ARENA_SECRETS_FD" in os.environ)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HF_TOKEN": CANARY})
    assert done.returncode == 0, done.stderr
    pids = [line for line in done.stdout.splitlines() if line.startswith("pid")]
    assert len(pids) == 3 and len(set(pids)) == 1, done.stdout  # printed before and after the exec: same pid
    assert "environ False child False known True fd False" in done.stdout, done.stdout


def test_history_is_bounded_per_entry_and_per_session():
    history = RunHistory(None, max_entry_bytes=20_000, max_session_bytes=100_000)
    huge = {"request": {"prompt": "x" * 20_000_000}, "results": [], "error": "refused"}
    entry = history.add("visitor", "text", huge)
    assert len(json.dumps(entry.run)) <= 20_000 and entry.run["error"] == "refused"
    for _ in range(30):
        history.add("visitor", "text", {"request": {"prompt": "y" * 15_000}, "results": []})
    kept = history.entries("visitor")
    assert sum(len(json.dumps(e.run)) for e in kept) <= 100_000 and len(kept) < 30
    assert fit({"a": "short"}, None) == {"a": "short"}


def test_public_check_prompts_are_capped():
    from arena.judging.check import CheckRequest

    def asking(prompts):
        return CheckRequest(model="smollm2-135m-instruct", candidate="onnxruntime", prompts=prompts)

    policy = Policy(public=True, limits=PublicLimits(max_check_prompts=5))
    assert "up to 5 prompts" in policy.refuse_check(asking(["p"] * 200))
    assert "capped at 2000 characters" in policy.refuse_check(asking(["p" * 3000]))
    assert policy.refuse_check(asking(["a", "b"])) is None
    assert Policy(public=False).refuse_check(asking(["p"] * 200)) is None


def test_public_view_cuts_a_huge_echo():
    view = Policy(public=True).redact({"request": {"prompt": "z" * 20_000_000}})
    assert len(view["request"]["prompt"]) < 30_000
