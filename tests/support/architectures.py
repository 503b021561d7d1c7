"""Tiny random-weight models of today's architectures, built locally from transformers' own config classes (no network):
2 layers, hidden size 64, a few heads, the 400-token vocabulary of `tests.support.tiny_models.build_tokenizer`,
seeded. Each folder holds what a Hub repository would: config.json, fp32 model.safetensors, the tokenizer and a
generation_config.json. Each architecture keeps its own quirks (per-layer-type head sizes, sliding windows shorter
than the test prompt so the window really cuts, no-RoPE layers, linear-attention or convolution layers, a handful of
experts), so an exporter meets what the real checkpoints have, only smaller.

Used by tests/test_architectures.py (each architecture against each ONNX exporter) and
scripts/exporter_coverage.py (the same matrix, written to docs/exporters.md): the builders, and the helpers that
export and measure one cell of the matrix. No tests here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 64, 128, 2, 4, 2, 16
# Shorter than the tests' prompt (about 12 tokens) plus answer, so a sliding layer's window really drops tokens.
WINDOW = 8
# Large random weights (the tiny Llama's 0.2): logits spread over several units, so a wrong export shows; the
# default 0.02 gives nearly uniform distributions where any error hides.
INIT_RANGE = 0.2
# Settings every architecture gets where its config class takes them (an explicit `settings` entry wins).
COMMON = {"hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS,
          "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
          "initializer_range": INIT_RANGE, "tie_word_embeddings": False}


@dataclass(frozen=True)
class Architecture:
    """One architecture: its test id, its name as people say it, the transformers ``model_type`` whose config class
    builds its language model, the config settings beyond `COMMON`, and the quirk the tiny model keeps.

    With ``wrapper`` (a multimodal ``model_type``) the language model is saved inside that model, with a one-layer
    vision tower (``vision``: its config's model_type and settings; ``wrapper_settings``: the wrapper's own, e.g.
    its image token ids), the way the family's checkpoints are published on the Hub (Gemma 4, Qwen3.5 and
    Mistral 3 ship as ``...ForConditionalGeneration``): the class an exporter is handed by a real repository."""

    key: str
    title: str
    model_type: str
    settings: dict[str, Any] = field(default_factory=dict)
    quirk: str = ""
    wrapper: str | None = None
    vision: dict[str, Any] = field(default_factory=dict)
    wrapper_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def model_class(self) -> str:
        """The transformers class the folder's config names (its ``architectures`` entry): the causal LM
        AutoModelForCausalLM builds, or the wrapper's image-text-to-text class."""
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        if self.wrapper:
            return MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[self.wrapper]
        return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[self.model_type]


