"""Tiny models built locally from seeded configs (no network): a byte-level BPE tokenizer and a random Llama."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "My name is Arthur and I live in London with my cat.",
    "Why should one run machine learning models on-premises? Privacy, cost and latency.",
    "ONNX Runtime and PyTorch should give the same answer for the same input.",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "TensorRT builds engines; exports turn models into graphs; graphs run on providers.",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def build_tokenizer(path: str | Path):
    """A 400-token byte-level BPE tokenizer trained on a few sentences, saved like any HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


def build_tiny_llama(path: str | Path, seed: int = 0, max_positions: int = 128, layers: int = 2) -> Path:
    """A random LlamaForCausalLM (grouped-query attention, 2 ``layers`` by default) with its tokenizer, saved to
    ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = build_tokenizer(path)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, initializer_range=0.2, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_sd(path: str | Path, seed: int = 0) -> Path:
    """A random Stable Diffusion pipeline (32x32 pixels, 8x8 latents) saved as a diffusers folder."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from arena.preparing.scenes import build_word_tokenizer, scene_words

    path = Path(path)
    tokenizer = build_word_tokenizer(scene_words(), path.parent / (path.name + "-tokenizer-work"))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=16)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=32, layers_per_block=1,
                        block_out_channels=(16, 32, 32), norm_num_groups=16,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       steps_offset=1)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def export_like_diffusers_script(pipeline_dir: str | Path, out: str | Path, opset: int = 17) -> Path:
    """An ONNX export in the layout of diffusers' `scripts/convert_stable_diffusion_checkpoint_to_onnx.py`:
    int32 `input_ids`, a UNet taking one timestep per batch row, `vae_decoder` = `vae.decode`, tokenizer and
    scheduler copied, and a model_index.json naming OnnxStableDiffusionPipeline / OnnxRuntimeModel components.
    Written here (the script is not part of the diffusers package) with the same TorchScript exporter it uses."""
    import json
    import shutil

    import torch
    from diffusers import StableDiffusionPipeline

    out = Path(out)
    pipe = StableDiffusionPipeline.from_pretrained(pipeline_dir, safety_checker=None, requires_safety_checker=False)
    tokens, hidden = pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size
    latent = pipe.unet.config.sample_size
    channels = pipe.unet.config.in_channels

    def export(module, args, path, inputs, outputs, axes):
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)

    with torch.no_grad():
        ids = torch.zeros((1, tokens), dtype=torch.int32)
        export(pipe.text_encoder, (ids,), out / "text_encoder" / "model.onnx", ["input_ids"],
               ["last_hidden_state", "pooler_output"], {"input_ids": {0: "batch", 1: "sequence"}})
        unet_args = (torch.randn(2, channels, latent, latent), torch.randn(2), torch.randn(2, tokens, hidden), False)
        export(pipe.unet, unet_args, out / "unet" / "model.onnx",
               ["sample", "timestep", "encoder_hidden_states", "return_dict"], ["out_sample"],
               {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
                "encoder_hidden_states": {0: "batch", 1: "sequence"}})
        vae = pipe.vae
        vae.forward = lambda latent_sample, return_dict: vae.decode(latent_sample, return_dict)[0]
        export(vae, (torch.randn(1, vae.config.latent_channels, latent, latent), False),
               out / "vae_decoder" / "model.onnx", ["latent_sample", "return_dict"], ["sample"],
               {"latent_sample": {0: "batch", 2: "height", 3: "width"}})
    pipe.tokenizer.save_pretrained(out / "tokenizer")
    pipe.scheduler.save_pretrained(out / "scheduler")
    shutil.rmtree(out / "tokenizer-work", ignore_errors=True)
    index = {"_class_name": "OnnxStableDiffusionPipeline", "_diffusers_version": "0.39.0",
             "text_encoder": ["diffusers", "OnnxRuntimeModel"], "unet": ["diffusers", "OnnxRuntimeModel"],
             "vae_decoder": ["diffusers", "OnnxRuntimeModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", type(pipe.scheduler).__name__], "safety_checker": [None, None],
             "feature_extractor": [None, None], "requires_safety_checker": False}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out


def permute_rope(weights, n_head: int):
    """transformers' rotary layout (halves) to GGUF llama's (interleaved pairs), as llama.cpp's converter does."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_llama_gguf(model_dir: str | Path, path: str | Path) -> Path:
    """The tiny Llama of ``build_tiny_llama`` as an F32 GGUF (llama architecture, GPT-2 style byte-level BPE),
    written with the `gguf` package: the same weights and vocabulary llama.cpp can run."""
    import json

    import gguf
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoTokenizer

    model_dir, path = Path(model_dir), Path(path)
    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = getattr(config, "rope_parameters", None) or {}  # transformers 5 (4.x: config.rope_theta)
    writer.add_rope_freq_base(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    writer.add_rope_dimension_count(config.hidden_size // n_head)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = tokenizer.get_vocab()
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    special = set(tokenizer.all_special_ids)
    merges = json.loads((model_dir / "tokenizer.json").read_text())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(len(tokens))])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    weights = load_file(model_dir / "model.safetensors")
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for layer in range(config.num_hidden_layers):
        for hf, ours in names.items():
            tensor = weights[f"model.layers.{layer}.{hf}.weight"]
            if ours == "attn_q":
                tensor = permute_rope(tensor, n_head)
            elif ours == "attn_k":
                tensor = permute_rope(tensor, n_kv)
            writer.add_tensor(f"blk.{layer}.{ours}.weight", tensor)
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    writer.add_tensor("output.weight", weights["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
