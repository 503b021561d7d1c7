"""Procedural scenes described in words: the training data and the yardstick of the embedded image model.

A scene is one shape (circle, square, triangle) of one color, at a size and a position, on a plain background.
`render` draws it; `describe` says it ("a small yellow square in the top left on a blue background");
`score_image` checks a generated image against the scene its prompt describes. Pure numpy: no torch here.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 215, 40),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.14, "": 0.22, "large": 0.32}  # half-extent as a fraction of the image side
POSITIONS = {  # centre as fractions of the image side (x, y)
    "": (0.5, 0.5),
    "in the center": (0.5, 0.5),
    "in the top left": (0.27, 0.27),
    "in the top right": (0.73, 0.27),
    "in the bottom left": (0.27, 0.73),
    "in the bottom right": (0.73, 0.73),
    "on the left": (0.27, 0.5),
    "on the right": (0.73, 0.5),
    "at the top": (0.5, 0.27),
    "at the bottom": (0.5, 0.73),
}


@dataclass(frozen=True)
class Scene:
    shape: str
    color: str
    background: str
    size: str = ""
    position: str = ""

    def describe(self) -> str:
        words = ["a", self.size, self.color, self.shape, self.position, "on a", self.background, "background"]
        return " ".join(w for w in words if w)


def is_held_out(color: str, shape: str, background: str) -> bool:
    """About one (color, shape, background) combination in seven never appears in training.

    Every color, shape and background, and every pair of them, is still seen, so the held-out prompts test
    composition, not unknown words. "a red circle on a blue background" stays in training on purpose.
    """
    c, s, b = list(COLORS).index(color), SHAPES.index(shape), list(COLORS).index(background)
    if (color, shape, background) == ("red", "circle", "blue"):
        return False
    return (c + 3 * s + 5 * b) % 7 == 3


def all_scenes(held_out: bool | None = None) -> list[Scene]:
    """Every scene (or only the training / only the held-out ones)."""
    scenes = []
    for color, shape, background, size, position in itertools.product(COLORS, SHAPES, COLORS, SIZES, POSITIONS):
        if color == background:
            continue
        if held_out is not None and is_held_out(color, shape, background) != held_out:
            continue
        scenes.append(Scene(shape, color, background, size, position))
    return scenes


def shape_mask(scene: Scene, side: int) -> np.ndarray:
    """Boolean mask of the shape's pixels in a side x side image."""
    cx, cy = POSITIONS[scene.position]
    half = SIZES[scene.size] * side
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    x, y = xs - cx * side, ys - cy * side
    if scene.shape == "circle":
        return x * x + y * y <= half * half
    if scene.shape == "square":
        return (np.abs(x) <= half * 0.85) & (np.abs(y) <= half * 0.85)
    # An upright triangle: apex at the top, base at the bottom.
    inside_y = (y >= -half) & (y <= half)
    return inside_y & (np.abs(x) <= (y + half) * 0.5 * 1.1)


def render(scene: Scene, side: int = 64) -> np.ndarray:
    """The scene as an RGB uint8 array of shape (side, side, 3)."""
    image = np.empty((side, side, 3), dtype=np.uint8)
    image[:] = COLORS[scene.background]
    image[shape_mask(scene, side)] = COLORS[scene.color]
    return image


def random_scene(rng: random.Random, held_out: bool = False) -> Scene:
    """A random training (or held-out) scene."""
    while True:
        color, background = rng.sample(list(COLORS), 2)
        shape = rng.choice(SHAPES)
        if is_held_out(color, shape, background) == held_out:
            return Scene(shape, color, background, rng.choice(list(SIZES)), rng.choice(list(POSITIONS)))


def nearest_color(rgb: np.ndarray) -> str:
    names = list(COLORS)
    palette = np.array([COLORS[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(((palette - rgb[None, :]) ** 2).sum(axis=1)))]


def score_image(image: np.ndarray, scene: Scene) -> dict[str, object]:
    """Does the image show the scene's colors where they belong?

    Inside the shape (eroded to its core, so blurry edges do not count) the median color must be nearest to the
    named color; outside (away from the shape) the median must be nearest to the background color.
    """
    side = image.shape[0]
    core = _erode(shape_mask(scene, side), 2)
    far = ~_dilate(shape_mask(scene, side), 3)
    pixels = image.reshape(-1, 3).astype(np.float32)
    inside = nearest_color(np.median(pixels[core.reshape(-1)], axis=0)) if core.any() else None
    outside = nearest_color(np.median(pixels[far.reshape(-1)], axis=0))
    return {"shape_color": inside, "background_color": outside,
            "ok": inside == scene.color and outside == scene.background}


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        m = mask.copy()
        m[1:, :] &= mask[:-1, :]
        m[:-1, :] &= mask[1:, :]
        m[:, 1:] &= mask[:, :-1]
        m[:, :-1] &= mask[:, 1:]
        mask = m
    return mask


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    return ~_erode(~mask, steps)


def build_word_tokenizer(words: list[str], workdir: str | Path, max_length: int = 16):
    """A CLIP tokenizer (vocab.json + merges.txt) in which every given word is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=4000, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  end_of_word_suffix="</w>", show_progress=False,
                                  initial_alphabet=list("abcdefghijklmnopqrstuvwxyz"))
    bpe.train_from_iterator(list(words) * 50, trainer)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    bpe.model.save(str(workdir))
    tokenizer = CLIPTokenizer(str(workdir / "vocab.json"), str(workdir / "merges.txt"), model_max_length=max_length,
                              pad_token="<|endoftext|>")
    for word in words:
        if tokenizer.tokenize(word) != [f"{word}</w>"]:
            raise ValueError(f"'{word}' is not one token: {tokenizer.tokenize(word)}")
    return tokenizer


def scene_words() -> list[str]:
    return sorted({w for scene in all_scenes() for w in scene.describe().split()})