ARCHITECTURES: tuple[Architecture, ...] = (
    # --- the six of the issue -------------------------------------------------------------------------------
    Architecture(
        "gemma4_text", "Gemma 4 (text)", "gemma4_text",
        settings={"layer_types": ["sliding_attention", "full_attention"], "sliding_window": WINDOW,
                  "global_head_dim": 2 * HEAD_DIM, "hidden_size_per_layer_input": 16,
                  "final_logit_softcapping": 30.0},
        quirk="sliding and global layers with different head sizes (16 and 32), per-layer embeddings, "
              "proportional RoPE on a quarter of the global heads, logit soft-capping"),
    Architecture(
        "qwen3_5_text", "Qwen3.5 (text)", "qwen3_5_text",
        settings={"layer_types": ["linear_attention", "full_attention"], "linear_key_head_dim": 16,
                  "linear_value_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
                  "linear_conv_kernel_dim": 4},
        quirk="a gated DeltaNet linear-attention layer (convolution and recurrent state) beside a gated full "
              "attention layer with partial RoPE"),
    Architecture(
        "ministral3", "Ministral 3 (Mistral 3's text model)", "ministral3",
        quirk="YaRN RoPE with Llama 4 position-dependent query scaling"),
    Architecture(
        "smollm3", "SmolLM3", "smollm3",
        settings={"no_rope_layer_interval": 2},
        quirk="every second layer without RoPE (NoPE)"),
    Architecture(
        "gpt_oss", "gpt-oss", "gpt_oss",
        settings={"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": WINDOW},
        quirk="mixture of 4 experts (top-2) with clamped SwiGLU, attention sinks, alternating sliding and full "
              "attention, YaRN RoPE"),
    Architecture(
        "lfm2", "LFM2", "lfm2",
        settings={"layer_types": ["conv", "full_attention"], "block_auto_adjust_ff_dim": False},
        quirk="a gated short-convolution layer (convolution state) beside an attention layer"),
    # --- more of today's ------------------------------------------------------------------------------------
    Architecture(
        "qwen3", "Qwen3", "qwen3",
        quirk="query/key RMSNorm"),
    Architecture(
        "qwen3_moe", "Qwen3 MoE", "qwen3_moe",
        settings={"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
        quirk="mixture of 4 experts (top-2) in every layer, query/key RMSNorm"),
    Architecture(
        "gemma3_text", "Gemma 3 (text)", "gemma3_text",
        settings={"layer_types": ["sliding_attention", "full_attention"], "sliding_window": WINDOW,
                  "query_pre_attn_scalar": HEAD_DIM},
        quirk="sliding and global layers with their own RoPE bases, query/key RMSNorm, scaled embeddings"),
    Architecture(
        "olmo3", "OLMo 3", "olmo3",
        settings={"layer_types": ["sliding_attention", "full_attention"], "sliding_window": WINDOW},
        quirk="sliding and full attention, post-norm blocks, query/key RMSNorm over all heads"),
    Architecture(
        "exaone4", "EXAONE 4.0", "exaone4",
        settings={"layer_types": ["sliding_attention", "full_attention"], "sliding_window": WINDOW},
        quirk="sliding layers with RoPE and a global layer without, post-norm blocks"),
    Architecture(
        "glm4", "GLM-4", "glm4",
        quirk="partial RoPE (half the head, interleaved), four norms per block"),
    Architecture(
        "granitemoehybrid", "Granite 4.0 (hybrid)", "granitemoehybrid",
        settings={"layer_types": ["mamba", "attention"], "mamba_n_heads": 8, "mamba_d_head": 16,
                  "mamba_d_state": 16, "mamba_n_groups": 1, "mamba_expand": 2, "mamba_chunk_size": 16,
                  "num_local_experts": 4, "num_experts_per_tok": 2, "shared_intermediate_size": INTERMEDIATE,
                  "position_embedding_type": "rope"},
        quirk="a Mamba-2 layer (convolution and SSM state) beside an attention layer, 4 experts with a shared one"),
)
# The same families as their checkpoints are published: the language model inside the multimodal class (tiny
# vision towers; the image token ids point at <unk>, which the prompt never holds). The GenAI model builder takes
# these families only in this form.
_NO_IMAGE = 0  # <unk>
WRAPPED: tuple[Architecture, ...] = (
    Architecture(
        "gemma4", "Gemma 4 (as published: multimodal)", "gemma4_text", wrapper="gemma4",
        settings=ARCHITECTURES[0].settings,
        vision={"model_type": "gemma4_vision", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16, "patch_size": 4,
                "pooling_kernel_size": 2, "position_embedding_size": 64},
        wrapper_settings={"audio_config": None, "image_token_id": _NO_IMAGE, "boi_token_id": _NO_IMAGE,
                          "eoi_token_id": _NO_IMAGE, "video_token_id": _NO_IMAGE},
        quirk="Gemma 4 (text) inside Gemma4ForConditionalGeneration with a vision tower"),
    Architecture(
        "qwen3_5", "Qwen3.5 (as published: multimodal)", "qwen3_5_text", wrapper="qwen3_5",
        settings=ARCHITECTURES[1].settings,
        vision={"model_type": "qwen3_5_vision", "depth": 1, "hidden_size": 32, "intermediate_size": 64,
                "num_heads": 2, "patch_size": 4, "out_hidden_size": HIDDEN, "num_position_embeddings": 64},
        wrapper_settings={"image_token_id": _NO_IMAGE, "video_token_id": _NO_IMAGE,
                          "vision_start_token_id": _NO_IMAGE, "vision_end_token_id": _NO_IMAGE},
        quirk="Qwen3.5 (text) inside Qwen3_5ForConditionalGeneration with a vision tower"),
    Architecture(
        "mistral3", "Mistral 3 (as published: multimodal)", "ministral3", wrapper="mistral3",
        vision={"model_type": "pixtral", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 2, "image_size": 32, "patch_size": 4},
        wrapper_settings={"image_token_index": _NO_IMAGE},
        quirk="Ministral 3 inside Mistral3ForConditionalGeneration with a Pixtral vision tower"),
)
ALL = ARCHITECTURES + WRAPPED
BY_KEY = {a.key: a for a in ALL}


def _config(arch: Architecture, tokenizer: Any) -> Any:
    """The tiny config: `COMMON` where the class takes it, the architecture's settings, the tokenizer's ids."""
    from transformers import CONFIG_MAPPING

    klass = CONFIG_MAPPING[arch.model_type]
    accepted = set(inspect.signature(klass.__init__).parameters)
    kwargs = {k: v for k, v in COMMON.items() if k in accepted}
    kwargs |= {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    if "vocab_size_per_layer_input" in accepted:
        kwargs["vocab_size_per_layer_input"] = len(tokenizer)
    kwargs |= arch.settings
    config = klass(**kwargs)
    if arch.wrapper:
        vision_settings = dict(arch.vision)
        vision = CONFIG_MAPPING[vision_settings.pop("model_type")](**vision_settings)
        config = CONFIG_MAPPING[arch.wrapper](text_config=config.to_dict(), vision_config=vision.to_dict(),
                                              **arch.wrapper_settings)
    config.architectures = [arch.model_class]
    return config


def build_architecture(arch: Architecture | str, path: str | Path, seed: int = 0) -> Path:
    """A random ``arch`` causal LM (fp32 safetensors), its tokenizer and its generation config, saved to ``path``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, GenerationConfig

    from tests.support.tiny_models import build_tokenizer

    arch = BY_KEY[arch] if isinstance(arch, str) else arch
    path = Path(path)
    tokenizer = build_tokenizer(path)
    config = _config(arch, tokenizer)
    torch.manual_seed(seed)
    auto = AutoModelForImageTextToText if arch.wrapper else AutoModelForCausalLM
    model = auto.from_config(config, dtype=torch.float32).eval()
    if type(model).__name__ != arch.model_class:
        raise TypeError(f"{arch.key}: built {type(model).__name__}, expected {arch.model_class}")
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, do_sample=False)
    model.save_pretrained(path, safe_serialization=True)
    return path


def build_all(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Every architecture of `ALL` under ``root/<key>``."""
    return {a.key: build_architecture(a, Path(root) / a.key, seed) for a in ALL}


# --- export and measure (shared by the tests and scripts/exporter_coverage.py) -------------------------------
EXPORTERS = ("dynamo", "genai-builder")
# Exports that are written but that the arena cannot use yet, and why (diagnosed by hand; tests/test_architectures.py
# expects each to fail, strictly: once one passes, its entry goes and docs/exporters.md is regenerated).
KNOWN_FAILURES = {
    ("genai-builder", "qwen3_5"): "the graph's linear-attention states (past.0.conv, past.0.recurrent) are fed, "
                                  "but it does not run: it declares position_ids (3, batch, sequence) and hands "
                                  "them to RotaryEmbedding, which takes at most two dimensions",
    ("genai-builder", "mistral3"): "the builder computes YaRN's frequencies without transformers' truncate (True "
                                   "for Ministral 3: the ramp's ends rounded to whole dimensions), so two of its "
                                   "eight rotary frequencies differ from the model's by 15%",
}
# Why the other cells that do not pass are refused (diagnosed by hand; the doc prints them beside the sentences).
NOTES = {
    ("dynamo", "qwen3_5_text"): "by design: a linear-attention layer's recurrent state has no place in the "
                                "past_key_values layout",
    ("dynamo", "qwen3_5"): "by design, as for Qwen3.5 (text)",
    ("dynamo", "lfm2"): "by design: a convolution state has no place in the past_key_values layout",
    ("dynamo", "granitemoehybrid"): "by design: a Mamba layer's states have no place in the past_key_values layout",
    ("genai-builder", "gemma4_text"): "the builder takes Gemma 4 only as Gemma4ForConditionalGeneration (its MoE "
                                      "builder) or Gemma4UnifiedForConditionalGeneration",
    ("genai-builder", "qwen3_5_text"): "the builder takes Qwen3.5 only as Qwen3_5ForConditionalGeneration",
    ("genai-builder", "ministral3"): "the builder takes Mistral 3 only as Mistral3ForConditionalGeneration",
    ("genai-builder", "smollm3"): "a no-RoPE layer (no_rope_layers 0) goes down the builder's separate-RoPE path, "
                                  "which needs a position_ids input its CPU graph lacks; SmolLM3-3B has one every "
                                  "fourth layer",
    ("genai-builder", "gemma3_text"): "the builder reads rope_parameters['rope_type']; transformers 5 nests Gemma "
                                      "3's rope parameters per layer type",
    ("genai-builder", "gemma4"): "the builder reads config.head_dim, which transformers 5.25 refuses for Gemma 4 "
                                 "(a per-layer attribute: 16 in sliding layers, 32 in global ones here)",
    ("genai-builder", "granitemoehybrid"): "the builder's Granite 4.0 path takes attention layers only (as in "
                                           "granite-4.0-micro); a Mamba layer has no q_proj",
    ("genai-builder", "qwen3_moe"): "not among the builder's architectures",
    ("genai-builder", "olmo3"): "not among the builder's architectures",
    ("genai-builder", "exaone4"): "not among the builder's architectures",
    ("genai-builder", "glm4"): "not among the builder's architectures",
}
PROMPT = "My name is Arthur and I live in London"  # 12 tokens of the tiny tokenizer, longer than `WINDOW`
ANSWER_TOKENS = 8  # the reference's greedy answer the cached decode path is teacher-forced along


@dataclass
class Exported:
    """One exporter's try on one architecture: its folder (None when refused), the refusal sentence, seconds."""

    exporter: str
    folder: Path | None
    refused: str | None
    seconds: float


def export(model_dir: str | Path, exporter: str, out: str | Path) -> Exported:
    """Run ``exporter`` (the ONNX Runtime backend's option: "dynamo" or "genai-builder") on a model folder into
    ``out``, in this process. `ExportRefused` is a result (its sentence kept); anything else propagates."""
    import time

    from backends.conversion.onnx_export import ExportRefused, build_with_genai_builder, export_text_model

    start = time.perf_counter()
    try:
        if exporter == "dynamo":
            export_text_model(str(model_dir), str(out), "fp32", "cpu")
        elif exporter == "genai-builder":
            build_with_genai_builder(str(model_dir), str(out))
        else:
            raise ValueError(f"unknown exporter {exporter!r}")
    except ExportRefused as exc:
        return Exported(exporter, None, str(exc), time.perf_counter() - start)
    return Exported(exporter, Path(out), None, time.perf_counter() - start)


def reference(model_dir: str | Path) -> dict[str, Any]:
    """The PyTorch fp32 reference on `PROMPT` (`backends.hf.load_causal_lm`, as the arena's PyTorch backend loads
    it; a multimodal class without a causal-LM entry, Mistral 3's, through AutoModelForImageTextToText): the
    prompt's ids, the prompt's logits (positions x vocab), its greedy answer of `ANSWER_TOKENS` tokens, and its full
    pass's logits over prompt + answer at the rows that predict the answer (answer x vocab), numpy float32."""
    import torch
    from transformers import AutoTokenizer

    from backends.hf import load_causal_lm

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = list(tokenizer(PROMPT)["input_ids"])
    model = load_causal_lm(str(model_dir), dtype=torch.float32).eval()
    with torch.inference_mode():
        generated = model.generate(torch.tensor([prompt]), max_new_tokens=ANSWER_TOKENS, min_new_tokens=ANSWER_TOKENS,
                                   do_sample=False)[0, len(prompt):].tolist()
        full = model(input_ids=torch.tensor([prompt + generated])).logits[0].float().numpy()
    return {"prompt": prompt, "prompt_logits": full[:len(prompt)], "answer": generated,
            "answer_logits": full[len(prompt) - 1:len(prompt) + len(generated) - 1]}


def measure(export_dir: str | Path, ref: dict[str, Any]) -> dict[str, Any]:
    """An export against the reference, with the arena's own loops (`backends.loops`) and judge's figures
    (`arena.judging.verdicts`): the prompt's logits with an empty cache (``logits``: max abs and relative error
    over every prompt position; ``first_step``: the last position's, which the arena's verdict reads) and the
    cached decode path teacher-forced along the reference's answer (``decode``: per-step KL, mean KL, top-1)."""
    import json

    from arena.judging.verdicts import log_softmax, logits_error, per_position, summarize_positions
    from backends.loops import OrtRunner, kv_forward_logits, kv_step_logits

    export_dir = Path(export_dir)
    runner = OrtRunner(str(export_dir / "model.onnx"))
    config = json.loads((export_dir / "config.json").read_text())
    shapes = runner.past_shapes()
    prompt_logits = kv_forward_logits(runner, runner.input_names, config, ref["prompt"], kv_shapes=shapes)
    steps = kv_step_logits(runner, runner.input_names, config, ref["prompt"], ref["answer"], kv_shapes=shapes)
    decode = summarize_positions(per_position(log_softmax(ref["answer_logits"]), log_softmax(steps), ref["answer"]))
    return {"logits": logits_error(prompt_logits, ref["prompt_logits"]),
            "first_step": logits_error(prompt_logits[-1], ref["prompt_logits"][-1]),
            "decode": {"kl": decode["kl"], "kl_max": decode["kl_max"], "top1": decode["top1"],
                       "kl_steps": decode["kl_positions"], "steps": decode["positions"]}}


def fp32_problems(figures: dict[str, Any]) -> list[str]:
    """What in `measure`'s figures is outside the bounds the arena's verdicts hold an fp32 candidate to against the
    fp32 reference (`arena.judging.verdicts`): the first-step logits tolerance (absolute or relative,
    ``TEXT_TOLERANCES``), applied here to every prompt position too; the same-precision floor of teacher-forced
    quality (``SAME_PRECISION_FLOOR``: top-1 and mean KL) and the per-step KL of the decode path (``POSITION_KL``).
    Empty: the export computes the reference's function."""
    from arena.judging.verdicts import POSITION_KL, SAME_PRECISION_FLOOR, TEXT_TOLERANCES

    abs_tol, rel_tol = TEXT_TOLERANCES["fp32"]
    min_top1, max_kl = SAME_PRECISION_FLOOR["fp32"]
    problems = []
    for name, what in (("first_step", "first-step logits"), ("logits", "the prompt's logits")):
        error = figures[name]
        if not (error["max_abs"] <= abs_tol or error["max_rel"] <= rel_tol):
            problems.append(f"{what} off by {error['max_abs']:.3g} (relative {error['max_rel']:.3g}): over the fp32 "
                            f"tolerance {abs_tol:g} (relative {rel_tol:g})")
    decode = figures["decode"]
    if decode["kl"] > max_kl or decode["top1"] < min_top1:
        problems.append(f"decode path: mean KL {decode['kl']:.3g}, top-1 {decode['top1']:.1%} (the fp32 floor: KL "
                        f"<= {max_kl:g}, top-1 >= {min_top1:.0%})")
    if decode["kl_max"] > POSITION_KL["fp32"]:
        problems.append(f"decode path: a step at KL {decode['kl_max']:.3g} (the fp32 per-step floor "
                        f"{POSITION_KL['fp32']:g})")
    return problems


@dataclass
class Cell:
    """One (architecture, exporter) of the matrix: "pass" (the export computes the reference's function), "refused"
    (`ExportRefused`: ``refused`` holds its sentence) or "fail" (an export the arena's loop cannot run, ``error``, or
    one outside the fp32 bounds, ``problems``); the figures of `measure` where measured."""

    architecture: str
    exporter: str
    outcome: str
    seconds: float
    refused: str | None = None
    error: str | None = None
    figures: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def prepare(key: str, root: str | Path) -> dict[str, Exported]:
    """Build architecture ``key`` under ``root/<key>/model`` and export it with every exporter into
    ``root/<key>/<exporter>`` (what `prepare_all` runs in worker processes)."""
    import contextlib
    import sys

    import torch

    torch.set_num_threads(1)  # two of these share the machine's cores
    root = Path(root) / key
    with contextlib.redirect_stdout(sys.stderr):  # the builder narrates; the caller's stdout is its own
        model = build_architecture(key, root / "model")
        return {exporter: export(model, exporter, root / exporter) for exporter in EXPORTERS}


def prepare_all(keys: list[str], root: str | Path, workers: int = 2) -> dict[str, Any]:
    """`prepare` for each architecture in ``workers`` spawned processes (exporting is the matrix's cost, mostly
    single-threaded Python): {key: its Future}. The caller shuts the returned ``"pool"`` down."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    return {"pool": pool, **{key: pool.submit(prepare, key, str(root)) for key in keys}}


def judge_cell(key: str, done: Exported, ref: dict[str, Any]) -> Cell:
    """Measure an export (`export`'s result) against ``ref`` (`reference`): the matrix's cell. An error while
    running the export with the arena's loop is the cell's ``error`` (a finding, not a crash)."""
    if done.refused is not None:
        return Cell(key, done.exporter, "refused", done.seconds, refused=done.refused)
    try:
        figures = measure(done.folder, ref)
    except Exception as exc:  # noqa: BLE001 - the runtime's refusal of the graph is the finding
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        return Cell(key, done.exporter, "fail", done.seconds, error=f"{type(exc).__name__}: {first[:400]}")
    problems = fp32_problems(figures)
    return Cell(key, done.exporter, "fail" if problems else "pass", done.seconds, figures=figures,
                problems=problems)


def versions() -> dict[str, str | None]:
    """The packages whose versions decide the matrix."""
    from backends.installs import dist_versions

    return dist_versions("transformers", "torch", "onnxruntime", "onnxscript", "onnx", "onnxruntime-genai")
