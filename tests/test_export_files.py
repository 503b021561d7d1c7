"""The export's own files against the model's (`arena.judging.export_files`): what a runtime deploying the export
would do differently is one warning each; files that agree, or that the export does not carry, say nothing."""

from __future__ import annotations

import json
import shutil

from arena.judging.export_files import export_file_warnings


def folders(tiny_llama, tmp_path):
    model, export = tmp_path / "model", tmp_path / "export"
    shutil.copytree(tiny_llama, model)
    export.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json",
                 "special_tokens_map.json", "chat_template.jinja"):
        if (model / name).is_file():
            shutil.copy(model / name, export / name)
    (export / "model.onnx").write_bytes(b"graph")
    return model, export


def edit(path, **changes):
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def test_an_export_whose_files_agree_says_nothing(tiny_llama, tmp_path):
    model, export = folders(tiny_llama, tmp_path)
    assert export_file_warnings(model, export) == []
    assert export_file_warnings(model, model) == []
    for name in ("generation_config.json", "tokenizer_config.json"):
        (export / name).unlink()
    assert export_file_warnings(model, export) == []  # not carried: a runtime takes them from elsewhere


def test_each_difference_deployment_would_see_is_one_sentence(tiny_llama, tmp_path):
    model, export = folders(tiny_llama, tmp_path)
    edit(export / "generation_config.json", eos_token_id=[0, 7], do_sample=True, temperature=0.6)
    edit(export / "tokenizer_config.json", eos_token="<unk>", chat_template="{{ messages[0]['content'] }}")
    (export / "chat_template.jinja").unlink(missing_ok=True)
    warnings = export_file_warnings(model, export)
    assert len(warnings) == 4, warnings
    assert warnings[0].startswith("the export's files end generation at token(s) [0, 7], the model's at [")
    assert "do_sample True (the model's: None)" in warnings[1] and "temperature 0.6" in warnings[1]
    assert "eos_token '<unk>' (the model's: '</s>')" in warnings[2]
    assert "chat template differs" in warnings[3]


def test_a_genai_folder_is_read_by_its_own_config(tiny_llama, tmp_path):
    model, export = folders(tiny_llama, tmp_path)
    (export / "generation_config.json").unlink()
    (export / "genai_config.json").write_text(json.dumps({"model": {"eos_token_id": 5}}))
    assert export_file_warnings(model, export)[0].startswith("the export's files end generation at token(s) [5]")
