"""Reports from real runs (the runs that ship in assets/reference-run/, and one with a broken backend made from
them): JSON statistics agree with the raw values, CSV has one row per backend, the Markdown holds what an issue
needs, the reproduce command parses back into the same request, and no secret ever appears."""

from __future__ import annotations

import copy
import csv
import io
import json
import shlex
import statistics

import numpy as np
import pytest
from PIL import Image

from arena.__main__ import parse_backend
from arena.sharing.reports import report_csv, report_data, report_markdown, reproduce_command, scrub, write_reports
from arena.types import BackendSpec
from tests.support import ROOT

STORED = ROOT / "assets" / "reference-run"


@pytest.fixture
def text_run() -> dict:
    return json.loads((STORED / "text.json").read_text())["run"]


@pytest.fixture
def broken_text_run(text_run) -> dict:
    """The stored run with its second backend turned into a broken int8 answer and a third that crashed."""
    run = copy.deepcopy(text_run)
    broken = run["results"][1]
    broken["text"] = broken["text"][:40] + " zxq zxq zxq zxq"
    broken["options"]["precision"] = "int8"
    broken["verdict"] = {"kind": "GIBBERISH", "reason": "a loop of 1 token fills 80% of the output",
                         "broken": True, "metrics": {}}
    crashed = copy.deepcopy(broken) | {"error": "The worker crashed: the process was killed by SIGSEGV.",
                                       "log_tail": "Segmentation fault in MatMulNBits", "timings": None,
                                       "verdict": None, "label": "ONNX Runtime · CPU · fp16"}
    run["results"].append(crashed)
    run["request"]["backends"][1]["precision"] = "int8"
    return run


def test_json_statistics_agree_with_the_raw_values(text_run):
    data = report_data(text_run, "text")
    assert data["run"]["results"][0]["timings"]["token_times_s"] == text_run["results"][0]["timings"]["token_times_s"]
    for stats, result in zip(data["statistics"], data["run"]["results"], strict=True):
        stamps = result["timings"]["token_times_s"]
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        assert stats["new_tokens"] == len(stamps) == result["num_new_tokens"]
        assert stats["first_token_s"] == stamps[0]
        assert stats["inter_token_s"]["count"] == len(gaps)
        assert stats["inter_token_s"]["mean"] == pytest.approx(statistics.fmean(gaps))
        assert stats["inter_token_s"]["median"] == pytest.approx(statistics.median(gaps))
        assert stats["inter_token_s"]["max"] == pytest.approx(max(gaps))
    image_run = json.loads((STORED / "image.json").read_text())["run"]
    for stats, result in zip(report_data(image_run, "image")["statistics"], image_run["results"], strict=True):
        steps = result["timings"]["step_times_s"]
        assert stats["steps"] == len(steps) and stats["steps_sum_s"] == pytest.approx(sum(steps))
        assert stats["step_s"]["median"] == pytest.approx(statistics.median(steps))


def test_markdown_holds_what_an_issue_needs(broken_text_run):
    text = report_markdown(broken_text_run, "text")
    assert text.splitlines()[0].startswith("## Backend Arena: ONNX Runtime") and " broken on " in text
    assert "**GIBBERISH**" in text and "a loop of 1 token" in text and "**MATCH**" in text
    assert "departs from the reference at character 41" in text and "zxq zxq" in text
    assert "SIGSEGV" in text and "Segmentation fault in MatMulNBits" in text  # the failure and its log tail
    # The stack the stored run was recorded with (assets/reference-run/ predates a re-recording on a new stack).
    versions = broken_text_run["environment"]["versions"]
    stack = [f"{name} {versions[name]}" for name in ("torch", "onnxruntime", "transformers")]
    for fact in ("### Environment", "OS: Linux", "Python 3.11", *stack, "CPUExecutionProvider", "diffusers",
                 "tensorrt"):
        assert fact in text, fact
    assert "### Reproduce" in text and "python -m arena text --model smollm2-135m-instruct" in text
    assert "| TTFT |" in text


def test_the_verdict_table_shows_the_evidence_beside_each_verdict(broken_text_run):
    broken_text_run["results"][1]["verdict"]["metrics"] = {"quality": {"top1": 0.005, "kl": 14.7,
                                                                       "ppl_ratio": 3.1e6, "positions": 535}}
    text = report_markdown(broken_text_run, "text")
    assert "| Top-1 agreement | KL (nats) | Perplexity ratio |" in text
    row = next(line for line in text.splitlines() if "**GIBBERISH**" in line)
    assert "0.5%" in row and "14.7" in row and "×3.1e+06" in row, row


