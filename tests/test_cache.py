import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from arena.preparing.cache import ArtifactCache, cache_key, directory_fingerprint


def test_build_once_then_reuse(tmp_path):
    cache = ArtifactCache(tmp_path)
    builds = []

    def build(tmp: Path):
        builds.append(tmp)
        (tmp / "model.onnx").write_text("graph")
        return {"source": "here"}

    path, built = cache.get_or_build("onnx", {"model": "a"}, build)
    again, built_again = cache.get_or_build("onnx", {"model": "a"}, build)
    assert (built, built_again) == (True, False)
    assert path == again and (path / "model.onnx").read_text() == "graph"
    assert len(builds) == 1
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["fields"] == {"model": "a"} and manifest["source"] == "here"
    other, built_other = cache.get_or_build("onnx", {"model": "b"}, build)
    assert built_other and other != path


def test_failed_build_leaves_nothing_trusted(tmp_path):
    cache = ArtifactCache(tmp_path)

    def build(tmp: Path):
        (tmp / "half.onnx").write_text("partial")
        raise RuntimeError("export crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("onnx", {"model": "a"}, build)
    assert cache.lookup("onnx", {"model": "a"}) is None
    assert list((tmp_path / "onnx").iterdir()) == []


def _slow_build(root: str) -> None:
    cache = ArtifactCache(root)

    def build(tmp: Path):
        (tmp / "half.onnx").write_text("partial")
        time.sleep(60)

    cache.get_or_build("onnx", {"model": "killed"}, build)


def test_killed_builder_is_never_trusted_and_cleaned(tmp_path):
    process = multiprocessing.get_context("spawn").Process(target=_slow_build, args=(str(tmp_path),))
    process.start()
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob("onnx/.tmp-*/half.onnx")):
        assert time.monotonic() < deadline, "the builder never started"
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    cache = ArtifactCache(tmp_path)
    assert cache.lookup("onnx", {"model": "killed"}) is None
    removed = cache.clean_stale()
    assert len(removed) == 1 and not removed[0].exists()


def test_keys_and_fingerprints_change_with_content(tmp_path):
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})
    (tmp_path / "config.json").write_text("{}")
    before = directory_fingerprint(tmp_path)
    time.sleep(0.01)
    (tmp_path / "model.safetensors").write_bytes(b"1234")
    assert directory_fingerprint(tmp_path) != before


def test_least_recently_used_entries_go_when_the_cache_is_over_its_limit(tmp_path):
    """Public mode's disk cap: exports and hub downloads together, least recently used first."""
    cache = ArtifactCache(tmp_path)

    def build(tmp: Path):
        (tmp / "weights.bin").write_bytes(b"x" * 1000)

    paths = {name: cache.get_or_build("onnx", {"model": name}, build)[0] for name in ("a", "b", "c")}
    hub = tmp_path / "hub" / "models--owner--name"
    (hub / "blobs").mkdir(parents=True)
    (hub / "blobs" / "x").write_bytes(b"y" * 1000)
    for age, name in enumerate(("b", "a", "c")):  # b is the oldest use, then the hub download, a, c
        os.utime(paths[name] / ".last-used", (time.time() - 100 + age * 20,) * 2)
    os.utime(hub, (time.time() - 90,) * 2)
    assert cache.lookup("onnx", {"model": "c"}) == paths["c"]  # a lookup is a use
    removed = cache.enforce_limit(2500)
    assert removed == [paths["b"], hub]
    assert cache.lookup("onnx", {"model": "a"}) and cache.lookup("onnx", {"model": "c"})
    assert cache.enforce_limit(10) == [paths["a"]]  # the newest entry stays, whatever its size
    assert cache.lookup("onnx", {"model": "c"}) == paths["c"]


def test_eviction_leaves_what_another_unfinished_run_uses(tmp_path):
    """Two visitors: one run ends and cuts the cache while the other is between two steps with its hub download and
    its export; those stay, the unused oldest entry goes."""
    cache = ArtifactCache(tmp_path)

    def build(tmp: Path):
        (tmp / "model.onnx").write_bytes(b"x" * 1000)

    paths = {name: cache.get_or_build("onnx", {"model": name}, build)[0] for name in ("old", "theirs", "mine")}
    hub = tmp_path / "hub" / "models--other--visitor"
    snapshot = hub / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"y" * 1000)
    for age, path in enumerate((hub, paths["theirs"], paths["old"], paths["mine"])):  # hub's is the oldest use
        marker = path / ".last-used"
        marker.touch()
        os.utime(marker, (time.time() - 100 + age * 20,) * 2)
    removed = cache.enforce_limit(1500, in_use={str(snapshot), str(paths["theirs"])})
    assert removed == [paths["old"]]
    assert snapshot.is_dir() and paths["theirs"].is_dir() and paths["mine"].is_dir()
