"""Build tests/assets/optimum-cli: a tiny random Llama and its exports by optimum-cli (optimum-onnx 0.1.0).

The arena no longer installs optimum-onnx (its only release pins transformers <4.58), but users have thousands of
exports made with it, and the ONNX Runtime backend must keep reading them. This script ran once in a venv of the
previous stack (transformers 4.57.6, optimum 2.1.0, optimum-onnx 0.1.0, torch 2.13.0 CPU) to write the fixture the
tests load; the files are small (about 1 MB in all):

    python scripts/make_optimum_fixture.py tests/assets/optimum-cli

- ``model/``: the HF folder (LlamaForCausalLM, 2 layers, hidden 64, grouped-query attention, the tests' tokenizer);
- ``export/``: ``optimum-cli export onnx --task text-generation-with-past`` (one ``model.onnx`` with past inputs).

(optimum-onnx 0.1.0 ignores ``legacy=True``: the merged ``decoder_model_merged.onnx`` layout with its
``use_cache_branch`` input came from optimum 1.x, and the loop feeds that input when a graph has it.)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))


def main(out: str) -> None:
    from optimum.exporters.onnx import main_export
    from tiny_models import build_tiny_llama

    root = Path(out)
    model = build_tiny_llama(root / "model", seed=7)
    main_export(str(model), output=str(root / "export"), task="text-generation-with-past", do_validation=False)


if __name__ == "__main__":
    main(sys.argv[1])