def test_reproduce_command_parses_back_into_the_same_request(broken_text_run):
    command = shlex.split(reproduce_command(broken_text_run, "text"))
    assert command[:4] == ["python", "-m", "arena", "text"]
    args, request = command[4:], broken_text_run["request"]
    values = dict(zip(args[::2], args[1::2], strict=False))
    assert values["--prompt"] == request["prompt"] and values["--model"] == request["model"]
    backends = [parse_backend(b) for a, b in zip(args, args[1:], strict=False) if a == "--backend"]
    assert len(backends) == len(request["backends"])
    for spec, asked in zip(backends, request["backends"], strict=True):
        # an option the stored request predates (ONNX Runtime's exporter) is its default on both sides
        assert spec.backend == asked["backend"] and spec == BackendSpec.from_any(asked)
        assert all(spec.get(k) == asked[k] for k in spec.options if k in asked)
    assert "onnxruntime:precision=int8" in command
    assert int(values["--max-new-tokens"]) == request["max_new_tokens"]


def test_csv_has_one_row_per_backend(broken_text_run):
    rows = list(csv.DictReader(io.StringIO(report_csv(broken_text_run))))
    assert [r["label"] for r in rows] == [r["label"] for r in broken_text_run["results"]]
    assert rows[1]["verdict"] == "GIBBERISH" and rows[1]["broken"] == "True"
    assert float(rows[0]["tokens_per_s"]) == pytest.approx(broken_text_run["results"][0]["timings"]["tokens_per_s"])
    assert "SIGSEGV" in rows[2]["error"]


def test_no_secret_reaches_any_report(broken_text_run, tmp_path, monkeypatch):
    token, key = "hf_abcdefghijklmnopqrstuvwxyz012345", "sk-test-0123456789abcdefghijklmn"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "correct horse battery")
    run = copy.deepcopy(broken_text_run)
    # Secrets that slipped into a result: an error message and a log line quoting them, a prompt with a token.
    run["results"][2]["error"] = f"401 Unauthorized with token {token}"
    run["results"][2]["log_tail"] = f"Authorization: Bearer {key}\npassword=correct horse battery"
    run["request"]["prompt"] = "my key is hf_ZZZZZZZZZZZZZZZZZZZZZZZZZZ please"
    paths = write_reports(run, "text", tmp_path)
    assert {p.suffix for p in paths} == {".md", ".json", ".csv"}
    for path in paths:
        content = path.read_text()
        for secret in (token, key, "correct horse battery", "hf_ZZZZZZZZZZZZZZZZZZZZZZZZZZ"):
            assert secret not in content, (path.name, secret)
        assert "<redacted>" in content
    assert scrub("nothing secret here") == "nothing secret here"


def test_image_report_has_the_heatmap(tmp_path):
    record = json.loads((STORED / "image.json").read_text())
    run = record["run"]
    images = [np.asarray(Image.open(STORED / name).convert("RGB")) for name in record["images"]]
    images[1] = 255 - images[1]  # a candidate that drew the negative
    run["results"][1]["identical_to_reference"] = False
    paths = write_reports(run, "image", tmp_path, stem="run", images=images)
    heatmap = tmp_path / "run-heatmap-1.png"
    assert heatmap in paths and np.asarray(Image.open(heatmap)).mean() > 50
    text = (tmp_path / "run.md").read_text()
    assert "![difference heatmap" in text and "(run-heatmap-1.png)" in text
    assert "python -m arena image --model scenes-64" in text and "--steps 20" in text
    assert "| UNet loop |" in text


def test_cli_image_writes_the_same_reports(session_cache, tmp_path):
    """``--report DIR`` on ``image``: the three files, holding that run's verdict and its own command (``text``'s
    reports are checked in tests/test_cli.py, on the run it already makes)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ARENA_CACHE_DIR=str(session_cache))
    args = ("--prompt", "a red circle on a blue background", "--steps", "2", "--backend", "pytorch")
    done = subprocess.run([sys.executable, "-m", "arena", "image", *args, "--report", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stdout + done.stderr[-2000:]  # 2 steps may well be judged NOISE
    markdown = (tmp_path / "arena-report.md").read_text()
    data = json.loads((tmp_path / "arena-report.json").read_text())
    kind = data["run"]["results"][0]["verdict"]["kind"]
    assert data["task"] == "image" and f"**{kind}**" in markdown and "python -m arena image" in markdown
    assert len(list(csv.DictReader(io.StringIO((tmp_path / "arena-report.csv").read_text())))) == 1
