"""The border between a Hub repository and the loaders: a visitor's files are data, never paths or code.

Everything a repository says is checked before a loader sees it, in the preparation worker:

1. **Pinned.** The repository's commit is read once; every later read (configs, safetensors headers, the
   download) names that commit, so a repository changed between the check and the download cannot slip through.
2. **Planned.** Only top-level files are taken (a pipeline's: its component folders, one level down); never code
   (``*.py``); in public mode never pickles (``.bin``), every file's size must be known from the Hub's metadata,
   non-weight files are capped (``max_extra_mb``) and weights too (at 4 bytes a parameter of the size cap).
3. **Sized from the architecture** (public mode). The configs are fetched first; the model is built on the meta
   device (no memory) and its parameters counted; the safetensors headers (read by HTTP range, nothing else) must
   cover that count, or ``from_pretrained`` would allocate and randomly initialise what is missing.
4. **References stay inside.** After the download every JSON file is read: a value that names a file (``*_file``,
   ``*_path``, ``vocab``, ...) must name one of the snapshot's own files, and no string may be an absolute path,
   a home path or climb out with ``..`` (transformers keeps a tokenizer config's ``vocab_file`` even when it points
   at ``/proc/self/environ``). Public mode also refuses custom code (``auto_map``) and takes fast tokenizers only
   (``tokenizer.json``, read by the Rust library, which opens no other file), no pre-quantized checkpoints
   (``quantization_config``: their loaders build objects from the JSON), no attention or experts implementation
   chosen by the config (transformers 5 fetches a kernel named there from the Hub and imports it) and no
   vocabulary entry longer than ``MAX_TOKEN_CHARS`` (every generated token would be that string).
5. **Pipelines all the way down.** A pipeline's model_index.json names models, schedulers, tokenizers and
   processors of diffusers and transformers only, never another pipeline, and no folder holds its own
   model_index.json (diffusers would import what that one names).

Each refusal is one `ArenaError` sentence. Heavy imports happen inside the functions (worker side only).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from arena.errors import ArenaError
from arena.public.policy import human_count

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".msgpack", ".h5", ".onnx")
DATA_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".jinja", ".safetensors", ".bin")
PIPELINE_COMPONENT_DATA = (".json", ".txt", ".model", ".jinja", ".safetensors", ".bin")
# JSON keys whose string value is a file a loader opens: it must be one of the snapshot's own files.
FILE_KEY = re.compile(r"(^|_)(file|files|path|paths|dir|directory|folder|spm|vocab|merges)$", re.IGNORECASE)
# Keys transformers and diffusers overwrite or never open: a stale absolute path there is common and harmless.
IGNORED_KEYS = frozenset({"_name_or_path", "name_or_path", "special_tokens_map_file", "_commit_hash"})
# Free text (special tokens, templates): no path is opened from these.
TEXT_KEYS = re.compile(r"(_token|^content|^chat_template|^additional_special_tokens|^added_tokens.*|^normalizer"
                       r"|^pre_tokenizer|^decoder|^post_processor|^template)$", re.IGNORECASE)
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "layers_per_block")
MAX_LAYERS = 512  # a config asking for more is refused before anything is built (building it is the attack)
MAX_JSON_BYTES = 64 << 20
COVERAGE = 0.98  # the checkpoint must hold at least this share of the tensors the architecture saves
# No real tokenizer has a longer vocabulary entry (the longest are whitespace runs and markup of a few dozen
# characters); a 2,000,000-character one makes every generated token a 2 MB string.
MAX_TOKEN_CHARS = 1024
MAX_FILES = 200  # files taken from one repository in public mode (SD 2.1 needs ~20, sharded 7B LLMs ~10)


@dataclass(frozen=True)
class HubPlan:
    """What will be downloaded from one pinned commit, and why it may be."""

    model_id: str
    commit: str
    files: tuple[str, ...]
    sizes: dict[str, int]
    weight_files: tuple[str, ...]
    gated: bool

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.get(f) or 0 for f in self.files)


def _mb(size: float) -> str:
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size / 1e3:,.0f} kB"


def choose_files(siblings: dict[str, int | None], pipeline: bool, public: bool) -> tuple[list[str], list[str]]:
    """(files, weight files) to take from a repository listing ``{path: size}``. Top level only (a pipeline: its
    component folders one level down), never code; safetensors where the repository has them."""
    def depth_ok(name: str) -> bool:
        return name.count("/") == (1 if pipeline and "/" in name else 0)

    candidates = [f for f in siblings if depth_ok(f) and not f.startswith(".")
                  and f.endswith(PIPELINE_COMPONENT_DATA if pipeline else DATA_SUFFIXES)]
    if pipeline:
        # Each component's plain weights: no fp16/ema/non_ema variants (one "." in the name), safetensors first.
        plain = [f for f in candidates if "/" in f and f.endswith(".safetensors") and f.count(".") == 1]
        weights = plain or ([] if public else [f for f in candidates if "/" in f and f.endswith(".bin")
                                               and f.count(".") == 1])
    else:
        safetensors = [f for f in candidates if f.endswith(".safetensors")]
        weights = safetensors or ([] if public else [f for f in candidates if f.endswith(".bin")])
    data = [f for f in candidates if not f.endswith((".safetensors", ".bin"))]
    return sorted(set(data + weights)), sorted(weights)


def plan_download(api, model_id: str, token: str | bool | None, pipeline: bool,
                  limits: Any | None) -> HubPlan:
    """Read the repository's listing at its current commit and decide what to fetch (``limits``: public mode's
    `PublicLimits`, or None for a local user's own hub id)."""
    info = api.model_info(model_id, files_metadata=True, token=token)
    commit = info.sha
    if not commit or not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise ArenaError(f"The Hugging Face Hub gave no commit for '{model_id}', so this server cannot pin it.")
    siblings = {s.rfilename: s.size for s in info.siblings or []}
    if pipeline and "model_index.json" not in siblings:
        raise ArenaError(f"'{model_id}' has no model_index.json: give a diffusers pipeline repository.")
    if not pipeline and "config.json" not in siblings:
        raise ArenaError(f"'{model_id}' has no config.json at its top level: give a transformers model repository.")
    files, weights = choose_files(siblings, pipeline, public=limits is not None)
    _no_nested_pipeline(files, model_id)
    if not weights:
        raise ArenaError(f"'{model_id}' has no " + ("safetensors weights: this public server loads no pickled "
                                                      "(.bin) checkpoints." if limits is not None else
                                                      "weight files at its top level (safetensors or .bin)."))
    sizes = {f: siblings[f] for f in files}
    if limits is not None and len(files) > MAX_FILES:
        raise ArenaError(f"'{model_id}' has {len(files)} files to fetch; this public server takes up to {MAX_FILES}.")
    if limits is not None:
        unknown = [f for f in files if sizes[f] is None]
        if unknown:
            raise ArenaError(f"The Hub gives no size for {unknown[0]} in '{model_id}', so this public server does "
                             "not download it.")
        extra = sum(sizes[f] for f in files if f not in weights)
        cap = limits.max_extra_mb * 1e6
        if extra > cap:
            biggest = max((f for f in files if f not in weights), key=lambda f: sizes[f])
            raise ArenaError(f"'{model_id}' has {_mb(extra)} of files besides its weights ({biggest}: "
                             f"{_mb(sizes[biggest])}); this public server takes up to {_mb(cap)}.")
        weight_bytes = sum(sizes[f] for f in weights)
        weight_cap = limits.max_parameters * 4 * 1.02 + 1e6  # fp32 at the parameter cap
        if weight_bytes > weight_cap:
            raise ArenaError(f"'{model_id}' has {_mb(weight_bytes)} of weights; this public server downloads up "
                             f"to {_mb(weight_cap)} (fp32 at {limits.max_parameters / 1e9:g}B parameters).")
    return HubPlan(model_id=model_id, commit=commit, files=tuple(files), sizes=sizes, weight_files=tuple(weights),
                   gated=bool(getattr(info, "gated", False)))


