import dataclasses

import pytest

from arena.registry import backend_choices
from arena.types import BackendSpec, TextRunRequest


def test_backend_spec_from_names_and_aliases():
    assert BackendSpec.from_any("torch") == BackendSpec("pytorch")
    assert BackendSpec.from_any("ORT").backend == "onnxruntime"
    spec = BackendSpec.from_any({"backend": "onnx", "provider": "CPUExecutionProvider", "precision": "int8",
                                 "onnx_dir": ""})
    assert spec == BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision="int8")
    assert spec.label == "ONNX Runtime · CPU · int8"


@pytest.mark.parametrize("bad, message", [
    ("tensorflow", "Unknown backend"),
    ({"provider": "CPUExecutionProvider"}, "needs a 'backend'"),
    ({"backend": "pytorch", "colour": "red"}, "Unknown backend option"),
    (3, "Cannot read a backend"),
])
def test_backend_spec_rejects_bad_input_with_a_sentence(bad, message):
    with pytest.raises(ValueError, match=message):
        BackendSpec.from_any(bad)


def test_request_serialises_with_labels():
    request = TextRunRequest("m", "hi", (BackendSpec("pytorch"), BackendSpec("onnxruntime")))
    data = request.to_dict()
    assert [b["label"] for b in data["backends"]] == ["PyTorch · cpu · fp32", "ONNX Runtime · auto · fp32"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.prompt = "changed"  # frozen


@pytest.mark.parametrize(("spec", "label"), [
    (BackendSpec("pytorch"), "PyTorch · cpu · fp32"),
    (BackendSpec("pytorch", device="cuda", precision="fp16", vae_fp32=True), "PyTorch · cuda · fp16 (VAE fp32)"),
    (BackendSpec("pytorch", vae_fp32=True), "PyTorch · cpu · fp32"),  # an fp32 VAE is no news in an fp32 run
    (BackendSpec("onnxruntime"), "ONNX Runtime · auto · fp32"),
    (BackendSpec("onnxruntime", provider="CPUExecutionProvider", precision="int8", onnx_dir="/x"),
     "ONNX Runtime · CPU · int8 · user export"),
    (BackendSpec("onnxruntime", provider="TensorrtExecutionProvider", precision="fp16"),
     "ONNX Runtime · TensorRT EP · fp16"),
    (BackendSpec("tensorrt", precision="fp16", vae_fp32=True, engine_path="/u.trt"),
     "TensorRT · fp16 (VAE fp32) · user UNet engine"),
])
def test_labels_are_the_backends_own(spec, label):
    assert spec.label == label


def test_a_spec_holds_its_backends_options_only():
    import pickle

    spec = BackendSpec("onnxruntime", provider="CPUExecutionProvider")
    assert (spec.provider, spec.precision, spec.onnx_dir) == ("CPUExecutionProvider", "fp32", None)
    assert spec.to_dict() == {"backend": "onnxruntime", "exporter": "dynamo", "provider": "CPUExecutionProvider",
                              "precision": "fp32", "block_size": "32", "symmetric": True, "accuracy_level": "4",
                              "embedding_bits": "8", "graph_optimization": "all", "threads": "auto", "onnx_dir": None,
                              "label": "ONNX Runtime · CPU · fp32"}
    assert pickle.loads(pickle.dumps(spec)) == spec and {spec: 1}[BackendSpec.from_any(spec.to_dict())] == 1
    assert spec.get("device") is None and spec.replace(precision="int8").precision == "int8"
    with pytest.raises(AttributeError):
        spec.device  # noqa: B018 - ONNX Runtime has no device option
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.backend = "pytorch"
    with pytest.raises(ValueError, match=r"for ONNX Runtime; its options: \['accuracy_level', 'block_size', "
                                         r"'embedding_bits', 'exporter', 'graph_optimization', 'onnx_dir', "
                                         r"'precision', 'provider', 'symmetric', 'threads'\]"):
        BackendSpec("onnxruntime", device="cuda")


def test_option_values_are_parsed_and_checked_by_the_backends_options():
    spec = BackendSpec.from_any({"backend": "trt", "precision": "fp16", "vae_fp32": "true", "engine_path": ""})
    assert spec == BackendSpec("tensorrt", precision="fp16", vae_fp32=True)
    with pytest.raises(ValueError, match="PyTorch has no precision 'fp64'; choose one of: fp32, bf16, fp16."):
        BackendSpec.from_any({"backend": "pytorch", "precision": "fp64"})
    with pytest.raises(ValueError, match="takes true or false"):
        BackendSpec.from_any({"backend": "pytorch", "vae_fp32": "maybe"})
    with pytest.raises(ValueError) as unknown:
        BackendSpec.from_any("tensorflow")
    assert str(unknown.value) == f"Unknown backend 'tensorflow': choose {backend_choices()}."
