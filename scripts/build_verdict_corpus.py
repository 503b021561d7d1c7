"""Build the labelled corpus that holds the verdict detectors honest (tests/corpus/).

    .venv/bin/python scripts/build_verdict_corpus.py [--out tests/corpus] [--only text|image]

Every sample is a real output of the embedded models, made by a correct or a deliberately broken backend:

Text (SmolLM2-135M-Instruct, greedy from the chat-rendered prompt; reference: PyTorch fp32):
- good: PyTorch fp32 (the reference's own output), bf16, and sampled answers (temperature 0.7): fluent text;
- broken: weights corrupted with noise (two strengths), an fp16 overflow (logits become Inf/NaN, greedy picks
  token 0), argmax over one forward pass of the prompt instead of generation, and hand-written strings
  ("ЉЉЉЉЉЉ Hello Hinweis Hinweis ...", "... a<unk><unk><unk><unk>").
Images (the embedded Scenes 64px model; reference: PyTorch fp32 with the shipped scheduler):
- good: bf16 and a batched fp32 run (numerically different, correct);
- broken: epsilon instead of v-prediction (a wrong scheduler config), latents decoded without the VAE scaling
  factor, a VAE overflow in fp16 (NaN → black), noise-corrupted UNet weights, noise-corrupted VAE decoder.
Seeded; the JSON holds token ids and texts, the images are PNG files next to images.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXT_PROMPTS = (
    "Why should one run machine learning models on-premises?",
    "My name is Arthur and I live in",
    "Write a haiku about GPUs.",
    "Explain what ONNX is in two sentences.",
    "Give me three tips for a good night's sleep.",
    "What is the capital of France, and why is it famous?",
    "Describe a cat to someone who has never seen one.",
    "How do airplanes stay in the air?",
    "Write a short note thanking a colleague for their help.",
    "What are the benefits of drinking water?",
    "Summarize the plot of Romeo and Juliet.",
    "Suggest a name for a coffee shop and explain it.",
)
IMAGE_PROMPTS = (
    "a red circle on a blue background",
    "a small yellow square in the top left on a black background",
    "a large white triangle at the bottom on a purple background",
    "a green circle on the right on a white background",
    "a blue square on a orange background",
    "a small purple triangle in the bottom right on a yellow background",
    "a large orange circle in the center on a green background",
    "a black square at the top on a white background",
    "a yellow triangle on the left on a red background",
    "a white circle in the top right on a black background",
)
NEW_TOKENS = 48
# Labels are by source, except where a person read the output and disagreed: these sampled answers come from a
# correct backend but degenerate into a loop, so they are labelled broken (all 12 sampled answers were read).
READ_AS_BROKEN = {("sampled-t0.7", "Explain what ONNX is in two sentences.")}


def materialized_smollm2() -> Path:
    from arena.preparing.prepare import TextPreparer
    from arena.types import BackendSpec, TextRunRequest

    cache = Path.home() / ".cache" / "backend-arena"
    request = TextRunRequest(model="smollm2-135m-instruct", prompt="hi", backends=(BackendSpec("pytorch"),))
    return Path(TextPreparer(str(cache)).prepare_text(request, lambda *a, **k: None).model_dir)


def build_text(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = materialized_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    samples = []

    def chat_ids(prompt: str) -> list[int]:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer(text)["input_ids"]

    def generate(model, ids: list[int], **kwargs) -> list[int]:
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, pad_token_id=tokenizer.eos_token_id,
                                 eos_token_id=tokenizer.eos_token_id, **kwargs)
        return out[0, len(ids):].tolist()

    def add(label, source, precision, prompt, ids, new_ids, reference_ids, text=None):
        if (source, prompt) in READ_AS_BROKEN:
            label, source = "broken", source + " (read as degenerate)"
        samples.append({"id": f"{source}-{len(samples)}", "label": label, "source": source, "precision": precision,
                        "prompt": prompt, "prompt_ids": ids, "token_ids": new_ids, "reference_ids": reference_ids,
                        "text": tokenizer.decode(new_ids, skip_special_tokens=True) if text is None else text})

    reference_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    references = {}
    for prompt in TEXT_PROMPTS:
        ids = chat_ids(prompt)
        references[prompt] = ref = generate(reference_model, ids, do_sample=False)
        add("good", "pytorch-fp32", "fp32", prompt, ids, ref, ref)
        torch.manual_seed(len(samples))
        add("good", "sampled-t0.7", "fp32", prompt, ids,
            generate(reference_model, ids, do_sample=True, temperature=0.7, top_p=0.9), ref)
        with torch.inference_mode():  # argmax over one forward pass of the prompt instead of generation
            logits = reference_model(torch.tensor([ids])).logits[0]
        add("broken", "one-pass-argmax", "fp32", prompt, ids, logits.argmax(-1).tolist()[-NEW_TOKENS:], ref)
        print(f"text: {prompt!r} done", flush=True)

    bf16 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    for prompt in TEXT_PROMPTS:
        ids = chat_ids(prompt)
        add("good", "pytorch-bf16", "bf16", prompt, ids, generate(bf16, ids, do_sample=False), references[prompt])
    del bf16

    for strength in (0.5, 2.0):  # noise relative to each weight matrix's own spread
        corrupted = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        generator = torch.Generator().manual_seed(int(strength * 10))
        with torch.no_grad():
            for name, weight in corrupted.named_parameters():
                if weight.dim() == 2 and "embed" not in name:
                    weight.add_(torch.randn(weight.shape, generator=generator) * weight.std() * strength)
        for prompt in TEXT_PROMPTS:
            ids = chat_ids(prompt)
            add("broken", f"corrupted-weights-{strength}", "fp32", prompt, ids,
                generate(corrupted, ids, do_sample=False), references[prompt])
        del corrupted

    overflow = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16).eval()
    with torch.no_grad():  # an fp16 overflow: the final norm pushes hidden states past 65504
        overflow.model.norm.weight.mul_(3e4)
    for prompt in TEXT_PROMPTS[:6]:
        ids = chat_ids(prompt)
        add("broken", "fp16-overflow", "fp16", prompt, ids, generate(overflow, ids, do_sample=False),
            references[prompt])
    del overflow

    written = [  # hand-written broken strings (the examples and their kind)
        "ЉЉЉЉЉЉ Hello Hinweis Hinweis Hinweis Hinweis Hinweis Hinweis Hinweis Hinweis",
        "My name is Arthur and I live in a<unk><unk><unk><unk>",
        "the the the the the the the the the the the the the the the the",
        "Running models on-premises \ufffd\ufffd\ufffd gives \ufffd control",
        "数据 données данные डेटा データ 데이터 datos dati Daten",
        "",
    ]
    for text in written:
        prompt = TEXT_PROMPTS[0]
        add("broken", "hand-written", "fp32", prompt, chat_ids(prompt),
            tokenizer(text, add_special_tokens=False)["input_ids"], references[prompt], text=text)
    (out / "text.json").write_text(json.dumps({"model": "smollm2-135m-instruct", "new_tokens": NEW_TOKENS,
                                               "samples": samples}, ensure_ascii=False, indent=1))
    print(f"text: {len(samples)} samples", flush=True)


def build_images(out: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    model_dir = ROOT / "assets" / "image-model"
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    samples = []

    def load(dtype=torch.float32):
        pipe = StableDiffusionPipeline.from_pretrained(model_dir, dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def draw(pipe, prompt, seed, decode=None, **kwargs) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        latents = pipe(prompt, num_inference_steps=20, guidance_scale=4.0, generator=generator,
                       output_type="latent", **kwargs).images
        if decode is None:
            decode = lambda z: pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample  # noqa: E731
        with torch.no_grad():
            pixels = decode(latents.to(pipe.vae.dtype)).float()
        pixels = torch.nan_to_num(pixels, nan=-1.0)  # what a pipeline's postprocess shows for NaN: black
        array = ((pixels[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
        return array

    def add(label, source, precision, prompt, seed, image):
        name = f"{len(samples):03d}-{source}.png"
        Image.fromarray(image).save(folder / name)
        samples.append({"file": name, "label": label, "source": source, "precision": precision,
                        "prompt": prompt, "seed": seed, "reference": f"{IMAGE_PROMPTS.index(prompt):03d}-ref.png"})

    pipe = load()
    for i, prompt in enumerate(IMAGE_PROMPTS):
        Image.fromarray(draw(pipe, prompt, i)).save(folder / f"{i:03d}-ref.png")
    for i, prompt in enumerate(IMAGE_PROMPTS):
        batched = pipe([prompt, IMAGE_PROMPTS[(i + 1) % len(IMAGE_PROMPTS)]], num_inference_steps=20,
                       guidance_scale=4.0, generator=[torch.Generator().manual_seed(i),
                                                      torch.Generator().manual_seed(99)], output_type="np").images
        add("good", "batched-fp32", "fp32", prompt, i, (batched[0] * 255).round().astype(np.uint8))
        add("broken", "missing-latent-scaling", "fp32", prompt, i,
            draw(pipe, prompt, i, decode=lambda z: pipe.vae.decode(z).sample))
        with torch.no_grad():
            overflow = draw(pipe, prompt, i, decode=lambda z: pipe.vae.half().decode(
                z.half() / pipe.vae.config.scaling_factor * 6e4).sample)
        pipe.vae.float()
        add("broken", "fp16-vae-overflow", "fp16", prompt, i, overflow)
    epsilon = load()
    epsilon.scheduler = type(epsilon.scheduler).from_config(epsilon.scheduler.config, prediction_type="epsilon")
    for i, prompt in enumerate(IMAGE_PROMPTS):
        add("broken", "epsilon-instead-of-v", "fp32", prompt, i, draw(epsilon, prompt, i))
    bf16 = load(torch.bfloat16)
    for i, prompt in enumerate(IMAGE_PROMPTS):
        add("good", "pytorch-bf16", "bf16", prompt, i, draw(bf16, prompt, i))
    for part, strength in (("unet", 1.0), ("vae", 1.0)):
        corrupted = load()
        module = corrupted.unet if part == "unet" else corrupted.vae.decoder
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for weight in module.parameters():
                if weight.dim() >= 2:
                    weight.add_(torch.randn(weight.shape, generator=generator) * weight.std() * strength)
        for i, prompt in enumerate(IMAGE_PROMPTS):
            add("broken", f"corrupted-{part}", "fp32", prompt, i, draw(corrupted, prompt, i))
    (out / "images.json").write_text(json.dumps({"model": "scenes-64", "samples": samples}, indent=1))
    print(f"images: {len(samples)} samples", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "corpus")
    parser.add_argument("--only", choices=("text", "image"), default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.manual_seed(0)
    if args.only in (None, "text"):
        build_text(args.out)
    if args.only in (None, "image"):
        build_images(args.out)


if __name__ == "__main__":
    main()
