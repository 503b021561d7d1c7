import dataclasses

import pytest

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
