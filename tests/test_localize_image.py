"""Where did an image break: the component (text encoder, UNet, VAE decoder) named from each one's output on the
reference's inputs (arena.judging.localize_image), held on real exports of the tiny pipeline damaged on purpose."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from arena.judging.localize_image import SIGNATURES, localize_components, summary

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
    shown_everywhere(result.to_dict())


def shown_everywhere(run_dict: dict) -> None:
    """The panel's "Where?" line (under the NaN guard's error), the chart, the report's table and the check
    summary all show the VAE decoder and its figures, from the result's JSON alone."""
    from arena.judging.check import summary_lines
    from arena.sharing.reports import report_markdown
    from ui.charts import where_figure
    from ui.format import image_metrics

    candidate = run_dict["results"][1]
    panel = image_metrics(candidate)
    assert "**Where?** The **VAE decoder** is the first component" in panel and "NaN/Inf values" in panel, panel
    assert "text encoder " in panel and "UNet " in panel  # every component's figures
    figure = where_figure(run_dict)
    assert list(figure.data[0].x) == ["text_encoder", "unet", "vae_decoder"]
    report = report_markdown(run_dict, "image")
    assert "| First divergent component |" in report and "| `vae_decoder` |" in report, report
    where = candidate["verdict"]["metrics"]["where"]
    lines = summary_lines({"error": None, "checks": [{"prompt": "p", "verdict": candidate["verdict"],
                                                       "reference_verdict": run_dict["results"][0]["verdict"]}],
                           "where": where, "broken": True, "candidate": run_dict["results"][1]["options"]})
    assert any(line.startswith("WHERE     vae_decoder: overflow in the VAE decoder") for line in lines), lines
