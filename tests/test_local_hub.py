"""The local Hub stand-in, checked through huggingface_hub itself: if these pass, the app's hub tests talk to a
server that answers the way huggingface.co does for the calls huggingface_hub makes."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.numpy import save

from tests.support.local_hub import LocalHub

GRANTED, OTHER = "hf_canary_granted", "hf_canary_other"
CONFIG = json.dumps({"architectures": ["TinyModel"], "model_type": "tiny"})


@pytest.fixture
def weights() -> bytes:
    return save({"w": np.ones((4, 8), np.float32), "b": np.ones(8, np.float16)})  # F32: 32, F16: 8


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A running hub with huggingface_hub pointed at it, online, and no token of this machine's own."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with LocalHub(tokens={GRANTED: None, OTHER: ["org/other"]}) as server, server.patch_huggingface_hub():
        yield server


def api(hub: LocalHub) -> HfApi:
    return HfApi(endpoint=hub.url)


def test_model_info_gives_commit_sizes_lfs_and_safetensors_totals(hub, weights):
    sha = hub.add_repo("org/tiny", {"config.json": CONFIG, "model.safetensors": weights, "sub/notes.txt": b"hi"})
    info = api(hub).model_info("org/tiny", files_metadata=True, token=False)
    assert info.sha == sha and len(sha) == 40 and info.id == "org/tiny"
    assert info.private is False and info.gated is False and info.config["model_type"] == "tiny"
    siblings = {s.rfilename: s for s in info.siblings}
    assert {name: s.size for name, s in siblings.items()} == {
        "config.json": len(CONFIG), "model.safetensors": len(weights), "sub/notes.txt": 2}
    assert siblings["config.json"].lfs is None
    assert siblings["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert info.safetensors.parameters == {"F32": 32, "F16": 8} and info.safetensors.total == 40
    plain = api(hub).model_info("org/tiny", token=False)
    assert plain.sha == sha and plain.siblings[0].size is None  # sizes only with files_metadata
    assert "blobs=true" in hub.requests[0].path.lower()  # requests wrote True, httpx writes true


def test_safetensors_totals_trust_the_header_like_the_hub(hub):
    header = json.dumps({"w": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 4 * 10**10]}}).encode()
    lie = struct.pack("<Q", len(header)) + header  # claims 10^10 parameters, holds none
    hub.add_repo("org/liar", {"config.json": "{}", "model.safetensors": lie})
    assert api(hub).model_info("org/liar", token=False).safetensors.total == 10**10
    meta = api(hub).get_safetensors_metadata("org/liar", token=False)
    assert meta.parameter_count == {"F32": 10**10}


def test_safetensors_metadata_reads_the_header_by_range_from_the_cdn_without_the_token(hub, weights):
    hub.add_repo("org/tiny", {"config.json": CONFIG, "model.safetensors": weights})
    meta = api(hub).get_safetensors_metadata("org/tiny", token=GRANTED)
    assert meta.parameter_count == {"F32": 32, "F16": 8} and not meta.sharded
    assert [s.range for s in hub.served] == ["bytes=0-100000"]
    resolve = [r for r in hub.requests if "/resolve/" in r.path]
    cdn = [r for r in hub.requests if r.path.startswith("/_cdn/")]
    assert resolve and all(r.authorization == f"Bearer {GRANTED}" for r in resolve)
    assert cdn and all(r.authorization is None for r in cdn)  # the client drops it on the other host
    url = f"{hub.url}/org/tiny/resolve/main/model.safetensors"
    part = requests.get(url, headers={"Range": "bytes=2-5"}, timeout=10)
    assert part.status_code == 206 and part.content == weights[2:6]
    assert part.headers["Content-Range"] == f"bytes 2-5/{len(weights)}"
    assert requests.get(url, headers={"Range": "bytes=-3"}, timeout=10).content == weights[-3:]


def test_snapshot_download_pins_the_commit_and_fetches_only_allowed_files(hub, weights, tmp_path):
    old = hub.add_repo("org/tiny", {"config.json": CONFIG, "model.safetensors": weights, "tokenizer.json": "{}"})
    new = hub.commit("org/tiny", {"config.json": "{}", "extra.json": "[]"}, delete=["tokenizer.json"])
    assert new != old and hub.head("org/tiny") == new
    root = Path(snapshot_download("org/tiny", revision=old, allow_patterns=["*.json"], cache_dir=tmp_path,
                                  endpoint=hub.url, token=False))
    assert root.name == old
    assert sorted(p.name for p in root.iterdir()) == ["config.json", "tokenizer.json"]
    assert (root / "config.json").read_text() == CONFIG  # the old commit's content, though main moved on
    assert sorted(s.filename for s in hub.served) == ["config.json", "tokenizer.json"]
    assert {s.commit for s in hub.served} == {old}
    assert all(r.authorization is None for r in hub.requests)

    latest = Path(snapshot_download("org/tiny", cache_dir=tmp_path, endpoint=hub.url, token=False))
    assert latest.name == new
    assert sorted(p.name for p in latest.iterdir()) == ["config.json", "extra.json", "model.safetensors"]
    assert (latest / "model.safetensors").read_bytes() == weights


def test_hf_hub_download_follows_the_lfs_redirect(hub, weights, tmp_path):
    sha = hub.add_repo("org/tiny", {"config.json": CONFIG, "model.safetensors": weights})
    path = hf_hub_download("org/tiny", "model.safetensors", cache_dir=tmp_path, endpoint=hub.url, token=GRANTED)
    assert Path(path).read_bytes() == weights and f"/snapshots/{sha}/" in path
    assert Path(path).resolve().name == hashlib.sha256(weights).hexdigest()  # the client names blobs by ETag
    config = hf_hub_download("org/tiny", "config.json", cache_dir=tmp_path, endpoint=hub.url, token=False)
    assert Path(config).resolve().name == hashlib.sha1(b"blob %d\0%s" % (len(CONFIG), CONFIG.encode())).hexdigest()
    assert [(r.method, r.path.split("/")[1]) for r in hub.requests] == [("HEAD", "org"), ("GET", "_cdn"),
                                                                        ("HEAD", "org"), ("GET", "org")]


def test_listing_the_tree(hub):
    hub.add_repo("org/tree", {"a.json": "1", "sub/b.bin": b"22", "sub/deep/c.txt": "333"})
    files = api(hub).list_repo_files("org/tree", token=False)
    assert files == ["a.json", "sub/b.bin", "sub/deep/c.txt"]
    top = {e.path: type(e).__name__ for e in api(hub).list_repo_tree("org/tree", token=False)}
    assert top == {"a.json": "RepoFile", "sub": "RepoFolder"}
    sub = {e.path: getattr(e, "lfs", None) for e in api(hub).list_repo_tree("org/tree", "sub", token=False)}
    assert set(sub) == {"sub/b.bin", "sub/deep"} and sub["sub/b.bin"].size == 2
    with pytest.raises(EntryNotFoundError):
        list(api(hub).list_repo_tree("org/tree", "nowhere", token=False))


def test_errors_map_to_huggingface_hub_exceptions(hub, tmp_path):
    sha = hub.add_repo("org/tiny", {"config.json": CONFIG})
    with pytest.raises(RepositoryNotFoundError):
        api(hub).model_info("org/missing", token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json", cache_dir=tmp_path, endpoint=hub.url, token=False)
    with pytest.raises(RevisionNotFoundError):
        api(hub).model_info("org/tiny", revision="v9", token=False)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/tiny", "config.json", revision="0" * 40, cache_dir=tmp_path, endpoint=hub.url,
                        token=False)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/tiny", "nope.json", cache_dir=tmp_path, endpoint=hub.url, token=False)
    assert not api(hub).file_exists("org/tiny", "nope.json", token=False)
    assert api(hub).file_exists("org/tiny", "config.json", revision=sha, token=False)
    with pytest.raises(HfHubHTTPError) as unknown:  # an unknown token is refused even on a public repo
        api(hub).model_info("org/tiny", token="hf_unknown")
    assert unknown.value.response.status_code == 401 and not isinstance(unknown.value, RepositoryNotFoundError)


def test_gated_repo_lists_to_all_but_serves_files_to_granted_tokens_only(hub, tmp_path):
    hub.add_repo("org/gate", {"config.json": CONFIG}, gated=True)
    hub.add_repo("org/other", {"config.json": CONFIG}, gated="manual")
    assert api(hub).model_info("org/gate", token=False).gated == "auto"  # the listing is public
    for token, status in ((False, 401), (OTHER, 403)):
        with pytest.raises(GatedRepoError) as refused:
            hf_hub_download("org/gate", "config.json", cache_dir=tmp_path, endpoint=hub.url, token=token)
        assert refused.value.response.status_code == status
    with pytest.raises(GatedRepoError):
        snapshot_download("org/gate", cache_dir=tmp_path, endpoint=hub.url, token=False)
    assert hub.served == []
    hf_hub_download("org/gate", "config.json", cache_dir=tmp_path / "a", endpoint=hub.url, token=GRANTED)
    hf_hub_download("org/other", "config.json", cache_dir=tmp_path / "b", endpoint=hub.url, token=OTHER)
    hub.set_gated("org/gate", False)
    hf_hub_download("org/gate", "config.json", cache_dir=tmp_path / "c", endpoint=hub.url, token=False)
    assert len(hub.served) == 3


def test_private_repo_is_not_found_without_a_granted_token(hub):
    hub.add_repo("org/secret", {"config.json": CONFIG}, private=True)
    with pytest.raises(RepositoryNotFoundError) as anonymous:
        api(hub).model_info("org/secret", token=False)
    with pytest.raises(RepositoryNotFoundError) as signed_in:
        api(hub).model_info("org/secret", token=OTHER)
    assert (anonymous.value.response.status_code, signed_in.value.response.status_code) == (401, 404)
    assert api(hub).model_info("org/secret", token=GRANTED).private is True


def test_the_token_is_sent_only_when_given(hub, monkeypatch):
    hub.add_repo("org/tiny", {"config.json": CONFIG})
    api(hub).model_info("org/tiny", token=False)
    api(hub).model_info("org/tiny", token=GRANTED)
    monkeypatch.setenv("HF_TOKEN", OTHER)
    api(hub).model_info("org/tiny", token=False)
    api(hub).model_info("org/tiny")  # None: the implicit token of the environment
    assert [r.authorization for r in hub.requests] == [None, f"Bearer {GRANTED}", None, f"Bearer {OTHER}"]


def test_patched_client_needs_no_endpoint_and_is_restored(tmp_path, weights):
    before = (constants.ENDPOINT, constants.HF_HUB_OFFLINE)
    with LocalHub() as hub:
        sha = hub.add_repo("org/tiny", {"config.json": CONFIG, "model.safetensors": weights})
        with hub.patch_huggingface_hub():
            assert HfApi().model_info("org/tiny", token=False).sha == sha
            root = Path(snapshot_download("org/tiny", cache_dir=tmp_path, token=False))
            assert (root / "model.safetensors").read_bytes() == weights
    assert (constants.ENDPOINT, constants.HF_HUB_OFFLINE) == before


def test_subprocess_reaches_the_hub_through_hf_endpoint(tmp_path, weights):
    with LocalHub() as hub:
        sha = hub.add_repo("org/tiny", {"config.json": CONFIG, "model.safetensors": weights})
        code = ("import sys; from huggingface_hub import snapshot_download; "
                "print(snapshot_download('org/tiny', allow_patterns=['*.json'], token=False))")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        done = subprocess.run([sys.executable, "-c", code], env={**env, **hub.env(tmp_path)}, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        root = Path(done.stdout.strip())
        assert root.name == sha and sorted(p.name for p in root.iterdir()) == ["config.json"]
        assert [s.filename for s in hub.served] == ["config.json"]