# --- references inside the snapshot ---------------------------------------------------------------------------
def _outside(value: str) -> bool:
    """A string that would lead a loader out of the snapshot: absolute, home-relative, a drive, or climbing."""
    text = value.strip()
    if "\x00" in text or text.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", text):
        return True
    return ".." in re.split(r"[\\/]", text) and ("/" in text or "\\" in text or text == "..")


def _names_inside(value: str, files: set[str], base: str) -> bool:
    """``value`` names one of the snapshot's files, relative to the snapshot or to the JSON file's folder."""
    name = PurePosixPath(value.strip().replace("\\", "/"))
    if not value.strip() or _outside(value) or name.is_absolute():
        return False
    return str(name) in files or str(PurePosixPath(base) / name) in files


def reference_problems(data: Any, files: set[str], base: str = "", key: str = "", where: str = "") -> list[str]:
    """Each place in a parsed JSON value that names a file outside the snapshot (``files``: its relative paths;
    ``base``: the JSON file's folder). Pure: unit-tested without a hub."""
    problems: list[str] = []
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(k, str) and k not in IGNORED_KEYS and isinstance(v, (dict, list, str)):
                problems += reference_problems(v, files, base, k, f"{where}.{k}" if where else k)
    elif isinstance(data, list):  # every item: the file's size is capped (MAX_JSON_BYTES), not the list's length
        for i, v in enumerate(data):
            if isinstance(v, (dict, list, str)):
                problems += reference_problems(v, files, base, key, f"{where}[{i}]")
    elif isinstance(data, str):
        if key and TEXT_KEYS.search(key) and not FILE_KEY.search(key):
            return problems
        if key and FILE_KEY.search(key):
            if data.strip() and not _names_inside(data, files, base):
                problems.append(f"{where} names '{data[:80]}', which is not a file of this repository")
        elif _outside(data):
            problems.append(f"{where} is the path '{data[:80]}'")
    return problems


