"""Train the embedded text-to-image model: a tiny Stable Diffusion pipeline that draws described scenes.

    .venv/bin/python scripts/train_image_model.py --out assets/image-model [--vae-minutes 8] [--unet-minutes 40]

Everything is seeded and local: scenes come from `arena.scenes` (one shape, one color, a size, a position, a
background), the tokenizer is trained on the scene vocabulary, and the three networks are trained from scratch:
1. AutoencoderKL (64x64 RGB <-> 16x16x4 latents) on reconstruction, then its latent scaling factor is measured;
2. CLIPTextModel + UNet2DConditionModel (cross-attention) jointly on epsilon prediction, with the prompt dropped
   10% of the time for classifier-free guidance.
Held-out (color, shape, background) combinations never appear in training (`arena.scenes.is_held_out`).
The result is a standard diffusers folder (model_index.json, tokenizer/, text_encoder/, unet/, vae/, scheduler/).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arena.scenes import build_word_tokenizer, random_scene, render, scene_words  # noqa: E402

SIDE = 64
MAX_TOKENS = 16


def images_to_tensor(scenes) -> torch.Tensor:
    array = np.stack([render(s, SIDE) for s in scenes]).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def lr_at(step_fraction: float, peak: float, warmup: float = 0.03) -> float:
    if step_fraction < warmup:
        return peak * step_fraction / warmup
    progress = (step_fraction - warmup) / (1 - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train_vae(rng: random.Random, minutes: float, batch: int, log, peak_lr: float = 2e-3):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=SIDE, layers_per_block=1,
                        block_out_channels=(16, 32, 64), norm_num_groups=16,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=peak_lr, weight_decay=0.0)
    start, step, deadline = time.time(), 0, time.time() + minutes * 60
    while time.time() < deadline:
        for group in optimizer.param_groups:
            group["lr"] = lr_at((time.time() - start) / (minutes * 60), peak_lr)
        images = images_to_tensor([random_scene(rng) for _ in range(batch)])
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec_loss = F.mse_loss(recon, images)
        kl = posterior.kl().mean() / (4 * (SIDE // 4) ** 2)
        loss = rec_loss + 1e-4 * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 50 == 0:
            log(f"vae step {step} rec {rec_loss.item():.5f} kl {kl.item():.3f} ({time.time() - start:.0f} s)")
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(images_to_tensor([random_scene(rng) for _ in range(64)])).latent_dist.mean
                             for _ in range(8)])
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    log(f"vae done: {step} steps, latent std {latents.std():.4f}, scaling factor {scaling:.4f}")
    return vae, {"vae_steps": step, "vae_final_rec_mse": rec_loss.item(), "scaling_factor": scaling}


def train_unet(vae, tokenizer, rng: random.Random, minutes: float, batch: int, log, pool: int = 12000):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    text_encoder = CLIPTextModel(text_config)
    unet = UNet2DConditionModel(
        sample_size=SIDE // 4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, prediction_type="epsilon", clip_sample=False)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=5e-4, weight_decay=1e-2)
    vae.requires_grad_(False)
    scaling = vae.config.scaling_factor
    # Encode a pool of training scenes once: the UNet steps then cost only the text encoder and the UNet.
    pool_scenes = [random_scene(rng) for _ in range(pool)]
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, pool, 128):
            dist = vae.encode(images_to_tensor(pool_scenes[i:i + 128])).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    means, stds = torch.cat(means), torch.cat(stds)
    log(f"encoded a pool of {pool} scenes")
    start, step, deadline = time.time(), 0, time.time() + minutes * 60
    ema_loss = None
    while time.time() < deadline:
        for group in optimizer.param_groups:
            group["lr"] = lr_at((time.time() - start) / (minutes * 60), 5e-4)
        index = torch.tensor([rng.randrange(pool) for _ in range(batch)])
        prompts = ["" if rng.random() < 0.1 else pool_scenes[i].describe() for i in index.tolist()]
        latents = (means[index] + stds[index] * torch.randn_like(means[index])) * scaling
        ids = tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                        return_tensors="pt").input_ids
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,))
        noisy = scheduler.add_noise(latents, noise, timesteps)
        hidden = text_encoder(ids)[0]
        pred = unet(noisy, timesteps, encoder_hidden_states=hidden).sample
        loss = F.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if step % 50 == 0:
            log(f"unet step {step} loss {ema_loss:.4f} ({time.time() - start:.0f} s)")
    log(f"unet done: {step} steps, loss {ema_loss:.4f}")
    return text_encoder.eval(), unet.eval(), {"unet_steps": step, "unet_final_loss": ema_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("assets/image-model"))
    parser.add_argument("--vae-minutes", type=float, default=10)
    parser.add_argument("--unet-minutes", type=float, default=25)
    parser.add_argument("--batch", type=int, default=32, help="UNet batch")
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    work = args.out.parent / (args.out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    log_file = open(work / "train.log", "a")

    def log(message: str) -> None:
        print(message, flush=True)
        log_file.write(message + "\n")
        log_file.flush()

    started = time.time()
    tokenizer = build_word_tokenizer(scene_words(), work / "tokenizer-raw", MAX_TOKENS)
    log(f"tokenizer: {len(tokenizer)} tokens")
    vae, vae_report = train_vae(rng, args.vae_minutes, args.vae_batch, log)
    text_encoder, unet, unet_report = train_unet(vae, tokenizer, rng, args.unet_minutes, args.batch, log)
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                            beta_start=0.00085, beta_end=0.012, prediction_type="epsilon",
                                            steps_offset=1)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(args.out, safe_serialization=True)
    report = {"seed": args.seed, "batch": args.batch, "minutes": (time.time() - started) / 60, "side": SIDE,
              "torch": torch.__version__, **vae_report, **unet_report}
    (args.out / "training.json").write_text(json.dumps(report, indent=2))
    log(f"saved {args.out} in {report['minutes']:.1f} min")


if __name__ == "__main__":
    main()
