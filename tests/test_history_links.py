"""Run history (bounded files locally, per session in memory in public mode) and links that carry a run's
settings through query parameters and back into the same request."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlparse

import pytest

from arena.sharing.history import RunHistory
from arena.sharing.links import request_from_query, share_link
from arena.types import BackendSpec, ImageRunRequest, TextRunRequest
from tests.support import ROOT

STORED = ROOT / "assets" / "reference-run"


@pytest.fixture
def text_run() -> dict:
    return json.loads((STORED / "text.json").read_text())["run"]


def test_local_history_is_bounded_files_newest_first(tmp_path, text_run):
    history = RunHistory(tmp_path / "history", limit=3)
    ids = []
    for n in range(5):
        run = json.loads(json.dumps(text_run))
        run["request"]["prompt"] = f"prompt {n}"
        ids.append(history.add("anyone", "text", run).id)
    assert len(list((tmp_path / "history").glob("*.json"))) == 3  # the two oldest were dropped
    # A fresh history over the same folder (the app restarted) sees the same runs, newest first.
    entries = RunHistory(tmp_path / "history", limit=3).entries("someone else")
    assert [e.id for e in entries] == ids[::-1][:3]
    assert entries[0].run["request"]["prompt"] == "prompt 4"
    row = entries[0].summary()
    assert row["model"] == "smollm2-135m-instruct" and "ONNX Runtime · auto · fp32: MATCH" in row["backends"]
    assert history.get("x", ids[-1]).run["results"][1]["text"] == text_run["results"][1]["text"]


def test_public_history_is_per_session_and_never_on_disk(tmp_path, text_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    history = RunHistory(None, limit=2, max_sessions=2)
    history.add("visitor-a", "text", text_run)
    history.add("visitor-b", "text", text_run)
    assert len(history.entries("visitor-a")) == 1 and len(history.entries("visitor-b")) == 1
    assert history.entries("visitor-c") == []
    assert history.get("visitor-b", history.entries("visitor-a")[0].id) is None  # not another visitor's run
    history.add("visitor-c", "text", text_run)  # a third session pushes out the least recently active one
    assert history.entries("visitor-a") == [] and len(history.entries("visitor-c")) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_link_carries_the_settings_back_into_the_same_request():
    request = TextRunRequest(model="smollm2-135m-instruct", prompt="Why? & how = 100%",
                             backends=(BackendSpec("pytorch"), BackendSpec("onnxruntime", precision="int8")),
                             max_new_tokens=8, ignore_eos=True, warmup=0, repeats=2, reference="pytorch")
    link = share_link("http://127.0.0.1:7860/?old=1", "text", request.to_dict())
    assert link.startswith("http://127.0.0.1:7860/?tab=text&") and "old" not in link
    task, back = request_from_query(dict(parse_qsl(urlparse(link).query)))
    assert task == "text" and back == request

    image = ImageRunRequest(model="scenes-64", prompt="a red circle", backends=(BackendSpec("onnxruntime"),),
                            steps=5, guidance_scale=3.5, seed=7, width=64, height=64)
    task, back = request_from_query(dict(parse_qsl(urlparse(share_link("/", "image", image.to_dict())).query)))
    assert task == "image" and back == image


def test_a_bad_link_is_one_sentence_and_no_link_is_nothing():
    assert request_from_query({}) is None and request_from_query({"__theme": "dark"}) is None
    for params, words in (({"prompt": "x", "backends": '["tensorflow"]'}, "Unknown backend"),
                          ({"prompt": "x", "max_new_tokens": "lots"}, "lots"),
                          ({"prompt": "x", "backends": "{not json"}, "cannot be read"),
                          ({"prompt": "x", "backends": '[{"backend": "onnxruntime", "colour": "red"}]'}, "colour")):
        with pytest.raises(ValueError, match=words):
            request_from_query(params)


def test_a_kept_runs_title_tells_two_runs_of_one_prompt_apart_and_speeds_have_units(tmp_path, text_run):
    history = RunHistory(tmp_path / "history")
    good = history.add("me", "text", text_run)
    broken = json.loads(json.dumps(text_run))
    broken["results"][1]["verdict"] = {"kind": "GIBBERISH", "reason": "x", "broken": True, "metrics": {}}
    bad = history.add("me", "text", broken)
    assert good.title().endswith("2 MATCH") and bad.title().endswith("1 MATCH, 1 GIBBERISH")
    assert "tok/s" in good.summary()["speed"]


def test_a_result_link_finds_a_kept_run_by_its_secret_id_and_nothing_else(tmp_path, text_run, monkeypatch):
    """`?run=<id>` opens a kept run for whoever holds the link: locally from the history folder (a restarted app
    too), in public mode from a bounded store shared by the sessions. The id ends in 64 random bits; anything
    else (a path, a shorter id, another run's id with one digit changed) finds nothing and reads no file."""
    import numpy as np

    from arena.sharing import history as module

    local = RunHistory(tmp_path / "history")
    entry = local.add("me", "text", text_run)
    assert module.ENTRY_ID.match(entry.id) and len(entry.id.rsplit("-", 1)[1]) == 16
    found, pictures = RunHistory(tmp_path / "history").find(entry.id)
    assert found.run["results"][1]["text"] == text_run["results"][1]["text"] and pictures == []
    (tmp_path / "secret.json").write_text(json.dumps(entry.to_dict()))
    for probe in ("../secret", "../../etc/passwd", entry.id[:-1], entry.id + "0", entry.id.replace("-", "/"),
                  entry.id[:-1] + ("0" if entry.id[-1] != "0" else "1"), "", None, 42):
        assert local.find(probe) is None, probe

    # An image run keeps its pictures: they come back as arrays, pixel for pixel (PNG), None where none was drawn.
    picture = (np.arange(8 * 8 * 3) % 256).astype(np.uint8).reshape(8, 8, 3)
    image_run = {"request": {"prompt": "x"}, "results": [{"backend": "pytorch"}, {"backend": "onnxruntime"}]}
    kept = local.add("me", "image", image_run, images=[picture, None])
    _, pictures = RunHistory(tmp_path / "history").find(kept.id)
    assert np.array_equal(pictures[0], picture) and pictures[1] is None

    # Public mode: another session finds it (the link is the secret); the store is bounded in runs and bytes.
    monkeypatch.setattr(module, "SHARED_LIMIT", 3)
    public = RunHistory(None, max_entry_bytes=256_000)
    first = public.add("visitor-a", "text", text_run)
    assert public.find(first.id)[0].run["request"] == text_run["request"]
    public.forget("visitor-a")  # the page closed: the link still opens the run
    assert public.find(first.id) is not None and not list(tmp_path.glob("**/" + first.id + "*"))
    for n in range(3):
        public.add(f"visitor-{n}", "text", text_run)
    assert public.find(first.id) is None  # the oldest linked run went
    monkeypatch.setattr(module, "SHARED_MAX_BYTES", 10)
    newest = public.add("visitor-z", "text", text_run)
    assert public.find(newest.id) is not None and len(public._shared) == 1  # the newest is kept, alone
