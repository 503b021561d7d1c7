"""The contract every registered backend is held to (diffusers' tester-mixin idea; Polygraphy's lesson that a
backend without a shared test drifts).

A backend gets every test here by declaring a small class in tests/test_backend_contract.py:

    class TestOnnxRuntime(BackendContract):
        backend = "onnxruntime"
        cpu_spec = {"provider": "CPUExecutionProvider"}
        cuda_spec = {"provider": "CUDAExecutionProvider"}

The tests use the session's tiny Llama (built from a seeded config) and tiny Stable Diffusion pipeline, and the
session's artifact cache, so an export another test made is reused. What cannot run here (no GPU, no runtime) is
skipped with the backend's own reason; a meta-test fails when a registered backend has no class.
"""

from __future__ import annotations

import gc
import weakref
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from arena.preparing.cache import ArtifactCache, directory_fingerprint
from arena.registry import backend_class
from arena.running.environment import probe_environment
from arena.running.host import load_context
from arena.types import BackendSpec, PreparedImage, PreparedText
from backends.contract import SERVER_SIDE_KINDS, GenerationSettings, ImageSettings, OptionChoice

PROMPT = "My name is Arthur and I live in"
NEW_TOKENS = 12


@cache
def environment() -> dict[str, Any]:
    """This machine's facts, probed once per test session (in a child process, as the app does)."""
    return probe_environment()


def prepared_text(model_dir: Path) -> PreparedText:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer(PROMPT)["input_ids"]
    return PreparedText(model_dir=str(model_dir), model_name="tiny-llama", source="local", rendered_prompt="",
                        prompt_token_ids=tuple(ids), eos_token_ids=(tokenizer.eos_token_id,),
                        pad_token_id=tokenizer.pad_token_id, context_length=128,
                        fingerprint=directory_fingerprint(model_dir))


def prepared_image(pipeline_dir: Path) -> PreparedImage:
    import json

    scheduler = json.loads((pipeline_dir / "scheduler" / "scheduler_config.json").read_text())
    scheduler["_class_name"] = "EulerDiscreteScheduler"
    latents = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    return PreparedImage(model_dir=str(pipeline_dir), model_name="tiny-sd", source="local",
                         fingerprint=directory_fingerprint(pipeline_dir), height=32, width=32, latents=latents,
                         scheduler=json.dumps(scheduler))


@cache
def reference_outputs(model_dir: Path) -> tuple[list[int], np.ndarray]:
    """Greedy ids and the prompt's logits from transformers itself: what every backend must reproduce."""
    import torch
    from transformers import AutoModelForCausalLM

    from backends.hf import hf_generate

    model = prepared_text(model_dir)
    reference = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    settings = GenerationSettings(NEW_TOKENS, model.eos_token_ids, model.pad_token_id, ignore_eos=True)
    ids = hf_generate(reference, list(model.prompt_token_ids), settings, lambda t: None)
    with torch.inference_mode():
        logits = reference(input_ids=torch.tensor([model.prompt_token_ids])).logits[0].float().numpy()
    return ids, logits


def held_objects(backend: Any) -> list[weakref.ref]:
    """Weak references to what a loaded backend holds (its model, sessions, engines), to see them freed."""
    refs = []
    for value in vars(backend).values():
        for item in (value.values() if isinstance(value, dict) else [value]):
            try:
                refs.append(weakref.ref(item))
            except TypeError:  # str, int, None, dict: not a model
                pass
    return refs