def snapshot_files(root: Path) -> set[str]:
    """The snapshot's files as relative paths (symlinks into the Hub cache's blobs count as files)."""
    out = set()
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            out.add(str(Path(dirpath, name).relative_to(root)).replace(os.sep, "/"))
    return out


def _no_nested_pipeline(files, model_id: str) -> None:
    """A model_index.json below the top level is a pipeline inside the pipeline: diffusers would import what it
    names, past every check of the top-level one."""
    nested = sorted(f for f in files if "/" in f and PurePosixPath(f).name == "model_index.json")
    if nested:
        raise ArenaError(f"'{model_id}' has a pipeline inside its pipeline ({nested[0]}); this server takes one "
                         "model_index.json, at the top level.")


def _token_entries(data: Any, name: str):
    """(kind, id, text) for each vocabulary entry a tokenizer file holds: tokenizer.json's vocabulary (a dict of
    token -> id, or Unigram's [piece, score] list), added tokens and decoder strings; vocab.json's keys; a
    tokenizer config's special and added tokens (transformers adds those missing to the vocabulary)."""
    if not isinstance(data, dict):
        return
    if name == "tokenizer.json":
        model = data.get("model")
        vocab = model.get("vocab") if isinstance(model, dict) else None
        if isinstance(vocab, dict):
            yield from (("vocabulary entry", i, token) for token, i in vocab.items())
        elif isinstance(vocab, list):
            yield from (("vocabulary entry", i, item[0]) for i, item in enumerate(vocab)
                        if isinstance(item, list) and item)
        for token in data.get("added_tokens") or []:
            if isinstance(token, dict):
                yield "added token", token.get("id"), token.get("content")
        stack = [data.get("decoder")]  # a decoder's Replace content is written out with every token
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                yield "decoder string", None, item
            elif isinstance(item, (dict, list)):
                stack += item.values() if isinstance(item, dict) else item
    elif name == "vocab.json":
        yield from (("vocabulary entry", i, token) for token, i in data.items())
    elif name in ("tokenizer_config.json", "special_tokens_map.json"):
        decoder = data.get("added_tokens_decoder")
        for i, token in (decoder.items() if isinstance(decoder, dict) else ()):
            yield "added token", i, token.get("content") if isinstance(token, dict) else token
        for key, value in data.items():
            if key.endswith("_token") or key in ("additional_special_tokens", "extra_special_tokens"):
                values = value.values() if isinstance(value, dict) and "content" not in value else \
                    value if isinstance(value, list) else [value]
                for item in values:
                    yield key, None, item.get("content") if isinstance(item, dict) else item


def _long_token(data: Any, rel: str, model_id: str) -> None:
    for kind, ident, text in _token_entries(data, PurePosixPath(rel).name):
        if isinstance(text, str) and len(text) > MAX_TOKEN_CHARS:
            label = kind if ident is None else f"{kind} {str(ident)[:20]}"
            raise ArenaError(f"'{model_id}': {rel}'s {label} is {len(text):,} characters long; this public server "
                             f"takes tokens of up to {MAX_TOKEN_CHARS:,} characters.")


