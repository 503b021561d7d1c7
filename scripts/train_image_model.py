"""Train the embedded text-to-image model: a tiny Stable Diffusion pipeline that draws described scenes.

    .venv/bin/python scripts/train_image_model.py --out assets/image-model [--vae-minutes 12] [--unet-minutes 40]

Everything is seeded and local: scenes come from `arena.preparing.scenes` (one shape, one color, a size, a position, a
background), the tokenizer is trained on the scene vocabulary, and the three networks are trained from scratch
(about 53 minutes on 2 cores with the defaults; the budgets are wall-clock, so a busy machine trains fewer steps):
1. AutoencoderKL (64x64 RGB <-> 16x16x4 latents) on reconstruction, then its latent scaling factor is measured
   and the round trip scored;
2. CLIPTextModel + UNet2DConditionModel (cross-attention, plus the pooled prompt added to the timestep
   embedding) jointly on v-prediction with a zero-terminal-SNR schedule, the prompt dropped 10% of the time for
   classifier-free guidance; EMA weights are saved. The log shows a conditioning probe (own vs shuffled prompts)
   and, every 8 minutes, a quick score. docs/image-model.md has the figures of the shipped run.
Held-out (color, shape, background) combinations never appear in training (`arena.preparing.scenes.is_held_out`).
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

from arena.preparing.scenes import build_word_tokenizer, random_scene, render, scene_words, score_image  # noqa: E402

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
        # The ceiling of the whole model: how many scenes survive an encode/decode round trip by the score's rule.
        scenes = [random_scene(rng) for _ in range(64)]
        recon = vae.decode(vae.encode(images_to_tensor(scenes)).latent_dist.mean).sample
        pixels = ((recon.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).to(torch.uint8).numpy()
        ceiling = sum(score_image(image, scene)["ok"] for image, scene in zip(pixels, scenes, strict=True)) / 64
    log(f"vae done: {step} steps, latent std {latents.std():.4f}, scaling factor {scaling:.4f}, "
        f"round-trip score {ceiling:.0%}")
    return vae, {"vae_steps": step, "vae_final_rec_mse": rec_loss.item(), "scaling_factor": scaling,
                 "vae_round_trip_score": ceiling}


def make_training_scheduler():
    from diffusers import DDPMScheduler

    # v-prediction on a zero-terminal-SNR schedule: at the noisiest step the network must say which colors go where
    # (epsilon prediction learns almost nothing from the prompt there), and white or black backgrounds are reachable.
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         prediction_type="v_prediction", rescale_betas_zero_snr=True, clip_sample=False)


def build_unet_and_text_encoder(tokenizer):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    # Cross-attention at 8x8 and 4x4 (cheap) and, through addition_embed_type="text", the attention-pooled prompt is
    # added to the timestep embedding so color and position reach every ResNet block. Both come from the
    # encoder_hidden_states alone, so the standard StableDiffusionPipeline and ONNX export need nothing extra.
    unet = UNet2DConditionModel(
        sample_size=SIDE // 4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=4, norm_num_groups=16,
        addition_embed_type="text", addition_embed_type_num_heads=4)
    return CLIPTextModel(text_config), unet


def train_unet(vae, tokenizer, rng: random.Random, minutes: float, batch: int, log, pool: int = 12000,
               peak_lr: float = 1e-3, check_every: float = 8.0):
    text_encoder, unet = build_unet_and_text_encoder(tokenizer)
    scheduler = make_training_scheduler()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=peak_lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]
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

    def encode(prompts):
        ids = tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                        return_tensors="pt").input_ids
        return text_encoder(ids)[0]

    def v_loss(index, prompts, timesteps, noise):
        latents = means[index] * scaling
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = scheduler.get_velocity(latents, noise, timesteps)
        return F.mse_loss(unet(noisy, timesteps, encoder_hidden_states=encode(prompts)).sample, target)

    # The conditioning probe: the same noisy latents judged with their own prompts and with shuffled ones. While
    # the gap is zero the UNet is ignoring the text, whatever its loss says.
    probe_gen = torch.Generator().manual_seed(1)
    probe_index = torch.randint(0, pool, (64,), generator=probe_gen)
    probe_t = torch.tensor([999, 900, 700, 500] * 16)
    probe_noise = torch.randn(64, 4, SIDE // 4, SIDE // 4, generator=probe_gen)
    probe_prompts = [pool_scenes[i].describe() for i in probe_index.tolist()]

    def probe() -> tuple[float, float]:
        with torch.no_grad():
            own = v_loss(probe_index, probe_prompts, probe_t, probe_noise).item()
            shuffled = v_loss(probe_index, probe_prompts[1:] + probe_prompts[:1], probe_t, probe_noise).item()
        return own, shuffled

    start, step, deadline = time.time(), 0, time.time() + minutes * 60
    next_check = start + check_every * 60
    ema_loss = None
    while time.time() < deadline:
        for group in optimizer.param_groups:
            group["lr"] = lr_at((time.time() - start) / (minutes * 60), peak_lr)
        index = torch.tensor([rng.randrange(pool) for _ in range(batch)])
        prompts = ["" if rng.random() < 0.1 else pool_scenes[i].describe() for i in index.tolist()]
        latents = (means[index] + stds[index] * torch.randn_like(means[index])) * scaling
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,))
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = scheduler.get_velocity(latents, noise, timesteps)
        pred = unet(noisy, timesteps, encoder_hidden_states=encode(prompts)).sample
        loss = F.mse_loss(pred, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        decay = min(0.998, (1 + step) / (10 + step))
        with torch.no_grad():
            for average, p in zip(ema, params, strict=True):
                average.lerp_(p.detach(), 1 - decay)
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if step % 100 == 0:
            own, shuffled = probe()
            log(f"unet step {step} loss {ema_loss:.4f} probe own {own:.4f} shuffled {shuffled:.4f} "
                f"({time.time() - start:.0f} s)")
        if time.time() > next_check and time.time() + 60 < deadline:
            next_check = time.time() + check_every * 60
            log(f"unet step {step} check: {quick_score(vae, tokenizer, text_encoder, unet, ema, params)}")
    with torch.no_grad():
        for average, p in zip(ema, params, strict=True):
            p.copy_(average)
    own, shuffled = probe()
    log(f"unet done: {step} steps, loss {ema_loss:.4f}, EMA weights probe own {own:.4f} shuffled {shuffled:.4f}")
    return text_encoder.eval(), unet.eval(), {"unet_steps": step, "unet_final_loss": ema_loss,
                                              "probe_own_prompt": own, "probe_shuffled_prompt": shuffled}


def make_pipeline(vae, tokenizer, text_encoder, unet):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                            beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction",
                                            rescale_betas_zero_snr=True, timestep_spacing="trailing",
                                            steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def quick_score(vae, tokenizer, text_encoder, unet, ema, params, count: int = 32) -> str:
    """Score `count` training and held-out prompts with the EMA weights (12 steps); the live weights are restored."""
    live = [p.detach().clone() for p in params]
    with torch.no_grad():
        for average, p in zip(ema, params, strict=True):
            p.copy_(average)
    pipe = make_pipeline(vae, tokenizer, text_encoder.eval(), unet.eval())
    pipe.set_progress_bar_config(disable=True)
    rng = random.Random(99)
    parts = []
    for held_out in (False, True):
        scenes = [random_scene(rng, held_out=held_out) for _ in range(count)]
        with torch.no_grad():
            images = pipe([s.describe() for s in scenes], num_inference_steps=12, guidance_scale=4.0,
                          generator=torch.Generator().manual_seed(0), output_type="np", height=SIDE, width=SIDE).images
        ok = sum(score_image((im * 255).round().astype(np.uint8), s)["ok"] for im, s in zip(images, scenes,
                                                                                           strict=True))
        parts.append(f"{'held-out' if held_out else 'training'} {ok}/{count}")
    with torch.no_grad():
        for value, p in zip(live, params, strict=True):
            p.copy_(value)
    text_encoder.train()
    unet.train()
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("assets/image-model"))
    parser.add_argument("--vae-minutes", type=float, default=12)
    parser.add_argument("--unet-minutes", type=float, default=40)
    parser.add_argument("--batch", type=int, default=32, help="UNet batch")
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

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
    pipeline = make_pipeline(vae, tokenizer, text_encoder, unet)
    pipeline.save_pretrained(args.out, safe_serialization=True)
    report = {"seed": args.seed, "batch": args.batch, "minutes": (time.time() - started) / 60, "side": SIDE,
              "torch": torch.__version__, **vae_report, **unet_report}
    (args.out / "training.json").write_text(json.dumps(report, indent=2))
    log(f"saved {args.out} in {report['minutes']:.1f} min")


if __name__ == "__main__":
    main()
