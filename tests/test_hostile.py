"""Hostile repositories against the app in public mode (SPACE_ID set), with the local stand-in Hub and canary
secrets in the app's environment: each attack is refused with one sentence or runs within its caps, and the
canaries appear nowhere a visitor (or a fooled loader) could read them."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import threading
from pathlib import Path

import psutil
import pytest
from gradio_client import Client

from tests.conftest import ROOT, running_app
from tests.local_hub import LocalHub
from tests.test_hub_border import repo_files, tokenizer_config
from tests.test_mcp import mcp_client

pytestmark = pytest.mark.slow

CANARY = "hf_canaryTOKEN0123456789abcdefXYZ"
KEY_CANARY = "sk-canaryKEY0123456789abcdefghijk"
CACHE_CAP_GB = 0.05
EXTRA_CAP_MB = 8
TEXT = {"prompt": "Hello", "backends": ["pytorch"], "max_new_tokens": 4, "warmup": 0, "api_name": "/compare_text"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_llama, tiny_sd):
    """The app in public mode against a local Hub; the repositories are added as the tests need them."""
    tmp = tmp_path_factory.mktemp("hostile")
    secret_file = tmp / "server-secret.txt"
    secret_file.write_text(f"SERVER_SECRET={CANARY}\n")
    with LocalHub(tokens={CANARY: ["op/gated"]}) as hub:
        hub.add_repo("good/tiny", repo_files(tiny_llama))
        env = hub.env(tmp / "hf-home") | {
            "SPACE_ID": "local/hostile", "HF_TOKEN": CANARY, "OPENAI_API_KEY": KEY_CANARY,
            "ARENA_MAX_CACHE_GB": str(CACHE_CAP_GB), "ARENA_MAX_EXTRA_MB": str(EXTRA_CAP_MB)}
        with running_app(tmp / "cache", tmp, args=("--no-warm-up",), **env) as app:
            outputs: list[str] = []
            yield {"app": app, "hub": hub, "cache": tmp / "cache", "secret_file": secret_file, "outputs": outputs,
                   "client": Client(app["url"], verbose=False), "tiny_llama": tiny_llama, "tiny_sd": tiny_sd}


def ask(hostile, **kwargs) -> dict:
    result = hostile["client"].predict(**{**TEXT, **kwargs})
    hostile["outputs"].append(json.dumps(result, default=str))
    return result


def sentence(result: dict) -> str:
    assert result["results"] == [], result
    error = result["error"]
    assert error and error.endswith(".") and "\n" not in error, error
    return error


def test_tokenizer_configs_that_point_outside_the_repository_are_refused(hostile):
    hub, llama = hostile["hub"], hostile["tiny_llama"]
    targets = {"evil/self-environ": "/proc/self/environ", "evil/app-environ": f"/proc/{hostile['app']['pid']}/environ",
               "evil/server-file": str(hostile["secret_file"]), "evil/climb": "../../../../../../proc/self/environ"}
    for repo, target in targets.items():
        hub.add_repo(repo, repo_files(llama, tokenizer_config__json=tokenizer_config(
            llama, tokenizer_class="ProphetNetTokenizer", vocab_file=target)))
        problem = sentence(ask(hostile, model=repo))
        assert "may only name files of the same repository" in problem and "vocab_file" in problem, problem


def test_a_large_architecture_with_tiny_weights_is_refused_before_allocating(hostile):
    import numpy as np
    from safetensors.numpy import save

    llama = hostile["tiny_llama"]
    config = json.loads((llama / "config.json").read_text())
    big = config | {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 32, "vocab_size": 32000,
                    "num_attention_heads": 32, "num_key_value_heads": 32}
    hostile["hub"].add_repo("evil/3b", repo_files(llama, config__json=big, model__safetensors=save(
        {"model.embed_tokens.weight": np.zeros((1, 1), np.float32)})))
    problem = sentence(ask(hostile, model="evil/3b"))
    assert "parameters (counted from its configuration)" in problem and "up to 1.5B" in problem, problem
    memory = [p.memory_info().rss for p in psutil.Process(hostile["app"]["pid"]).children(recursive=True)]
    assert max(memory) < 2e9, memory  # nothing allocated the 3B parameters


def test_a_repository_changed_after_its_check_runs_at_the_checked_commit(hostile):
    hub, llama = hostile["hub"], hostile["tiny_llama"]
    first = hub.add_repo("evil/swap", repo_files(llama))
    swapped = threading.Event()

    def swap(served):  # the moment the server has fetched the config to check it, the repository changes
        if served.repo_id == "evil/swap" and served.filename == "config.json" and not swapped.is_set():
            swapped.set()
            hub.commit("evil/swap", {"notes.txt": b"n" * 20_000_000, "tokenizer_config.json": json.dumps(
                tokenizer_config(llama, vocab_file="/proc/self/environ"))})

    hub.when_served(swap)
    result = ask(hostile, model="evil/swap")
    assert swapped.is_set() and hub.head("evil/swap") != first
    assert result["error"] is None and result["results"][0]["error"] is None, result
    assert len(result["results"][0]["token_ids"]) == 4
    assert {s.commit for s in hub.served if s.repo_id == "evil/swap"} == {first}


def test_a_huge_non_weight_file_is_refused_before_any_download(hostile):
    hub = hostile["hub"]
    hub.add_repo("evil/notes", repo_files(hostile["tiny_llama"], notes__txt=b"n" * 20_000_000))
    problem = sentence(ask(hostile, model="evil/notes"))
    assert f"up to {EXTRA_CAP_MB} MB" in problem and "notes.txt" in problem, problem
    assert not [s for s in hub.served if s.repo_id == "evil/notes"]


def test_a_pipeline_with_a_huge_native_size_is_refused(hostile):
    tiny_sd = hostile["tiny_sd"]
    files = {str(p.relative_to(tiny_sd)): p for p in tiny_sd.rglob("*") if p.is_file()}
    unet = json.loads((tiny_sd / "unet" / "config.json").read_text()) | {"sample_size": 2048}
    hostile["hub"].add_repo("evil/huge-sd", files | {"unet/config.json": json.dumps(unet)})
    _gallery, result = hostile["client"].predict(
        prompt="a red circle", model="evil/huge-sd", backends="pytorch", negative_prompt="", steps=2,
        guidance_scale=4.0, seed=0, height=0, width=0, api_name="/compare_image")
    hostile["outputs"].append(json.dumps(result))
    problem = sentence(result)
    assert "capped at 768 px" in problem and "native size" in problem, problem


def test_a_gated_repository_is_refused_and_the_operators_token_never_leaves_for_a_visitor(hostile):
    hub = hostile["hub"]
    hub.add_repo("op/gated", repo_files(hostile["tiny_llama"]), gated=True)
    problem = sentence(ask(hostile, model="op/gated"))
    assert "gated" in problem, problem
    sent = [r for r in hub.requests if r.authorization]
    assert not sent, sent  # every visitor repository was asked for anonymously


def test_work_caps_hold_for_check_prompts_and_a_20_mb_prompt(hostile):
    client = hostile["client"]
    report = client.predict(model="good/tiny", candidate="pytorch", prompts=["hi"] * 200, api_name="/check")
    hostile["outputs"].append(json.dumps(report))
    assert report["broken"] and "up to 5 prompts" in report["error"] and report["checks"] == [], report
    huge = "x" * 20_000_000
    result = ask(hostile, model="good/tiny", prompt=huge)
    assert "capped at 2000" in sentence(result)
    assert len(json.dumps(result)) < 100_000  # the prompt is not echoed back whole


def test_mcp_clients_cannot_stop_each_other(hostile):
    session_cls, connect = mcp_client()
    url = hostile["app"]["url"] + "gradio_api/mcp/"

    async def call(name, arguments):
        async with connect(url) as (read, write, _), session_cls(read, write) as session:
            await session.initialize()
            return await session.call_tool(name, arguments)

    async def both():
        run = asyncio.create_task(call("compare_text", {"prompt": "Hello", "model": "good/tiny",
                                                        "backends": ["pytorch"], "max_new_tokens": 24,
                                                        "warmup": 0}))
        await asyncio.sleep(1.0)
        stop = await call("stop", {})
        return await run, stop

    run, stop = asyncio.run(both())
    assert "not available through MCP" in stop.content[0].text, stop
    result = ast.literal_eval(run.content[0].text)
    hostile["outputs"].append(json.dumps(result))
    assert result["error"] is None and result["results"][0]["error"] is None, result


def test_zz_no_canary_anywhere_and_the_cache_under_its_cap(hostile):
    """Last in this module: every answer, the logs, the cache and every process's environment."""
    app = hostile["app"]
    pids = [app["pid"]] + [p.pid for p in psutil.Process(app["pid"]).children(recursive=True)]
    places = {f"/proc/{pid}/environ": Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
              for pid in pids}
    places["answers"] = "\n".join(hostile["outputs"])
    places["app log"] = Path(app["log"]).read_text(errors="replace")
    for log in (hostile["cache"] / "logs").glob("*.log"):
        places[log.name] = log.read_text(errors="replace")
    for name, text in places.items():
        assert CANARY not in text and KEY_CANARY not in text, f"a canary in {name}"
    assert len(pids) > 2  # the workers were there to be looked at
    # Workers run in an empty folder: a relative name in a visitor's config (transformers opens a tokenizer
    # config's vocab_file relative to the working directory) finds none of the app's files.
    workers = [p.pid for p in psutil.Process(app["pid"]).children(recursive=True)
               if "spawn_main" in " ".join(p.cmdline())]
    assert workers
    for pid in workers:
        folder = os.readlink(f"/proc/{pid}/cwd")
        assert folder != str(ROOT) and not [p for p in Path(folder).iterdir() if p.is_file()], folder
    size = sum(f.stat().st_size for f in hostile["cache"].rglob("*") if f.is_file() and not f.is_symlink())
    assert size < CACHE_CAP_GB * 1e9, size
    assert not [f for f in hostile["cache"].rglob("notes.txt")]
    assert os.environ.get("HF_TOKEN") != CANARY  # (the canary lived only in the app's environment)