class BackendContract:
    """The shared tests. A subclass names its ``backend`` and the specs to run; the rest is the backend's own
    declaration (its Options, availability, label)."""

    backend: ClassVar[str]
    cpu_spec: ClassVar[dict[str, Any]] = {}  # options for the CPU run (a GPU-only backend: its only run)
    cuda_spec: ClassVar[dict[str, Any] | None] = None  # options for the GPU run; None: no GPU variant
    supports_image: ClassVar[bool] = True  # runs diffusion pipelines too
    gpu_only: ClassVar[bool] = False  # cannot run without a GPU (its CPU test is skipped with the reason)
    unavailable_env: ClassVar[dict[str, Any] | None] = {}  # facts where it cannot run (None: it always can)
    logits_atol: ClassVar[float] = 1e-3  # first-step logits against transformers' own, fp32
    # False: the backend runs no local model (a client of a model server): the tests that load the tiny models
    # here are skipped with ``local_model_skip``, and its own test file runs it against real or fake servers.
    local_model: ClassVar[bool] = True
    local_model_skip: ClassVar[str] = "it runs no local model (its own test file runs it against a server)"

    # --- helpers -----------------------------------------------------------------------------------------
    @classmethod
    def backend_cls(cls):
        return backend_class(cls.backend)

    @property
    def cls(self):
        return self.backend_cls()

    @classmethod
    def spec(cls, options: dict[str, Any]) -> BackendSpec:
        return BackendSpec(cls.backend, **options)

    @classmethod
    def skip_unless_runs(cls, spec: BackendSpec) -> None:
        if not cls.local_model:
            pytest.skip(f"{cls.backend}: {cls.local_model_skip}")
        problem = cls.backend_cls().check_spec(spec, environment())
        if problem:
            pytest.skip(f"{spec.label} cannot run here: {problem}")

    @classmethod
    def load(cls, model, spec: BackendSpec, cache_dir: Path):
        backend = cls.backend_cls()()
        ctx = load_context(ArtifactCache(cache_dir), lambda *a, **k: None)
        backend.load(model, spec, ctx)
        return backend, ctx

    @pytest.fixture(scope="class")
    @classmethod
    def loaded_text(cls, request, session_cache):
        """The backend loaded once per class with the tiny Llama on its CPU spec (built only where it runs)."""
        spec = cls.spec(cls.cpu_spec)
        cls.skip_unless_runs(spec)
        tiny_llama = request.getfixturevalue("tiny_llama")
        backend, ctx = cls.load(prepared_text(tiny_llama), spec, session_cache)
        yield backend, ctx
        backend.unload()

    # --- what it declares --------------------------------------------------------------------------------
    def test_options_are_well_formed_and_explain_what_is_missing(self):
        cls, env = self.cls, environment()
        assert cls.name == self.backend and cls.title and all(a == a.lower() for a in cls.aliases)
        fields = {info.name: info for info in cls.Options.fields_info()}
        for info in fields.values():
            assert info.name.isidentifier() and set(info.tasks) <= set(cls.tasks), info
            if info.kind == "choice":
                assert info.default in info.choices and set(info.gpu_only_values) <= set(info.choices), info
        whole = cls.availability(env)
        assert whole.ok or self.gpu_only, whole.sentence()
        options = cls.options(env)
        assert set(options) <= {n for n, i in fields.items() if i.kind == "choice"}
        for name, choices in options.items():
            assert choices and all(isinstance(c, OptionChoice) for c in choices)
            assert {c.value for c in choices} <= set(fields[name].choices)
            assert any(c.availability.ok for c in choices) or not whole.ok
            for choice in choices:
                if not choice.availability.ok:
                    assert choice.availability.reason.endswith((".", ")")), choice
        cpu = self.spec(self.cpu_spec)
        assert not any(cpu.get(n) in i.gpu_only_values for n, i in fields.items()) or self.gpu_only
        if whole.ok:
            assert cls.check_spec(cpu, env) is None
        else:  # the precise reason and the install command, never a silent absence
            problem = cls.check_spec(cpu, env)
            assert whole.install and whole.reason in problem and f"Install: `{whole.install}`" in problem

    def test_a_spec_reads_back_from_its_json_and_its_label(self):
        spec = self.spec(self.cpu_spec)
        data = spec.to_dict()
        assert data["backend"] == self.backend and data["label"] == spec.label
        assert spec.label.startswith(self.cls.title)
        assert BackendSpec.from_any(data) == spec and hash(BackendSpec.from_any(data)) == hash(spec)
        for alias in (self.backend, *self.cls.aliases):
            assert BackendSpec.from_any(alias.upper()).backend == self.backend
        with pytest.raises(ValueError, match=f"for {self.cls.title}; its options: "):
            BackendSpec.from_any({"backend": self.backend, "colour": "red"})
        for info in self.cls.Options.fields_info():
            if info.kind == "bool":  # the CLI and forms give strings
                assert BackendSpec.from_any({"backend": self.backend, info.name: "true"}).get(info.name) is True

    def test_server_side_options_are_refused_in_public_mode(self, monkeypatch):
        from arena.public.policy import ENDPOINTS_VARIABLE, Policy

        public = Policy(public=True)
        monkeypatch.setenv(ENDPOINTS_VARIABLE, "first=http://10.0.0.5:8000/v1,second=http://10.0.0.6:8000/v1")
        fields = self.cls.Options.fields_info()
        server_side = {i.name for i in fields if i.kind in SERVER_SIDE_KINDS}
        visitor = {k: v for k, v in self.cpu_spec.items() if k not in server_side}
        base = visitor | {i.name: "first" for i in fields if i.kind == "url"}  # what a visitor may pick
        assert public.refuse_spec(self.spec(base)) is None
        for info in fields:
            if info.kind in SERVER_SIDE_KINDS:
                problem = public.refuse_spec(self.spec({**base, info.name: "/srv/somewhere"}))
                assert problem and info.name in problem and problem.endswith("."), problem
            if info.kind == "url":  # an operator-configured endpoint, by name only
                assert public.refuse_spec(self.spec({**base, info.name: "second"})) is None
                raw = public.refuse_spec(self.spec({**base, info.name: "http://10.0.0.6:8000/v1"}))
                assert raw and "by name (first, second)" in raw, raw
        monkeypatch.setenv(ENDPOINTS_VARIABLE, "only=http://10.0.0.5:8000/v1")
        assert public.refuse_spec(self.spec(visitor)) is None

    def test_unavailable_says_why_and_how_to_install(self):
        if self.unavailable_env is None:
            pytest.skip(f"{self.backend} declares that it can always run")
        whole = self.cls.availability(self.unavailable_env)
        assert not whole.ok and whole.reason.endswith((".", ")")) and whole.install, whole
        problem = self.cls.check_spec(self.spec(self.cpu_spec), self.unavailable_env)
        assert whole.reason in problem and f"Install: `{whole.install}`" in problem

    # --- what it does ------------------------------------------------------------------------------------
    def test_generates_greedily_like_transformers_and_reports_each_token(self, loaded_text, request):
        tiny_llama = request.getfixturevalue("tiny_llama")  # built only where the backend runs
        backend, ctx = loaded_text
        assert set(ctx.stage_seconds) >= {"load"}
        model = prepared_text(tiny_llama)
        settings = GenerationSettings(max_new_tokens=NEW_TOKENS, eos_token_ids=model.eos_token_ids,
                                      pad_token_id=model.pad_token_id, ignore_eos=True)
        seen: list[int] = []
        ids = backend.generate_text(list(model.prompt_token_ids), settings, seen.append)
        assert ids == seen and len(ids) == NEW_TOKENS
        assert backend.generate_text(list(model.prompt_token_ids), settings, lambda t: None) == ids
        assert ids == reference_outputs(tiny_llama)[0]
        info = backend.runtime_info()
        assert info["provider"] and info["artifact_dir"]

    def test_forward_logits_match_transformers(self, loaded_text, request):
        tiny_llama = request.getfixturevalue("tiny_llama")  # built only where the backend runs
        backend, _ = loaded_text
        model = prepared_text(tiny_llama)
        logits = backend.forward_logits(list(model.prompt_token_ids))
        reference = reference_outputs(tiny_llama)[1]
        assert logits.shape == reference.shape and logits.dtype == np.float32
        np.testing.assert_allclose(logits, reference, atol=self.logits_atol, rtol=0)

    def test_unload_frees_the_model(self, request, session_cache):
        spec = self.spec(self.cpu_spec)
        self.skip_unless_runs(spec)
        tiny_llama = request.getfixturevalue("tiny_llama")
        backend, _ = self.load(prepared_text(tiny_llama), spec, session_cache)
        held = held_objects(backend)
        assert held, "a loaded backend holds its model in its attributes"
        backend.unload()
        gc.collect()
        alive = [ref() for ref in held if ref() is not None]
        assert not alive, f"still referenced after unload: {[type(o).__name__ for o in alive]}"

    def test_draws_an_image_with_phase_and_step_marks(self, request, session_cache):
        if not self.supports_image:
            pytest.skip(f"{self.backend} runs text only")
        spec = self.spec(self.cpu_spec)
        self.skip_unless_runs(spec)
        tiny_sd = request.getfixturevalue("tiny_sd")
        model = prepared_image(tiny_sd)
        backend, _ = self.load(model, spec, session_cache)
        phases, steps = [], []
        try:
            image = backend.generate_image(model, ImageSettings("a red circle", "", steps=3, guidance_scale=4.0),
                                           phases.append, steps.append)
        finally:
            backend.unload()
        assert phases == ["text_encoder", "unet", "vae", "done"] and steps == [0, 1, 2]
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and image.std() > 0

    @pytest.mark.gpu
    def test_cuda_generation_matches_cpu(self, request, tmp_path):
        if self.cuda_spec is None:
            pytest.skip(f"{self.backend} has no GPU variant")
        cuda = self.spec(self.cuda_spec)
        problem = self.cls.check_spec(cuda, environment())
        if problem:
            pytest.skip(f"needs CUDA: {problem}")
        model = prepared_text(request.getfixturevalue("tiny_llama"))
        settings = GenerationSettings(NEW_TOKENS, model.eos_token_ids, model.pad_token_id, ignore_eos=True)
        reference = BackendSpec("pytorch") if self.gpu_only else self.spec(self.cpu_spec)
        outputs = []
        for spec in (reference, cuda):
            backend = backend_class(spec.backend)()
            backend.load(model, spec, load_context(ArtifactCache(tmp_path), lambda *a, **k: None))
            outputs.append(backend.generate_text(list(model.prompt_token_ids), settings, lambda t: None))
            backend.unload()
        assert outputs[0] == outputs[1]