def check_references(root: Path, model_id: str, public: bool) -> None:
    """Refuse a snapshot whose JSON files name a file outside it, or that holds a pipeline below its top level (and,
    in public mode, custom code, a pre-quantized checkpoint or a vocabulary entry longer than ``MAX_TOKEN_CHARS``).
    ``tokenizer.json`` is data for the Rust tokenizers library: parsed, its vocabulary's lengths checked."""
    root = Path(root)
    files = snapshot_files(root)
    _no_nested_pipeline(files, model_id)
    for rel in sorted(f for f in files if f.endswith(".json")):
        path = root / rel
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ArenaError(f"'{model_id}': {rel} is larger than {_mb(MAX_JSON_BYTES)}, which no config needs.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if public:
                _long_token(data, rel, model_id)
            if PurePosixPath(rel).name == "tokenizer.json":
                continue
            problems = reference_problems(data, files, str(PurePosixPath(rel).parent) if "/" in rel else "")
        except RecursionError as exc:
            raise ArenaError(f"'{model_id}': {rel} is nested deeper than any config needs.") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArenaError(f"'{model_id}': {rel} is not valid JSON ({type(exc).__name__}).") from exc
        if problems:
            raise ArenaError(f"'{model_id}' is refused: in {rel}, {problems[0]}. A repository's files may only "
                             "name files of the same repository.")
        if public and isinstance(data, dict) and "auto_map" in data:
            raise ArenaError(f"'{model_id}' needs its own code ({rel} has auto_map): this public server runs no "
                             "code from a repository.")
        if public and rel.endswith("config.json") and _holds_key(data, "quantization_config"):
            raise ArenaError(f"'{model_id}': {rel} has a quantization_config; this public server loads no "
                             "pre-quantized checkpoints (their loaders build objects from the repository's JSON).")
        chosen = next((key for key in KERNEL_KEYS if public and rel.endswith("config.json")
                       and _holds_key(data, key)), None)
        if chosen:
            raise ArenaError(f"'{model_id}': {rel} sets {chosen}; this public server picks how a model computes "
                             "itself (transformers 5 fetches and imports a kernel a config names from the Hub).")
    for rel in sorted(f for f in files if PurePosixPath(f).name == "vocab.txt") if public else ():
        for i, line in enumerate((root / rel).read_text(encoding="utf-8", errors="replace").splitlines()):
            if len(line) > MAX_TOKEN_CHARS:
                raise ArenaError(f"'{model_id}': {rel}'s vocabulary entry {i} is {len(line):,} characters "
                                 f"long; this public server takes tokens of up to {MAX_TOKEN_CHARS:,} characters.")


# transformers 5 reads how to compute attention and MoE experts from a config, and a name there may be a Hub
# repository of compiled kernels (``kernels-community/...``, or a fallback for flash_attention_2) that it downloads
# and imports: code from outside the repository, chosen by the repository.
KERNEL_KEYS = ("attn_implementation", "_attn_implementation", "experts_implementation", "_experts_implementation")


def _holds_key(data: Any, key: str, depth: int = 0) -> bool:
    """``key`` anywhere in a config's objects (a sub-config such as ``text_config`` counts too)."""
    if depth > 64:
        return False
    if isinstance(data, dict):
        return key in data or any(_holds_key(v, key, depth + 1) for v in data.values())
    return isinstance(data, list) and any(_holds_key(v, key, depth + 1) for v in data)


def check_tokenizer_kind(root: Path, model_id: str) -> None:
    """Public mode: tokenizer classes with a fast variant only (``tokenizer_class`` absent, or one backed by the Rust
    tokenizers library). A slow-only class (ProphetNet, XLM...) is the kind that reads vocabulary files by the paths
    its config gives; the reference check already keeps those inside the snapshot, this keeps the kinds known.
    transformers 5 has one class per tokenizer (``XTokenizerFast`` is an alias of ``XTokenizer``): a fast one derives
    from ``TokenizersBackend`` (``PreTrainedTokenizerFast`` is its alias), a slow-only one from ``PythonBackend``."""
    from transformers import PreTrainedTokenizerFast
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    for config_path in [Path(root) / "tokenizer_config.json", *Path(root).glob("*/tokenizer_config.json")]:
        if not config_path.is_file():
            continue
        data = json.loads(config_path.read_text())
        name = data.get("tokenizer_class") if isinstance(data, dict) else None
        if not name:
            continue
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,80}", name):
            raise ArenaError(f"'{model_id}' names a tokenizer class that is not a class name.")
        fast = name if name.endswith("Fast") else f"{name}Fast"
        found = tokenizer_class_from_name(fast)
        if not (isinstance(found, type) and issubclass(found, PreTrainedTokenizerFast)):
            raise ArenaError(f"'{model_id}' asks for the tokenizer class {name}, which has no fast variant: this "
                             "public server loads tokenizers with a fast (tokenizer.json) variant only.")


