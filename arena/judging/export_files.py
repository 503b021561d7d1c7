"""The export's own files, read as a runtime that deploys the export would read them.

An export folder carries its own generation config, tokenizer and chat template (the exporters copy them; a user edits
them; ONNX Runtime GenAI writes its own genai_config.json). A runtime that uses those files stops at the end tokens
they name, renders prompts with their template and samples with their defaults. When they differ from the model's,
the export can compute the model's function exactly and still answer differently in deployment; the arena feeds
every backend the same prepared ids and stop tokens, so its run would not show it. These differences are reported
as warnings beside the verdict, never as a broken verdict.

Pure JSON reading (no transformers): safe anywhere; the folders are the server's own or a local user's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 64 << 20
SAMPLING = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size")
SPECIAL = ("bos_token", "eos_token", "pad_token", "unk_token")


def _json(path: Path) -> dict[str, Any] | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _ids(value: Any) -> set[int]:
    if isinstance(value, bool):
        return set()
    if isinstance(value, int):
        return {value}
    return {v for v in value if isinstance(v, int) and not isinstance(v, bool)} if isinstance(value, list) else set()


def _token(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file() and jinja.stat().st_size <= MAX_FILE_BYTES:
        return jinja.read_text(encoding="utf-8", errors="replace")
    config = _json(folder / "tokenizer_config.json") or {}
    template = config.get("chat_template")
    return template if isinstance(template, str) else None


def _end_ids(folder: Path) -> set[int]:
    generation = _json(folder / "generation_config.json") or {}
    genai = (_json(folder / "genai_config.json") or {}).get("model") or {}
    return _ids(generation.get("eos_token_id")) | _ids(genai.get("eos_token_id") if isinstance(genai, dict) else None)


def export_file_warnings(model_dir: str | Path | None, export_dir: str | Path | None) -> list[str]:
    """One sentence for each behaviour the export's files would change in deployment against the model's own files:
    end tokens, special tokens, chat template, sampling defaults. Files the export does not carry are not compared
    (a runtime given only the graph takes them from elsewhere)."""
    if not model_dir or not export_dir:
        return []
    model, export = Path(model_dir), Path(export_dir)
    if not export.is_dir() or not model.is_dir() or export.resolve() == model.resolve():
        return []
    warnings = []
    carries_end = (export / "generation_config.json").is_file() or (export / "genai_config.json").is_file()
    model_end, export_end = _end_ids(model), _end_ids(export)
    if carries_end and model_end and export_end != model_end:
        warnings.append(f"the export's files end generation at token(s) {sorted(export_end) or 'none'}, the "
                        f"model's at {sorted(model_end)}: a runtime using the export's files would not stop where "
                        "the model does")
    model_gen, export_gen = _json(model / "generation_config.json"), _json(export / "generation_config.json")
    if model_gen is not None and export_gen is not None:
        changed = [f"{key} {export_gen.get(key)!r} (the model's: {model_gen.get(key)!r})" for key in SAMPLING
                   if export_gen.get(key) != model_gen.get(key)]
        if changed:
            warnings.append("the export's generation_config.json changes the generation defaults: "
                            + ", ".join(changed))
    model_tok, export_tok = _json(model / "tokenizer_config.json"), _json(export / "tokenizer_config.json")
    if model_tok is not None and export_tok is not None:
        changed = [f"{key} {_token(export_tok.get(key))!r} (the model's: {_token(model_tok.get(key))!r})"
                   for key in SPECIAL if _token(export_tok.get(key)) != _token(model_tok.get(key))]
        if changed:
            warnings.append("the export's tokenizer names other special tokens: " + ", ".join(changed))
    model_template, export_template = _template(model), _template(export)
    if model_template is not None and export_template is not None and model_template.strip() != \
            export_template.strip():
        warnings.append("the export's chat template differs from the model's: a runtime rendering prompts with the "
                        "export's files gives the model other text than the arena did")
    return warnings
