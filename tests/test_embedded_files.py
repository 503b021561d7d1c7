"""The embedded model's shipped config and tokenizer files (assets/embedded/) and the one-parse materialization
that uses them: exactly what transformers' own GGUF path makes, in a fraction of the time."""

from __future__ import annotations

import json

import pytest

from arena.preparing.catalog import CATALOG
from arena.preparing.prepare import (
    EMBEDDED_FILES,
    SOURCE_FILE,
    embedded_gguf_path,
    gguf_source,
    gguf_tokenizer,
    load_gguf_model,
    materialize_from_shipped,
    shipped_files,
)

ENTRY = CATALOG[0]
GGUF = embedded_gguf_path(ENTRY)
needs_gguf = pytest.mark.skipif(GGUF is None, reason=f"the embedded package is not installed: {ENTRY.embedded_install}")


@needs_gguf
def test_the_shipped_files_were_written_from_the_installed_gguf_by_this_transformers():
    folder = shipped_files(ENTRY, GGUF)
    assert folder == EMBEDDED_FILES / ENTRY.key, (
        "assets/embedded/ does not match the installed GGUF or transformers: run scripts/embedded_files.py")
    assert {p.name for p in folder.iterdir()} >= {"config.json", "tokenizer.json", "tokenizer_config.json", SOURCE_FILE}


def test_a_shipped_folder_for_another_gguf_is_not_used(tmp_path):
    gguf = tmp_path / ENTRY.embedded_file
    gguf.write_bytes(b"GGUF but another file")
    assert json.loads((EMBEDDED_FILES / ENTRY.key / SOURCE_FILE).read_text()) != gguf_source(gguf)
    assert shipped_files(ENTRY, gguf) is None


@needs_gguf
def test_one_parse_materialization_equals_transformers_own_gguf_path(tmp_path):
    """Every file byte for byte: the shipped config and tokenizer against the ones transformers builds from the
    GGUF now (`gguf_tokenizer`), and the de-quantized weights against `from_pretrained(gguf_file=...)`'s
    (`load_gguf_model`: asked to dequantize, in fp32, without the GGUF quantizer that transformers 5 attaches and
    that refuses to save)."""
    import torch

    fast = tmp_path / "fast"
    fast.mkdir()
    assert materialize_from_shipped(shipped_files(ENTRY, GGUF), GGUF, fast, lambda *a, **k: None, "x") > 100e6
    slow = tmp_path / "slow"
    gguf_tokenizer(GGUF).save_pretrained(slow)
    model = load_gguf_model(GGUF)
    assert getattr(model, "hf_quantizer", None) is None and "quantization_config" not in model.config.to_dict()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    model.save_pretrained(slow)
    names = sorted(p.name for p in slow.iterdir())
    assert names == sorted(p.name for p in fast.iterdir())
    different = [n for n in names if (slow / n).read_bytes() != (fast / n).read_bytes()]
    assert different == []
