"""Build tests/corpus/sequences.json: teacher-forced per-position KL of ONNX exports of the embedded SmolLM2-135M
against PyTorch fp32 on the first 512 tokens of assets/quality-paragraph.txt.

The exports are the arena's own fp32 export edited as in tests/support/export_edits.py: fair conversions (the export
itself, weights rounded through fp16, 8-bit weight-only), a math change from the first token (one MLP scaled),
and three bugs that start late in the sequence (positions clamped at 100, positions wrapping every 128, logn
attention past 128). Run: `.venv/bin/python scripts/build_sequence_corpus.py` (a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arena.core import Arena
    from arena.judging.verdicts import log_softmax, teacher_forced_quality
    from arena.preparing.catalog import DEFAULT_TEXT_MODEL
    from arena.preparing.prepare import QUALITY_PARAGRAPH, QUALITY_PARAGRAPH_TOKENS
    from arena.types import BackendSpec, TextRunRequest
    from tests.support.export_edits import (
        clamp_positions,
        fp16_rounded,
        logn_attention,
        scale_one_mlp,
        weight_only_int8,
        wrap_positions,
    )

    arena = Arena()
    try:
        result = arena.run_text_to_end(TextRunRequest(model=DEFAULT_TEXT_MODEL, prompt="hi", max_new_tokens=2,
                                                      backends=(BackendSpec("onnxruntime"),)))
    finally:
        arena.close()
    export, model_dir = Path(result.results[0].load.artifact_dir), result.prepared.model_dir
    ids = AutoTokenizer.from_pretrained(model_dir)(QUALITY_PARAGRAPH.read_text().strip())["input_ids"]
    ids = ids[:QUALITY_PARAGRAPH_TOKENS]
    with torch.inference_mode():
        reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()(
            torch.tensor([ids])).logits[0].numpy()
    reference = log_softmax(reference[:-1])

    def run(model) -> np.ndarray:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        n = len(ids)
        feeds = {"input_ids": np.array([ids]), "attention_mask": np.ones((1, n), np.int64),
                 "position_ids": np.arange(n)[None]}
        for item in session.get_inputs():
            if item.name.startswith("past_key_values"):
                heads, dim = item.shape[1], item.shape[3]
                feeds[item.name] = np.zeros((1, heads, 0, dim), np.float32)
        return log_softmax(session.run(["logits"], feeds)[0][0][:-1])

    samples = []
    for name, edit, precision, label in (
            ("good-fp32", None, "fp32", "good"), ("fp16-rounded", fp16_rounded, "fp32", "good"),
            ("weight-only-int8", weight_only_int8, "int8", "good"), ("scaled-mlp", scale_one_mlp, "fp32", "broken"),
            ("clamped-positions-100", clamp_positions, "fp32", "broken"),
            ("wrapped-positions-128", wrap_positions, "fp32", "broken"),
            ("logn-attention-128", logn_attention, "fp32", "broken")):
        model = onnx.load(str(export / "model.onnx"))
        if edit is not None:
            edit(model)
        quality = teacher_forced_quality(reference, run(model), np.asarray(ids[1:]))
        samples.append({"source": name, "label": label, "precision": precision, "quality": quality})
        print(f"{name}: top-1 {quality['top1']:.1%}, KL {quality['kl']:.4f}")
    out = ROOT / "tests" / "corpus" / "sequences.json"
    out.write_text(json.dumps({"about": __doc__.splitlines()[0], "samples": samples}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
