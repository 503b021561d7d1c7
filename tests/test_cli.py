"""The headless CLI: a table or JSON, and an exit code a CI pipeline can gate on."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ARENA_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, "-m", "arena", "text", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_cli_json_agreement_and_exit_codes(tiny_llama, session_cache, tmp_path):
    common = ("--model", str(tiny_llama), "--prompt", "My name is Arthur and I live in", "--prompt-format", "plain",
              "--max-new-tokens", "8", "--ignore-eos", "--warmup", "0")
    ok = cli(*common, "--json", "--report", str(tmp_path / "report"), cache=session_cache)
    assert ok.returncode == 0, ok.stderr[-2000:]
    result = json.loads(ok.stdout)
    ids = [r["token_ids"] for r in result["results"]]
    assert len(ids) == 2 and ids[0] == ids[1] and len(ids[0]) == 8
    # --report: the dashboard's three report files, holding this run and its own command
    report = json.loads((tmp_path / "report" / "arena-report.json").read_text())
    assert report["task"] == "text" and [r["token_ids"] for r in report["run"]["results"]] == ids
    markdown = (tmp_path / "report" / "arena-report.md").read_text()
    assert "python -m arena text" in markdown and "--max-new-tokens 8" in markdown
    assert all(f"**{r['verdict']['kind']}**" in markdown for r in result["results"])
    assert len(list(csv.DictReader(io.StringIO((tmp_path / "report" / "arena-report.csv").read_text())))) == 2

    broken = cli(*common, "--backend", "pytorch", "--backend", f"onnxruntime:onnx_dir={tmp_path}", cache=session_cache)
    assert broken.returncode == 1
    assert "has no model.onnx" in broken.stdout

    bad = cli(*common, "--backend", "onnxruntime:colour=red", cache=session_cache)
    assert bad.returncode == 2 and "Unknown backend option" in bad.stderr
