"""Where did an image break: the component (text encoder, UNet, VAE decoder) named from each one's output on the
reference's inputs (arena.judging.localize_image), held on real exports of the tiny pipeline damaged on purpose."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from arena.judging.localize_image import SIGNATURES, at_step, localize_components, summary
from arena.judging.results import Where

SHAPES = {"text_encoder": (2, 16, 32), "unet": (2, 4, 8, 8), "vae_decoder": (1, 3, 32, 32)}


def outputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in SHAPES.items()}


def test_the_first_component_over_tolerance_is_named_and_later_ones_are_not_blamed():
    reference = outputs()
    candidate = dict(reference) | {"unet": reference["unet"] * 1.5,
                                   "vae_decoder": reference["vae_decoder"] + 1.0}
    where = localize_components(reference, candidate, "fp32")
    assert where["unit"] == "unet" and where["error"] > where["threshold"] and where["cause"] == SIGNATURES["unet"]
    assert [e["unit"] for e in where["per_unit"]] == ["text_encoder", "unet", "vae_decoder"]
    assert where["per_unit"][0]["error"] == 0 and where["per_unit"][2]["psnr_db"] < 20
    json.dumps(where, allow_nan=False)


def test_nan_and_failures_are_breaks_with_their_own_signature():
    reference = outputs()
    candidate = dict(reference) | {"vae_decoder": np.full_like(reference["vae_decoder"], np.inf)}
    where = localize_components(reference, candidate, "fp16")
    assert where["unit"] == "vae_decoder" and where["non_finite"] and where["error"] is None
    assert where["cause"] == SIGNATURES["vae_decoder_overflow"] and where["per_unit"][2]["non_finite"] == 3 * 32 * 32
    assert "VAE decoder 3072 NaN/Inf values" in summary(where)
    json.dumps(where, allow_nan=False)
    failed = localize_components(reference, dict(reference), "fp32", errors={"text_encoder": "RuntimeError: boom"})
    assert failed["unit"] == "text_encoder" and "boom" in failed["cause"]


def test_agreeing_components_name_none_and_say_where_the_difference_comes_from():
    reference = outputs()
    close = {k: v + np.float32(5e-3) * np.std(v) for k, v in reference.items()}
    assert localize_components(reference, close, "fp16", image_broken=False)["cause"] is None
    assert localize_components(reference, close, "fp16")["cause"] == SIGNATURES["precision"]
    exact = localize_components(reference, dict(reference), "fp32")
    assert exact["unit"] is None and exact["cause"] == SIGNATURES["loop"]


def test_the_unet_is_compared_at_every_kept_step_and_a_late_break_is_named_at_its_step():
    reference = outputs()
    rng = np.random.default_rng(1)
    stacked = np.stack([reference["unet"], *rng.normal(size=(2, *SHAPES["unet"])).astype(np.float32)])
    steps = {"index": [0, 9, 19], "timestep": [999.0, 500.0, 49.0], "total": 20}
    late = stacked.copy()
    late[2] *= 1.2  # wrong at the last kept step only (small timesteps)
    where = localize_components(reference | {"unet": stacked}, reference | {"unet": late}, "fp32", steps=steps)
    assert where["unit"] == "unet" and where["cause"] == SIGNATURES["unet_late"], where
    assert (where["step"], where["timestep"], where["steps"]) == (20, 49.0, 20) and where["error"] == 0.2
    entry = where["per_unit"][1]
    assert [(e["step"], e["timestep"], e["error"]) for e in entry["per_step"]] == [(1, 999.0, 0), (10, 500.0, 0),
                                                                                     (20, 49.0, 0.2)]
    assert at_step(where) == " at denoising step 20 of 20 (timestep 49)"
    assert "UNet 0.2 at step 20 of 20" in summary(where)
    json.dumps(where, allow_nan=False)
    # the first step alone, as the comparison was before: clean
    first = localize_components(reference, reference | {"unet": late[0]}, "fp32", image_broken=False)
    assert first["unit"] is None
    early = late.copy()
    early[0] *= 1.2  # wrong from the first step: the UNet's plain signature
    assert localize_components(reference | {"unet": stacked}, reference | {"unet": early}, "fp32",
                               steps=steps)["cause"] == SIGNATURES["unet"]
    clean = localize_components(reference | {"unet": stacked}, reference | {"unet": stacked}, "fp32", steps=steps)
    assert clean["unit"] is None and "step" not in clean and "UNet 0 (largest of 3 steps of 20" in summary(clean)


def test_the_kept_steps_are_every_step_or_the_first_the_last_and_a_spread_under_the_caps():
    from backends.hf import UNET_STEPS_MAX, UNET_STEPS_MAX_BYTES, unet_step_indices

    assert unet_step_indices(20, 2048) == list(range(20))
    spread = unet_step_indices(100, 2048)
    assert len(spread) == UNET_STEPS_MAX and spread[0] == 0 and spread[-1] == 99
    assert unet_step_indices(50, UNET_STEPS_MAX_BYTES // 3) == [0, 24, 49]  # the byte cap keeps fewer
    assert unet_step_indices(50, UNET_STEPS_MAX_BYTES * 2) == [0]


# --- end to end: the tiny pipeline's export (optimum-cli's layout), one component damaged at a time -----------
def damage(folder: Path, component: str, name: str, factor: float = 1.0, noise: float = 0.0) -> None:
    """The initializer ``name`` of ``component``'s graph multiplied by ``factor`` plus ``noise`` standard
    deviations of Gaussian noise (saved with its weights inline: the tiny pipeline is small)."""
    import onnx
    from onnx import numpy_helper

    path = folder / component / "model.onnx"
    model = onnx.load(str(path))
    # transformers 5's CLIPTextModel has no `text_model.` level: its names are those of an export by transformers 4
    # (optimum's) without the prefix.
    init = next(i for i in model.graph.initializer if i.name in (name, f"text_model.{name}"))
    array = numpy_helper.to_array(init).astype(np.float32)
    rng = np.random.default_rng(0)
    array = array * np.float32(factor) + rng.standard_normal(array.shape).astype(np.float32) * array.std() * noise
    init.CopyFrom(numpy_helper.from_array(array, name))
    onnx.save(model, str(path))


def run(arena, tiny_sd, onnx_dir: str, localize: str = "all"):
    from arena.types import BackendSpec, ImageRunRequest

    request = ImageRunRequest(model=str(tiny_sd), prompt="a red circle on a blue background", steps=2, seed=0,
                              backends=(BackendSpec("pytorch"), BackendSpec("onnxruntime", onnx_dir=onnx_dir)),
                              localize=localize)
    return arena.run_image_to_end(request)


def where_of(result) -> dict:
    metrics = result.results[1].verdict.metrics
    assert "where" in metrics, metrics
    assert metrics["where"] is not None, metrics.get("where_unavailable")
    return metrics["where"]


@pytest.fixture(scope="module")
def export(arena, tiny_sd) -> Path:
    """The tiny pipeline's export in optimum-cli's layout, made by the ONNX Runtime backend's own exporter
    (torch.onnx dynamo; cached)."""
    from arena.types import BackendSpec, ImageRunRequest

    result = arena.run_image_to_end(ImageRunRequest(model=str(tiny_sd), prompt="a circle", steps=1,
                                                    backends=(BackendSpec("onnxruntime"),)))
    assert result.results[0].error is None, result.results[0].error
    return Path(result.results[0].load.artifact_dir)


DAMAGES = {  # name: (component, initializer, factor, noise, the signature it must show)
    "text-encoder-positions": ("text_encoder", "embeddings.position_embedding.weight", 1.0, 1.0, "text_encoder"),
    "unet-mid-block": ("unet", "mid_block.resnets.0.conv1.weight", 3.0, 1.0, "unet"),
    "vae-decoder-input-conv": ("vae_decoder", "decoder.conv_in.weight", 1.0, 1.0, "vae_decoder"),
}


def test_a_good_export_names_no_component_and_each_damaged_one_is_named(arena, tiny_sd, export, tmp_path):
    good = run(arena, tiny_sd, str(export))
    assert good.results[1].verdict.kind == "MATCH"
    where = where_of(good)
    assert where["unit"] is None and where["cause"] is None, where
    assert [e["unit"] for e in where["per_unit"]] == ["text_encoder", "unet", "vae_decoder"]
    assert max(e["error"] for e in where["per_unit"]) < 1e-4  # the fp32 export agrees everywhere
    per_step = where["per_unit"][1]["per_step"]  # ... at every denoising step
    assert [e["step"] for e in per_step] == [1, 2] and max(e["error"] for e in per_step) < 1e-4, per_step
    assert good.results[0].latents is None and good.results[1].latents is None  # dropped after judging
    for name, (component, initializer, factor, noise, signature) in DAMAGES.items():
        folder = tmp_path / name
        shutil.copytree(export, folder)
        damage(folder, component, initializer, factor, noise)
        where = where_of(run(arena, tiny_sd, str(folder)))
        assert where["unit"] == component and where["cause"] == SIGNATURES[signature], (name, where)
        before = where["per_unit"][:[e["unit"] for e in where["per_unit"]].index(component)]
        assert all(e["error"] < 1e-4 for e in before), (name, where)  # the components before it agree
    json.dumps(where, allow_nan=False)


def damage_late_timesteps(folder: Path, below: float = 500.0) -> None:
    """The UNet's timestep embedding (time_embedding.linear_2's output) shifted by a fixed random vector when the
    timestep is under ``below``, in the graph itself (Less, Cast, Mul, Add): a branch only late, low-noise steps
    take, as a wrong embedding table for small timesteps would be."""
    import onnx
    from onnx import helper, numpy_helper

    path = folder / "unet" / "model.onnx"
    model = onnx.load(str(path))
    graph = model.graph
    at, node = next((i, n) for i, n in enumerate(graph.node) if "time_embedding.linear_2.weight" in n.input)
    embedding, late = node.output[0], node.output[0] + "_late"
    bias = next(i for i in graph.initializer if i.name == "time_embedding.linear_2.bias")
    shift = np.random.default_rng(0).standard_normal(numpy_helper.to_array(bias).shape).astype(np.float32)
    graph.initializer.extend([numpy_helper.from_array(np.array(below, np.float32), "late_below"),
                              numpy_helper.from_array(shift, "late_shift")])
    for later in graph.node[at + 1:]:
        later.input[:] = [late if name == embedding else name for name in later.input]
    added = [helper.make_node("Less", ["timestep", "late_below"], ["late_is"]),
             helper.make_node("Cast", ["late_is"], ["late_mask"], to=onnx.TensorProto.FLOAT),
             helper.make_node("Mul", ["late_mask", "late_shift"], ["late_delta"]),
             helper.make_node("Add", [embedding, "late_delta"], [late])]
    for offset, new in enumerate(added):
        graph.node.insert(at + 1 + offset, new)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_a_unet_wrong_only_at_small_timesteps_is_named_at_its_late_step(arena, tiny_sd, export, tmp_path):
    """Damage the first step never sees (timesteps 999, then 0 for two steps): the first step's UNet agrees, the
    second's does not; the UNet is named at step 2 of 2, and the panel, the check line and the floor verdict say
    so (the picture itself looks close)."""
    from arena.judging.check import summary_lines
    from ui.format import image_metrics

    folder = tmp_path / "late"
    shutil.copytree(export, folder)
    damage_late_timesteps(folder)
    result = run(arena, tiny_sd, str(folder))
    where = where_of(result)
    per_step = where["per_unit"][1]["per_step"]
    assert [(e["step"], e["timestep"]) for e in per_step] == [(1, 999.0), (2, 0.0)], per_step
    assert per_step[0]["error"] < 1e-4 < where["threshold"] < per_step[1]["error"]  # the first step alone: clean
    assert where["unit"] == "unet" and (where["step"], where["steps"]) == (2, 2), where
    assert where["cause"] == SIGNATURES["unet_late"]
    assert where["per_unit"][0]["error"] < 1e-4 and where["per_unit"][2]["error"] < 1e-4  # the others agree
    verdict = result.results[1].verdict
    assert verdict.kind == "WRONG" and "at denoising step 2 of 2 (timestep 0)" in verdict.reason, verdict
    run_dict = result.to_dict()
    panel = image_metrics(run_dict["results"][1])
    assert "**UNet** is the first component whose output leaves the reference's on the same input at denoising " \
           "step 2 of 2 (timestep 0)" in panel, panel
    lines = summary_lines({"error": None, "checks": [], "where": where, "broken": True,
                           "candidate": run_dict["results"][1]["options"]})
    assert any(line.startswith("WHERE     unet at denoising step 2 of 2 (timestep 0): the UNet predicts")
               for line in lines), lines
    json.dumps(where, allow_nan=False)


def test_the_broken_image_examples_damage_is_localized_to_the_vae_decoder(arena, tiny_sd, export, tmp_path):
    """The "See a broken conversion" image damage (arena.preparing.demos): the run stops at the NaN guard (NAN),
    and localizing with "auto" names the VAE decoder's overflow while the text encoder and UNet agree."""
    from arena.preparing.demos import damage_image_export

    damage_image_export(str(export), str(tmp_path / "demo"))
    result = run(arena, tiny_sd, str(tmp_path / "demo"), localize="auto")
    assert result.results[1].verdict.kind == "NAN", result.results[1].verdict
    where = where_of(result)
    assert where["unit"] == "vae_decoder" and where["non_finite"], where
    assert where["cause"] == SIGNATURES["vae_decoder_overflow"]
    assert [e["error"] < 1e-4 for e in where["per_unit"][:2]] == [True, True]
    off = run(arena, tiny_sd, str(tmp_path / "demo"), localize="off")
    assert "where" not in off.results[1].verdict.metrics
    # Every renderer reads the result's JSON through one `Where` (tests/test_results.py shows the four agree).
    shown = json.loads(json.dumps(result.to_dict()))["results"][1]["verdict"]["metrics"]["where"]
    assert Where.from_dict(shown).to_dict() == shown and Where.from_dict(shown).title == "VAE decoder"