# --- size from the architecture ---------------------------------------------------------------------------------
def _layer_bomb(config: dict[str, Any], where: str, model_id: str) -> None:
    for key in LAYER_KEYS:
        value = config.get(key)
        if isinstance(value, int) and value > MAX_LAYERS:
            raise ArenaError(f"'{model_id}': {where} asks for {key}={value}; this public server builds models of up "
                             f"to {MAX_LAYERS} layers.")
    for value in config.values():
        if isinstance(value, dict):
            _layer_bomb(value, where, model_id)


@dataclass(frozen=True)
class Architecture:
    """Two counts of what the configs build. ``size``: parameters plus every buffer, in fp32-parameter equivalents
    (4 bytes): buffers are memory a load allocates too (GPT-Neo keeps a max_position_embeddings-square mask per layer,
    ~1 MB of weights can ask for 275 GB of it; GPT-2 did up to transformers 4), so the cap is on this. ``saved``:
    parameters plus persistent buffers, the tensors a complete checkpoint holds, so the coverage check is on this
    (non-persistent buffers, GPT-Neo's masks or rotary inv_freq, are never saved: GPT-Neo 125M counts 137.8M with
    them and saves 125.2M)."""

    size: int
    saved: int

    def __add__(self, other: Architecture) -> Architecture:
        return Architecture(self.size + other.size, self.saved + other.saved)


