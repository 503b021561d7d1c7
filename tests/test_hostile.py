"""Hostile repositories against the app in public mode (SPACE_ID set), with the local stand-in Hub and canary
secrets in the app's environment: each attack is refused with one sentence or runs within its caps, and the
canaries appear nowhere a visitor (or a fooled loader) could read them."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import threading
import time
from pathlib import Path

import psutil
import pytest
from gradio_client import Client

from tests.support import ROOT
from tests.support.app import running_app
from tests.support.helpers import RssSampler
from tests.support.local_hub import LocalHub
from tests.support.tiny_models import CHAT_TEMPLATE
from tests.test_hub_border import repo_files, tokenizer_config
from tests.test_mcp import mcp_client

pytestmark = pytest.mark.slow

CANARY = "hf_canaryTOKEN0123456789abcdefXYZ"
KEY_CANARY = "sk-canaryKEY0123456789abcdefghijk"
CACHE_CAP_GB = 0.05
EXTRA_CAP_MB = 8
APP_MEMORY_CAP = 1e9  # the app process, whatever a visitor sends (issue: a 2 MB tokenizer took it to 12 GB)
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
            sampler = RssSampler(app["pid"]).start()  # the app's and every worker's peak, over the whole module
            yield {"app": app, "hub": hub, "cache": tmp / "cache", "secret_file": secret_file, "outputs": outputs,
                   "client": Client(app["url"], verbose=False), "tiny_llama": tiny_llama, "tiny_sd": tiny_sd,
                   "memory": sampler}
            sampler.stop()


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


def word_level_llama(llama: Path, first_token: str, template: str | None = None, **config_changes) -> dict:
    """The tiny Llama as a repository with a word-level tokenizer whose token 0 is ``first_token`` and a final norm of
    zeros: every logit is 0, so the greedy answer is token 0, always (the shape of the 12 GB attack)."""
    import numpy as np
    from safetensors.numpy import load_file, save
    from tokenizers import Tokenizer, models, pre_tokenizers

    config = json.loads((llama / "config.json").read_text()) | config_changes
    vocab = {first_token: 0, "<s>": 1, "</s>": 2, "<unk>": 3} | {f"w{i}": i for i in range(4, config["vocab_size"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    weights = load_file(llama / "model.safetensors") if (llama / "model.safetensors").is_file() else {}
    if weights:
        weights["model.norm.weight"] = np.zeros_like(weights["model.norm.weight"])
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                        "unk_token": "<unk>", "pad_token": "</s>",
                        "chat_template": template or CHAT_TEMPLATE}
    return {"config.json": json.dumps(config), "tokenizer.json": tokenizer.to_str(),
            "tokenizer_config.json": json.dumps(tokenizer_config), "model.safetensors": save(weights)}


def timed(hostile, **kwargs) -> tuple[dict, float]:
    """The answer and its seconds; the figures the threat model quotes are printed (pytest -s shows them)."""
    hostile["memory"].reset()
    start = time.monotonic()
    result = ask(hostile, **kwargs)
    seconds = time.monotonic() - start
    memory = hostile["memory"]
    print(f"\nMEASURED {kwargs.get('model')}: {seconds:.1f} s, app peak {memory.app_peak / 1e6:.0f} MB, "
          f"worker peak {memory.worker_peak / 1e6:.0f} MB: {(result['error'] or '')[:90]}")
    return result, seconds


def test_a_two_megabyte_token_is_refused_within_seconds_and_the_app_stays_small(hostile):
    hostile["hub"].add_repo("evil/giant-token", word_level_llama(hostile["tiny_llama"], "x" * 2_000_000))
    result, seconds = timed(hostile, model="evil/giant-token", max_new_tokens=256)
    problem = sentence(result)
    assert "vocabulary entry 0 is 2,000,000 characters long" in problem and "up to 1,024 characters" in problem
    assert seconds < 30, seconds
    assert hostile["memory"].app_peak < APP_MEMORY_CAP, hostile["memory"].peaks
    # Refused from its tokenizer, before any weight was downloaded.
    assert not list(hostile["cache"].glob("hub/models--evil--giant-token/**/model.safetensors"))


def test_an_answer_of_long_tokens_is_bounded_on_its_way_to_the_page(hostile):
    """Under the vocabulary cap, 256 tokens of 1,000 characters: the answer stops at its character cap (with a
    note), streamed pieces are tails, only the last result is kept; the app process stays small."""
    hostile["hub"].add_repo("evil/long-tokens", word_level_llama(hostile["tiny_llama"], "y" * 1000,
                                                                 max_position_embeddings=512))
    result, seconds = timed(hostile, model="evil/long-tokens", max_new_tokens=256)
    backend = result["results"][0]
    assert backend["error"] is None, backend
    assert backend["token_ids"] == [0] * 256
    cap = 4096 + 64 * 256
    assert cap - 1000 < len(backend["text"]) <= cap, len(backend["text"])
    assert any("answer shown up to 20,480 characters" in note for note in backend["load"]["notes"]), backend["load"]
    assert len(json.dumps(result)) < 200_000
    assert hostile["memory"].app_peak < APP_MEMORY_CAP, hostile["memory"].peaks


def test_a_wide_vocabulary_never_brings_its_distributions_into_the_app(hostile, tmp_path):
    """250,000 tokens x 768 teacher-forced positions would be 768 MB of distributions: they stay in the workers'
    scratch files, cut to their cap, and the app holds figures only (found by the attacker review: 3.4 GB)."""
    import numpy as np
    import torch
    from safetensors.numpy import save
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=250_000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    weights = {k: v.numpy() for k, v in LlamaForCausalLM(config).state_dict().items()}
    weights["model.norm.weight"] = np.zeros_like(weights["model.norm.weight"])
    folder = tmp_path / "wide"
    folder.mkdir()
    (folder / "config.json").write_text(config.to_json_string())
    files = word_level_llama(folder, "w") | {"model.safetensors": save(weights)}
    hostile["hub"].add_repo("evil/wide-vocab", files)
    result, seconds = timed(hostile, model="evil/wide-vocab", max_new_tokens=256)
    assert result["error"] is None and result["results"][0]["error"] is None, result
    assert hostile["memory"].app_peak < APP_MEMORY_CAP, hostile["memory"].peaks
    assert not list((hostile["cache"] / "judging").glob(".tmp-*"))  # the scratch files are gone


@pytest.mark.parametrize("repo, template, words", [
    ("evil/template-repeat", "{{ 'x' * 300000000 }}", "repeats a value 300,000,000 times"),
    ("evil/template-indent", "{{ messages | tojson(indent=100000000) }}", "asks the filter tojson for 100,000,000"),
    ("evil/template-doubling", "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                               "{% endfor %}{{ ns.s }}", "joins"),
    ("evil/template-loop", "{% for i in range(10000) %}{% for j in range(10000) %}xxxxxxxx{% endfor %}{% endfor %}",
     "renders more than 32,000 characters"),
])
def test_a_chat_template_cannot_render_a_prompt_of_any_size(hostile, repo, template, words):
    hostile["hub"].add_repo(repo, word_level_llama(hostile["tiny_llama"], "w", template=template))
    result, seconds = timed(hostile, model=repo)
    problem = sentence(result)
    assert problem.startswith(f"The chat template of '{repo}' failed: SecurityError: ") and words in problem, problem
    assert seconds < 30, seconds
    assert hostile["memory"].worker_peak < 2e9 and hostile["memory"].app_peak < APP_MEMORY_CAP, hostile["memory"].peaks


def test_a_chat_template_that_loops_past_its_budget_is_stopped(hostile):
    template = ("{% for i in range(10000) %}{% for j in range(10000) %}{% if i * j == -1 %}x{% endif %}{% endfor %}"
                "{% endfor %}")
    hostile["hub"].add_repo("evil/template-slow", word_level_llama(hostile["tiny_llama"], "w", template=template))
    result, seconds = timed(hostile, model="evil/template-slow")
    problem = sentence(result)
    assert problem == ("Rendering the chat template of 'evil/template-slow' took longer than its budget of 10 s on "
                       "this server and was stopped."), problem
    assert seconds < 40, seconds


def test_a_long_context_repository_gets_the_servers_token_cap_not_its_own(hostile):
    """max_position_embeddings 10^7 and a template that renders ~7,000 tokens in 21,000 characters."""
    hostile["hub"].add_repo("evil/long-context", word_level_llama(
        hostile["tiny_llama"], "w", template="{{ 'w4 ' * 7000 }}", max_position_embeddings=10_000_000))
    problem = sentence(ask(hostile, model="evil/long-context"))
    assert "is 7,000 tokens once rendered by its template" in problem and "up to 4,096 tokens" in problem, problem


def test_a_tokenizer_regex_that_backtracks_is_stopped_at_its_budget(hostile):
    # Oniguruma gives up a search after 10 million retries (a panic, which is one sentence too), so each run of a's
    # costs at most ~0.1 s here: the template repeats the 2,000-character prompt 16 times to make it ~2 minutes.
    files = word_level_llama(hostile["tiny_llama"], "a",
                             template="{% for i in range(16) %}{{ messages[0]['content'] }}{% endfor %}")
    tokenizer = json.loads(files["tokenizer.json"])
    tokenizer["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(a|aa)+$"}, "behavior": "Isolated",
                                  "invert": False}
    hostile["hub"].add_repo("evil/backtrack", files | {"tokenizer.json": json.dumps(tokenizer)})
    result, seconds = timed(hostile, model="evil/backtrack", prompt=("a" * 30 + "b") * 64)
    problem = sentence(result)
    assert problem in (
        "Tokenizing the prompt with the tokenizer of 'evil/backtrack' took longer than its budget of 10 s on this "
        "server and was stopped.",), problem
    assert seconds < 40, seconds


def test_a_pipeline_nested_in_a_pipeline_is_refused_before_any_import(hostile):
    tiny_sd = hostile["tiny_sd"]
    files = {str(p.relative_to(tiny_sd)): p for p in tiny_sd.rglob("*") if p.is_file()}
    index = json.loads((tiny_sd / "model_index.json").read_text()) | {"evil": ["diffusers", "DiffusionPipeline"]}
    inner = {"_class_name": "DiffusionPipeline", "_diffusers_version": "0.39.0", "payload": ["this", "Anything"]}
    hostile["hub"].add_repo("evil/nested-sd", files | {"model_index.json": json.dumps(index),
                                                      "evil/model_index.json": json.dumps(inner)})
    _gallery, result = hostile["client"].predict(
        prompt="a red circle", model="evil/nested-sd", backends="pytorch", negative_prompt="", steps=2,
        guidance_scale=4.0, seed=0, height=0, width=0, api_name="/compare_image")
    hostile["outputs"].append(json.dumps(result))
    problem = sentence(result)
    assert "pipeline inside its pipeline" in problem, problem
    logs = "".join(p.read_text(errors="replace") for p in (hostile["cache"] / "logs").glob("*.log"))
    assert "The Zen of Python" not in logs  # `import this` prints it: nothing imported the named module


@pytest.mark.parametrize("values, words", [
    ({"max_new_tokens": 10**30}, "Max new tokens is capped at 256"),
    ({"max_new_tokens": "lots"}, "Max new tokens"),
    ({"backends": 42}, ""),
    ({"model": "good/tiny\n/etc"}, "not a catalog model or a Hugging Face hub id"),
])
def test_odd_values_are_sentences_not_tracebacks(hostile, values, words):
    try:
        result = ask(hostile, model="good/tiny", **values)
    except Exception as exc:  # noqa: BLE001 - gradio_client's own refusal of a value it cannot send is fine too
        assert "Traceback" not in str(exc)
        return
    error = result["error"] or (result["results"][0]["error"] if result["results"] else None)
    assert error and "Traceback" not in error and words in error and "\n" not in error.strip(), result


def test_fifty_thousand_backends_are_refused_at_once(hostile):
    """Found by the attacker review: the refusal took 110 s of the app's CPU (every spec parsed and echoed, the
    secrets gathered again for each string) while the next visitor waited."""
    result, seconds = timed(hostile, model="good/tiny", backends=["onnxruntime"] * 50_000)
    assert "A run takes at most 32 backends (asked: 50,000)." in result["error"], result
    assert seconds < 10, seconds


@pytest.mark.parametrize("values", [
    {"model": 123}, {"max_new_tokens": "lots"}, {"task": "zzz"}, {"prompts": "not a list"}, {"max_new_tokens": 10**30},
])
def test_check_arguments_of_odd_types_are_sentences(hostile, values):
    report = hostile["client"].predict(**({"model": "good/tiny", "candidate": "pytorch"} | values),
                                       api_name="/check")
    hostile["outputs"].append(json.dumps(report))
    assert report["broken"] and report["error"] and report["error"].endswith(".") and not report["checks"], report


def test_a_seed_past_64_bits_is_a_sentence(hostile):
    _gallery, result = hostile["client"].predict(
        prompt="a red circle", model="scenes-64", backends="pytorch", negative_prompt="", steps=2,
        guidance_scale=4.0, seed=10**30, height=0, width=0, api_name="/compare_image")
    assert "Seed must be between 0 and" in result["error"], result


@pytest.mark.parametrize("eos", [1.5, "abc", {"a": 1}, [[1, 2]], 10**400 // 10**380, list(range(100_000))])
def test_end_token_ids_that_are_no_ids_are_one_sentence(hostile, eos):
    files = word_level_llama(hostile["tiny_llama"], "w")
    files["generation_config.json"] = json.dumps({"eos_token_id": eos, "bos_token_id": 1})
    repo = f"evil/eos-{abs(hash(json.dumps(eos))) % 10**8}"
    hostile["hub"].add_repo(repo, files)
    problem = sentence(ask(hostile, model=repo))
    assert "end-of-text token ids are not ids of its vocabulary" in problem, problem


def test_mcp_tools_with_odd_types_answer_sentences(hostile):
    session_cls, connect = mcp_client()
    url = hostile["app"]["url"] + "gradio_api/mcp/"
    odd = [{"prompt": ["a", {"b": 1}], "model": "good/tiny", "backends": 42, "max_new_tokens": "lots"},
           {"prompt": "Hello", "model": {"evil": "/etc/passwd"}, "backends": ["pytorch"], "max_new_tokens": 2},
           {"prompt": "Hello", "model": "good/tiny", "backends": ["pytorch"], "max_new_tokens": 10**30}]

    async def calls():
        async with connect(url) as (read, write, _), session_cls(read, write) as session:
            await session.initialize()
            return [await session.call_tool("compare_text", arguments) for arguments in odd]

    for answer in asyncio.run(calls()):
        text = " ".join(getattr(c, "text", "") for c in answer.content)
        hostile["outputs"].append(text)
        assert text and "Traceback" not in text and 'File "' not in text, text


def test_one_client_cannot_stop_anothers_run(hostile):
    other = Client(hostile["app"]["url"], verbose=False)
    job = hostile["client"].submit(**{**TEXT, "model": "good/tiny", "max_new_tokens": 48})
    time.sleep(1.0)
    assert other.predict(api_name="/stop") == "You have no run in progress."
    result = job.result(timeout=120)
    hostile["outputs"].append(json.dumps(result))
    assert result["error"] is None and result["results"][0]["error"] is None, result
    assert len(result["results"][0]["token_ids"]) == 48


def test_no_canary_anywhere_and_the_cache_under_its_cap(hostile):
    """Every answer, the logs, the cache and every process's environment, after whatever ran before in this module
    and after an attack and an ordinary run of its own (so it holds when run alone, or first)."""
    app, hub = hostile["app"], hostile["hub"]
    hub.add_repo("evil/audit-environ", repo_files(hostile["tiny_llama"], tokenizer_config__json=tokenizer_config(
        hostile["tiny_llama"], tokenizer_class="ProphetNetTokenizer", vocab_file="/proc/self/environ")))
    assert "may only name files of the same repository" in sentence(ask(hostile, model="evil/audit-environ"))
    served = ask(hostile, model="good/tiny")  # the workers this looks into are running
    assert served["error"] is None and served["results"][0]["error"] is None, served
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
    # After every attack, an ordinary visitor is still served, and the app never held more than its cap.
    result = ask(hostile, model="good/tiny")
    assert result["error"] is None and result["results"][0]["error"] is None, result
    assert hostile["memory"].app_peak < APP_MEMORY_CAP, hostile["memory"].peaks
