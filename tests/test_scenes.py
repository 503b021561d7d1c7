"""The procedural scenes that train and judge the embedded image model."""

import itertools
import random

import numpy as np

from arena.preparing.scenes import COLORS, SHAPES, Scene, all_scenes, is_held_out, random_scene, render, score_image


def test_a_rendered_scene_passes_its_own_check_and_fails_anothers():
    for scene in all_scenes(held_out=True):
        assert score_image(render(scene), scene)["ok"], scene
    scene = Scene("circle", "red", "blue", "small", "in the top left")
    swapped = Scene("circle", "blue", "red", "small", "in the top left")
    assert not score_image(render(swapped), scene)["ok"]
    moved = Scene("circle", "red", "blue", "small", "in the bottom right")
    assert not score_image(render(moved), scene)["ok"]  # right colors, wrong place
    assert not score_image(np.full((64, 64, 3), 128, np.uint8), scene)["ok"]  # a gray square is nothing


def test_held_out_combinations_are_new_triples_of_known_pairs():
    held = {(s.color, s.shape, s.background) for s in all_scenes(held_out=True)}
    train = {(s.color, s.shape, s.background) for s in all_scenes(held_out=False)}
    assert held and not held & train
    assert ("red", "circle", "blue") in train
    assert 0.1 < len(held) / (len(held) + len(train)) < 0.2
    for color, shape, background in held:
        assert any(c == color and s == shape for c, s, _ in train)
        assert any(c == color and b == background for c, _, b in train)
        assert any(s == shape and b == background for _, s, b in train)


def test_random_scenes_respect_the_split_and_describe_themselves():
    rng = random.Random(0)
    for _ in range(200):
        scene = random_scene(rng)
        assert not is_held_out(scene.color, scene.shape, scene.background) and scene.color != scene.background
        words = scene.describe().split()
        assert words[0] == "a" and scene.color in words and scene.shape in words and words[-1] == "background"
    assert Scene("square", "yellow", "blue", "small", "in the top left").describe() == \
        "a small yellow square in the top left on a blue background"
    assert set(itertools.chain(COLORS)) >= {"red", "blue"} and "triangle" in SHAPES