def _count(module) -> Architecture:
    parameters = sum(p.numel() for p in module.parameters())  # tied weights once, as a checkpoint saves them
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    seen, persistent = set(), 0
    for sub in module.modules():
        for name, buffer in sub._buffers.items():
            if buffer is not None and name not in sub._non_persistent_buffers_set and id(buffer) not in seen:
                seen.add(id(buffer))
                persistent += buffer.numel()
    return Architecture(size=parameters + -(-buffers // 4), saved=parameters + persistent)


MODEL_BASES = (("diffusers", "ModelMixin"), ("transformers", "PreTrainedModel"))
# What a pipeline's components may be: never a pipeline (DiffusionPipeline), which loads its own model_index.json.
COMPONENT_BASES = (*MODEL_BASES, ("diffusers", "SchedulerMixin"), ("transformers", "PreTrainedTokenizerBase"),
                   ("transformers", "ProcessorMixin"), ("transformers", "FeatureExtractionMixin"),
                   ("transformers", "ImageProcessingMixin"))


def _bases(names) -> tuple[type, ...]:
    """The classes of ``names`` that the installed libraries have (a name a version lacks is left out)."""
    import importlib

    found = (getattr(importlib.import_module(library), name, None) for library, name in names)
    return tuple(cls for cls in found if isinstance(cls, type))


def architecture_parameters(root: Path, model_id: str, pipeline: bool) -> Architecture:
    """What the configs describe, counted on models built on the meta device (nothing is allocated). Public mode
    only: a pipeline's model component without a config.json is refused, as it could not be counted."""
    import torch
    from accelerate import init_empty_weights

    root = Path(root)
    if not pipeline:
        config = json.loads((root / "config.json").read_text())
        _layer_bomb(config, "config.json", model_id)
        from transformers import AutoConfig, AutoModelForCausalLM

        try:
            with torch.device("meta"):
                return _count(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(root)))
        except Exception as exc:  # noqa: BLE001 - an unknown or broken architecture is one sentence
            raise ArenaError(f"'{model_id}': its config.json does not describe a causal language model this "
                             f"server knows ({type(exc).__name__}: {str(exc)[:120]}).") from exc
    index = json.loads((root / "model_index.json").read_text())
    check_pipeline_index(index, model_id)
    models = _bases(MODEL_BASES)
    total = Architecture(0, 0)
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[0] is None:
            continue
        library, class_name = spec
        folder = root / component
        module = __import__(library)  # diffusers or transformers: check_pipeline_index
        cls = getattr(module, str(class_name), None)
        is_model = isinstance(cls, type) and issubclass(cls, models)
        if not (folder / "config.json").is_file():
            if is_model:
                raise ArenaError(f"'{model_id}': its {component} is a {class_name} model without a "
                                 f"{component}/config.json, so this public server cannot count its parameters.")
            continue
        config = json.loads((folder / "config.json").read_text())
        _layer_bomb(config, f"{component}/config.json", model_id)
        if not is_model:
            raise ArenaError(f"'{model_id}': {component} names the class {str(class_name)[:60]}, which is not a "
                             f"{library} model.")
        try:
            with init_empty_weights():
                if library == "diffusers":
                    model = cls.from_config(cls.load_config(folder))
                else:
                    from transformers import AutoConfig

                    model = cls._from_config(AutoConfig.from_pretrained(folder))
        except Exception as exc:  # noqa: BLE001
            raise ArenaError(f"'{model_id}': {component}/config.json does not build a {class_name} "
                             f"({type(exc).__name__}: {str(exc)[:120]}).") from exc
        total += _count(model)
    return total


PIPELINE_LIBRARIES = ("diffusers", "transformers")
MAX_TRAIN_TIMESTEPS = 10_000


def check_pipeline_index(index: Any, model_id: str) -> None:
    """A pipeline's model_index.json names libraries and classes that diffusers imports by name: only diffusers and
    transformers, classes that exist there, a ``_class_name`` that is a diffusers pipeline. Anything else would be
    an import of any installed module, chosen by the repository."""
    import diffusers
    import transformers

    if not isinstance(index, dict):
        raise ArenaError(f"'{model_id}': model_index.json is not an object.")
    components = _bases(COMPONENT_BASES)
    pipeline = getattr(diffusers, str(index.get("_class_name", "")), None)
    if not (isinstance(pipeline, type) and issubclass(pipeline, diffusers.DiffusionPipeline)):
        raise ArenaError(f"'{model_id}': model_index.json names the pipeline class "
                         f"{str(index.get('_class_name'))[:60]!r}, which is not a diffusers pipeline.")
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list):
            continue
        if len(spec) != 2 or spec == [None, None]:
            if spec != [None, None]:
                raise ArenaError(f"'{model_id}': model_index.json's {component[:40]} entry is not [library, class].")
            continue
        library, class_name = spec
        module = {"diffusers": diffusers, "transformers": transformers}.get(library)
        if module is None or not isinstance(class_name, str) or not isinstance(getattr(module, class_name, None),
                                                                               type):
            raise ArenaError(f"'{model_id}': model_index.json's {component[:40]} names {str(library)[:40]}."
                             f"{str(class_name)[:60]}; a pipeline's components come from "
                             f"{' or '.join(PIPELINE_LIBRARIES)} only.")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", component):  # a folder of the snapshot, by that name
            raise ArenaError(f"'{model_id}': model_index.json names a component {component[:40]!r}, which is not "
                             "a component name.")
        cls = getattr(module, class_name)
        if not issubclass(cls, components):
            why = ("a pipeline: a pipeline's components are models, schedulers, tokenizers and processors, never "
                   "pipelines") if issubclass(cls, diffusers.DiffusionPipeline) else \
                "not a model, scheduler, tokenizer or processor class"
            raise ArenaError(f"'{model_id}': model_index.json's {component} names {library}.{class_name[:60]}, "
                             f"which is {why}.")


def check_scheduler(config: Any, model_id: str) -> None:
    """A scheduler config is turned into an object by the class name it holds: a diffusers scheduler only, with a
    sane number of training timesteps (its arrays are that long)."""
    import diffusers

    if not isinstance(config, dict):
        raise ArenaError(f"'{model_id}': scheduler_config.json is not an object.")
    cls = getattr(diffusers, str(config.get("_class_name", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise ArenaError(f"'{model_id}': scheduler_config.json names {str(config.get('_class_name'))[:60]!r}, "
                         "which is not a diffusers scheduler.")
    steps = config.get("num_train_timesteps", 1000)
    betas = config.get("trained_betas") or []
    if not isinstance(steps, int) or not 1 <= steps <= MAX_TRAIN_TIMESTEPS or len(betas) > MAX_TRAIN_TIMESTEPS:
        raise ArenaError(f"'{model_id}': its scheduler asks for {steps} training timesteps; this server takes up "
                         f"to {MAX_TRAIN_TIMESTEPS:,}.")


def checkpoint_parameters(api, plan: HubPlan, token: str | bool | None) -> int:
    """Parameters the safetensors files hold, from their headers (HTTP range reads of the pinned commit).
    huggingface_hub reads the 8-byte length first and refuses a header over ``SAFETENSORS_MAX_HEADER_LENGTH``
    (25 MB) before asking for it; what it raises on a bogus header becomes one sentence here."""
    import struct

    from huggingface_hub import constants
    from huggingface_hub.errors import SafetensorsParsingError

    total = 0
    for name in plan.weight_files:
        if not name.endswith(".safetensors"):
            continue
        try:
            meta = api.parse_safetensors_file_metadata(plan.model_id, name, revision=plan.commit, token=token)
            total += int(sum(meta.parameter_count.values()))
        except (SafetensorsParsingError, struct.error, RecursionError, TypeError, ValueError, AttributeError,
                KeyError, IndexError) as exc:
            raise ArenaError(f"'{plan.model_id}': {name} has no safetensors header this server reads (a JSON table "
                             f"of its tensors, at most {constants.SAFETENSORS_MAX_HEADER_LENGTH:,} bytes).") from exc
    return total


def fetch(model_id: str, *, pipeline: bool, cache_dir: str | None, token: str | bool | None, limits: Any | None,
          progress: Callable, tqdm_class=None, api=None) -> tuple[Path, HubPlan]:
    """Plan, check and download ``model_id`` at one pinned commit; returns the snapshot folder. ``limits``: public
    mode's caps (sizes, architecture); None for a local user's own hub id (still pinned, still reference-checked)."""
    from huggingface_hub import HfApi, snapshot_download

    api = api or HfApi()
    plan = plan_download(api, model_id, token, pipeline, limits)
    if limits is not None:
        configs = [f for f in plan.files if f.endswith(".json")]
        progress(None, f"Checking {model_id}'s configuration (commit {plan.commit[:8]})", force=True)
        root = Path(snapshot_download(model_id, revision=plan.commit, allow_patterns=configs, cache_dir=cache_dir,
                                      token=token))
        check_references(root, model_id, public=True)
        architecture = architecture_parameters(root, model_id, pipeline)
        if architecture.size > limits.max_parameters:
            cap = human_count(limits.max_parameters)
            raise ArenaError(f"'{model_id}' has {human_count(architecture.size)} parameters (counted from its "
                             f"configuration); this public server takes models up to {cap}.")
        held = checkpoint_parameters(api, plan, token)
        if held < COVERAGE * architecture.saved:
            raise ArenaError(f"'{model_id}' is refused: its weights hold {human_count(held)} parameters but its "
                             f"configuration describes {human_count(architecture.saved)}; the rest would be random.")
    progress(0.0, f"Downloading {model_id} ({_mb(plan.total_bytes)}, commit {plan.commit[:8]})", force=True)
    root = Path(snapshot_download(model_id, revision=plan.commit, allow_patterns=list(plan.files),
                                  cache_dir=cache_dir, token=token, tqdm_class=tqdm_class))
    got = snapshot_files(root)
    extra = got - set(plan.files)
    if limits is not None and extra:
        raise ArenaError(f"'{model_id}': the download brought files that were not planned ({sorted(extra)[0]}).")
    check_references(root, model_id, public=limits is not None)  # a nested model_index.json too, in every mode
    if pipeline:  # diffusers imports what these name: in every mode
        check_pipeline_index(json.loads((root / "model_index.json").read_text()), model_id)
        if (root / "scheduler" / "scheduler_config.json").is_file():
            check_scheduler(json.loads((root / "scheduler" / "scheduler_config.json").read_text()), model_id)
    if limits is not None:
        check_tokenizer_kind(root, model_id)
    return root, plan

