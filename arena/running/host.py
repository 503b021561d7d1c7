"""The object a backend worker process hosts: it owns one backend, keeps its model loaded between runs, and
does all the timing (warm-up, repeats, per-token stamps) so that backends never time themselves."""

from __future__ import annotations

import dataclasses
import importlib
import os
import statistics
import sys
import time
from typing import Any

from arena.preparing.cache import ArtifactCache
from arena.registry import backend_class, register
from arena.running.resources import thread_count
from arena.running.workers import run_isolated
from arena.types import (
    BackendImageResult,
    BackendSpec,
    BackendTextResult,
    ImageRunRequest,
    ImageTimings,
    LoadInfo,
    PreparedImage,
    PreparedText,
    TextRunRequest,
    TextTimings,
)
from backends.contract import GenerationSettings, ImageSettings, LoadContext

# One sequence's next-token distributions (positions x vocab, float32), as the reference's worker writes them for
# the candidates: a longer one is kept compact instead (SmolLM2's 49k vocabulary: past 1,365 positions).
DISTRIBUTION_MAX_BYTES = 256 << 20
ROW_CHUNK = 256  # positions whose log-softmax is taken at once (a long sequence's logits are not copied whole)
# Where did it break: the units' outputs over the prompt cross to the app, where they are compared.
LAYER_OUTPUTS_MAX_BYTES = 256 << 20
STREAM_INTERVAL_S = 0.25  # how often a generating backend's answer so far reaches the page
STREAM_TAIL_CHARS = 4000  # a streamed answer so far is its last characters (the page shows the whole at the end)
# An answer is at most this many characters a generated token (and a floor): real tokens average under 10, so only
# a tokenizer with giant vocabulary entries reaches it (a 2 MB token took the app to 12 GB in streamed copies).
ANSWER_CHARS_PER_TOKEN = 64
ANSWER_CHARS_FLOOR = 4096


def answer_char_cap(max_new_tokens: int) -> int:
    return ANSWER_CHARS_FLOOR + ANSWER_CHARS_PER_TOKEN * max(0, int(max_new_tokens))


def decode_bounded(tokenizer: Any, ids: list[int], max_chars: int) -> tuple[str, bool]:
    """``ids`` decoded, at most ``max_chars`` characters, and whether it was cut. The tokens' own strings bound
    what decoding makes, so a giant vocabulary entry is never decoded whole: only the ids whose pieces fit."""
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)  # (a bare decoder has none: decoded whole)
    pieces = convert(list(ids)) if convert is not None else []
    lengths = [len(p) if isinstance(p, str) else 0 for p in pieces]
    if convert is None or sum(lengths) <= 2 * max_chars:
        text = tokenizer.decode(list(ids), skip_special_tokens=True)
        return (text, False) if len(text) <= max_chars else (text[:max_chars], True)
    total, keep = 0, 0
    for keep, length in enumerate(lengths):  # noqa: B007
        total += length
        if total > max_chars:
            break
    text = tokenizer.decode(list(ids[:keep]), skip_special_tokens=True)[:max_chars]
    return text, True


def load_context(cache: ArtifactCache, progress, secrets: dict[str, str] | None = None) -> LoadContext:
    """What a backend loads with: the artifact cache, progress, conversions in isolated processes (their output
    goes to this worker's log), and what the server knows that a backend must not import the core for: its
    secrets (given), the model servers its operator configured, the files it ships for the embedded model, the
    CPU budget in threads."""
    from arena.public.policy import configured_endpoints

    def isolated(target: str, *args: Any, description: str, progress=progress) -> Any:
        return run_isolated(target, *args, description=description, progress=progress,
                            log_path=os.environ.get("ARENA_WORKER_LOG"))

    def embedded(model: Any, kind: str, progress=progress) -> Any:
        from arena.preparing.prepare import embedded_model_file

        return embedded_model_file(model, kind, cache.root, progress)

    return LoadContext(cache=cache, progress=progress, isolated=isolated, secrets=dict(secrets or {}),
                       endpoints=configured_endpoints(), embedded=embedded, threads=thread_count())


def summarize_generation(start: float, stamps: list[float], end: float) -> dict[str, Any]:
    """Turn one generation's clock readings into TTFT, total and rates."""
    total = end - start
    n = len(stamps)
    ttft = (stamps[0] - start) if n else total
    decode = (end - stamps[0]) if n else 0.0
    return {
        "ttft_s": ttft,
        "total_s": total,
        "tokens_per_s": n / total if total > 0 else 0.0,
        "decode_tokens_per_s": (n - 1) / decode if n > 1 and decode > 0 else 0.0,
        "token_times_s": tuple(s - start for s in stamps),
    }


def combine_repeats(runs: list[dict[str, Any]]) -> TextTimings:
    """The median run by total time stands for all; every total is kept for spread."""
    totals = [r["total_s"] for r in runs]
    median_total = statistics.median(totals)
    chosen = min(runs, key=lambda r: abs(r["total_s"] - median_total))
    return TextTimings(
        ttft_s=statistics.median(r["ttft_s"] for r in runs),
        total_s=median_total,
        tokens_per_s=statistics.median(r["tokens_per_s"] for r in runs),
        decode_tokens_per_s=statistics.median(r["decode_tokens_per_s"] for r in runs),
        token_times_s=chosen["token_times_s"],
        repeats=len(runs),
        total_s_all=tuple(totals),
    )


class BackendHost:
    """Lives in a worker process; ``run_text`` is what the core calls through the pipe."""

    def __init__(self, backend: str, cache_dir: str, secrets: dict[str, str] | None = None):
        cls = backend_class(backend)
        self._secrets = dict(secrets or {})  # in memory only: this process's environment holds none
        if ":" in backend:  # an extra backend ("module:Class"): its specs must find it in this process too
            register(cls.name, backend)
        self.backend = cls()
        self.cache = ArtifactCache(cache_dir)
        self.loaded_key: tuple | None = None
        self.load_info: LoadInfo | None = None
        self._tokenizers: dict[str, Any] = {}

    def _ensure_loaded(self, prepared: PreparedText | PreparedImage, spec: BackendSpec, progress) -> LoadInfo:
        key = (prepared.task, prepared.model_dir, prepared.fingerprint, spec)
        if key == self.loaded_key and self.load_info is not None:
            # Nothing was exported or loaded for this run: an exporting backend's artifact came from the cache.
            cached = None if self.load_info.export_cached is None else True
            return LoadInfo(export_s=0.0, export_cached=cached, load_s=0.0,
                            provider=self.load_info.provider, artifact_dir=self.load_info.artifact_dir,
                            memory_mb=_rss_mb(), gpu_memory_mb=_gpu_mb(), threads=self.load_info.threads,
                            precision=self.load_info.precision,
                            notes=self.load_info.notes + ("model already loaded",))
        if self.loaded_key is not None:
            self.backend.unload()
            self.loaded_key, self.load_info = None, None
        ctx = load_context(self.cache, progress, self._secrets)
        self.backend.load(prepared, spec, ctx)
        info = self.backend.runtime_info()
        self.load_info = LoadInfo(
            export_s=ctx.stage_seconds.get("export", 0.0),
            export_cached=info.get("export_cached"),
            load_s=ctx.stage_seconds.get("load", 0.0),
            engine_build_s=ctx.stage_seconds.get("engine_build", 0.0),
            compile_s=ctx.stage_seconds.get("compile", 0.0),
            provider=info.get("provider"),
            artifact_dir=info.get("artifact_dir"),
            memory_mb=_rss_mb(),
            gpu_memory_mb=_gpu_mb(),
            threads=info.get("threads"),
            precision=info.get("precision"),
            notes=tuple(ctx.notes),
        )
        self.loaded_key = key
        return self.load_info

    def _tokenizer(self, model_dir: str):
        if model_dir not in self._tokenizers:
            from transformers import AutoTokenizer

            self._tokenizers[model_dir] = AutoTokenizer.from_pretrained(model_dir)
        return self._tokenizers[model_dir]

    def run_text(self, prepared: PreparedText, spec: BackendSpec, request: TextRunRequest,
                 progress) -> BackendTextResult:
        """Load (if needed), warm up, time ``request.repeats`` greedy generations, decode the text."""
        load = self._ensure_loaded(prepared, spec, progress)
        settings = GenerationSettings(max_new_tokens=request.max_new_tokens,
                                      eos_token_ids=prepared.eos_token_ids, pad_token_id=prepared.pad_token_id,
                                      ignore_eos=request.ignore_eos, rendered_prompt=prepared.rendered_prompt,
                                      user_prompt=prepared.user_prompt, prompt_format=prepared.prompt_format)
        prompt = list(prepared.prompt_token_ids)
        label = spec.label
        for i in range(request.warmup):
            progress(None, f"{label}: warm-up {i + 1}/{request.warmup}", force=True)
            warm = dataclasses.replace(settings, max_new_tokens=min(2, settings.max_new_tokens))
            self.backend.generate_text(prompt, warm, lambda _t: None)
        runs, ids = [], []
        tokenizer = self._tokenizer(prepared.model_dir)
        cap = answer_char_cap(settings.max_new_tokens)
        for r in range(request.repeats):
            stamps: list[float] = []
            total = settings.max_new_tokens
            streamed: list[int] = []
            sent = [0.0]

            def on_token(token: int, stamps=stamps, r=r, total=total, streamed=streamed, sent=sent) -> None:
                stamps.append(time.perf_counter())
                description = f"{label}: token {len(stamps)}/{total}" + (
                    f" (run {r + 1}/{request.repeats})" if request.repeats > 1 else "")
                if r > 0:
                    progress(len(stamps) / total, description)
                    return
                # The first run streams its answer: the tokens so far, decoded every STREAM_INTERVAL_S (~0.1 ms
                # of decoding each time, inside the timed loop: under 0.1% of it).
                streamed.append(token)
                if stamps[-1] - sent[0] >= STREAM_INTERVAL_S:
                    sent[0] = stamps[-1]
                    try:  # best effort: a backend may report placeholders (a server's chunks) instead of ids
                        text, _cut = decode_bounded(tokenizer, [i for i in streamed if isinstance(i, int) and i >= 0],
                                                    cap)
                    except (OverflowError, TypeError, ValueError):
                        progress(len(stamps) / total, description)
                        return
                    if len(text) > STREAM_TAIL_CHARS:  # the page shows the end of what is being written
                        text = "…" + text[-STREAM_TAIL_CHARS:]
                    progress(len(stamps) / total, description, force=True,
                             partial={"text": text, "tokens": len(streamed), "of": total})

            if r == 0:  # until the first token: the prompt's prefill (minutes for a long prompt on a CPU)
                progress(0.0, f"{label}: prefilling {len(prompt):,} prompt tokens", force=True)
            start = time.perf_counter()
            ids = self.backend.generate_text(prompt, settings, on_token)
            end = time.perf_counter()
            runs.append(summarize_generation(start, stamps, end))
        text, cut = decode_bounded(tokenizer, list(ids), cap)
        run_notes = tuple(getattr(self.backend, "run_notes", ()) or ())  # what the backend says of this run
        if cut:
            run_notes += (f"answer shown up to {cap:,} characters: its {len(ids)} tokens decode to more (the "
                          "tokenizer has very long vocabulary entries); the verdict reads the token ids",)
        if run_notes:
            load = dataclasses.replace(load, notes=tuple(load.notes) + run_notes)
        try:  # not timed: the logits of the first generated position, for the comparison with the reference
            first_logits = self.backend.forward_logits(prompt)[-1]
        except NotImplementedError:
            first_logits = None
        return BackendTextResult(spec=spec, text=text, token_ids=tuple(ids), timings=combine_repeats(runs),
                                 load=load, first_logits=first_logits)

    def score_nll(self, prepared: PreparedText, spec: BackendSpec, outputs: list[list[int]],
                  progress) -> list[float | None]:
        """Mean negative log-likelihood per token (nats) of each output after the prompt, under this model."""
        import numpy as np

        self._ensure_loaded(prepared, spec, progress)
        prompt = list(prepared.prompt_token_ids)
        scores: list[float | None] = []
        for ids in outputs:
            if not ids:
                scores.append(None)
                continue
            logits = np.asarray(self.backend.forward_logits(prompt + list(ids)), np.float64)
            logits = logits[len(prompt) - 1:-1]
            logits -= logits.max(axis=1, keepdims=True)
            log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            scores.append(float(-log_probs[np.arange(len(ids)), ids].mean()))
        return scores

    def _next_token_log_probs(self, sequences: list[tuple[str, list[int], int]]):
        """Per sequence (name, ids, start): the log-softmax of the positions that predict ``ids[start:]`` (float32,
        positions x vocab) and those target tokens; one untimed forward pass each."""
        import numpy as np

        from arena.judging.verdicts import log_softmax

        out = []
        for name, ids, start in sequences:
            logits = self.backend.forward_logits(list(ids))[start - 1:len(ids) - 1]
            out.append((name, log_softmax(logits).astype(np.float32), np.asarray(ids[start:], np.int64)))
        return out

    def _vocabulary(self, sequences: list) -> int:
        return int(self.backend.forward_logits(list(sequences[0][1][:1])).shape[-1]) if sequences else 1

    @staticmethod
    def _compact(positions: int, vocabulary: int) -> bool:
        """Whether one sequence's distributions are kept compact (`arena.judging.verdicts.compact_log_probs`):
        whole, they would pass `DISTRIBUTION_MAX_BYTES` (SmolLM2's 49k vocabulary: over 1,365 positions)."""
        return positions * vocabulary * 4 > DISTRIBUTION_MAX_BYTES

    def _rows(self, ids: list[int], start: int):
        """The full pass's next-token logits over ``ids`` (those predicting ``ids[start:]``) and the targets."""
        import numpy as np

        logits = self.backend.forward_logits(list(ids))[start - 1:len(ids) - 1]
        return logits, np.asarray(ids[start:], np.int64)

    def quality_reference(self, prepared: PreparedText, spec: BackendSpec, sequences: list, scratch: str,
                          progress) -> dict[str, Any]:
        """The reference's next-token log-probabilities over the teacher-forced sequences, written to ``scratch``
        (one file each; the candidates' workers read them there, so no distribution crosses the app): whole
        (``.npy``, positions x vocab) or, for a long sequence, compact (``.npz``: the top-k and the target's), and
        its own figures: {"sequences": [(name, path, positions)], "self": figures}, or {"unavailable": why}."""
        import numpy as np

        from arena.judging.verdicts import compact_log_probs, log_softmax, per_position, summarize_positions

        self._ensure_loaded(prepared, spec, progress)
        progress(None, f"{spec.label}: teacher-forced reference distributions", force=True)
        written, figures = [], []
        try:
            vocabulary = self._vocabulary(sequences)
            for name, ids, start in sequences:
                if len(ids) <= start:
                    continue
                logits, targets = self._rows(list(ids), start)
                if self._compact(len(targets), vocabulary):
                    parts = [compact_log_probs(log_softmax(logits[a:a + ROW_CHUNK]), targets[a:a + ROW_CHUNK])
                             for a in range(0, len(targets), ROW_CHUNK)]
                    compact = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
                    path = os.path.join(scratch, f"reference-{name}.npz")
                    np.savez(path, **compact)
                    nll = -compact["target_lp"].astype(np.float64)
                    figures.append({"kl": np.zeros(len(nll)), "top1": np.ones(len(nll)), "nll_ref": nll,
                                    "nll_cand": nll})
                else:
                    lp = log_softmax(logits).astype(np.float32)
                    path = os.path.join(scratch, f"reference-{name}.npy")
                    np.save(path, lp)
                    figures.append(per_position(lp, lp, targets))
                del logits
                written.append((name, path, len(targets)))
        except NotImplementedError:
            return {"unavailable": "no logits"}
        pooled = summarize_positions({key: np.concatenate([f[key] for f in figures]) for key in figures[0]}) \
            if figures else {}
        pooled.pop("kl_positions", None)
        mine = {name: summarize_positions(f) for (name, _, _), f in zip(written, figures, strict=True)}
        return {"sequences": written, "self": pooled, "self_sequences": mine}

    def quality_against(self, prepared: PreparedText, spec: BackendSpec, sequences: list, reference: list,
                        progress, cached: dict[str, int] | None = None) -> dict[str, Any]:
        """This backend's teacher-forced quality against the reference's distributions (`quality_reference`'s
        files): mean KL, top-1 agreement and perplexity ratio over all positions, and per sequence. ``cached``
        {sequence name: steps}: that sequence's last steps also go through this backend's own KV cache (a prefill
        of the rest, then one token at a time, `Backend.cached_step_logits`), kept per sequence as "cached"
        ({"from_position", "kl_steps", "full_kl_steps", "seconds"}): a long context's decode path."""
        import numpy as np

        from arena.judging.verdicts import (
            compare_positions,
            load_distributions,
            log_softmax,
            slice_distributions,
            summarize_positions,
        )

        self._ensure_loaded(prepared, spec, progress)
        progress(None, f"{spec.label}: teacher-forced quality", force=True)
        start_clock = time.perf_counter()
        lengths = {name: (path, positions) for name, path, positions in reference}
        figures, per = [], {}
        try:
            for name, ids, begin in sequences:
                if name not in lengths:
                    continue
                path, positions = lengths[name]
                ids = list(ids)[:begin + positions]
                ref = load_distributions(path)
                logits, targets = self._rows(ids, begin)
                parts = [compare_positions(slice_distributions(ref, a, a + ROW_CHUNK),
                                           log_softmax(logits[a:a + ROW_CHUNK]), targets[a:a + ROW_CHUNK])
                         for a in range(0, len(targets), ROW_CHUNK)]
                del logits
                found = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
                figures.append(found)
                per[name] = summarize_positions(found)
                steps = min(int((cached or {}).get(name, 0)), len(targets) - 1)
                if steps > 0:
                    per[name]["cached"] = self._cached_tail(ids, begin, steps, ref, found, progress, spec)
        except NotImplementedError:
            return {"unavailable": "no logits"}
        if not figures:
            return {"unavailable": "no sequence to compare"}
        pooled = summarize_positions({key: np.concatenate([f[key] for f in figures]) for key in figures[0]})
        pooled.pop("kl_positions")  # positions of concatenated sequences mean nothing; each sequence keeps its own
        return pooled | {"sequences": per, "seconds": round(time.perf_counter() - start_clock, 3)}

    def _cached_tail(self, ids: list[int], begin: int, steps: int, reference: Any, full: dict, progress,
                     spec: BackendSpec) -> dict[str, Any]:
        """The last ``steps`` tokens of a teacher-forced sequence through this backend's own KV cache, after a
        prefill of the rest, against the reference's full pass (and this backend's own full pass) there."""
        import numpy as np

        from arena.judging.verdicts import compare_positions, log_softmax, slice_distributions

        progress(None, f"{spec.label}: the last {steps} positions through its KV cache", force=True)
        clock = time.perf_counter()
        split = len(ids) - steps  # the prefill; row r of the distributions predicts ids[begin + r]
        first_row = split - begin
        try:
            logits = np.asarray(self.backend.cached_step_logits(ids[:split], ids[split:]), np.float32)
        except NotImplementedError as exc:
            return {"unavailable": str(exc)}
        found = compare_positions(slice_distributions(reference, first_row, first_row + steps),
                                  log_softmax(logits), np.asarray(ids[split:], np.int64))
        return {"from_position": first_row, "prefill": split,
                "kl_steps": [float(f"{v:.4g}") for v in found["kl"]],
                "full_kl_steps": [float(f"{v:.4g}") for v in full["kl"][first_row:first_row + steps]],
                "top1": float(found["top1"].mean()), "seconds": round(time.perf_counter() - clock, 3)}

    def decode_against(self, prepared: PreparedText, spec: BackendSpec, answer: list[int], reference: Any,
                       progress) -> dict[str, Any]:
        """This backend's own cached decode path over its answer, against the reference's full pass over the same
        tokens (``reference``: the file of its next-token log-probabilities over the answer): per-step KL and
        top-1, and the same figures for this backend's full pass, so a bug of the cache alone is told from one of
        the model. {"unavailable": why} when the backend returns no per-step logits."""
        import numpy as np

        from arena.judging.verdicts import compare_positions, load_distributions, log_softmax

        self._ensure_loaded(prepared, spec, progress)
        progress(None, f"{spec.label}: its decode path (KV cache) against the reference", force=True)
        reference = load_distributions(reference)  # the reference's file (`quality_reference`)
        rows = len(reference) if isinstance(reference, np.ndarray) else len(reference["target_lp"])
        prompt, answer = list(prepared.prompt_token_ids), [int(t) for t in answer][:rows]
        start = time.perf_counter()
        try:
            cached = np.asarray(self.backend.cached_step_logits(prompt, answer), np.float32)
        except NotImplementedError as exc:
            return {"unavailable": str(exc)}
        try:
            full = np.asarray(self.backend.forward_logits(prompt + answer), np.float32)
            full = full[len(prompt) - 1:len(prompt) + len(answer) - 1]
        except NotImplementedError:
            full = None
        targets = np.asarray(answer, np.int64)
        reference = np.asarray(reference) if isinstance(reference, np.ndarray) else reference
        steps = compare_positions(reference, log_softmax(cached), targets)
        out = {"steps": len(answer), "kl_steps": [float(f"{v:.4g}") for v in steps["kl"]],
               "top1": float(steps["top1"].mean()), "kl": float(steps["kl"].mean())}
        if full is not None and full.shape == cached.shape:
            whole = compare_positions(reference, log_softmax(full), targets)
            out |= {"full_kl_steps": [float(f"{v:.4g}") for v in whole["kl"]], "full_kl": float(whole["kl"].mean())}
        return out | {"seconds": round(time.perf_counter() - start, 3)}

    def run_image(self, prepared: PreparedImage, spec: BackendSpec, request: ImageRunRequest,
                  progress) -> BackendImageResult:
        """Load (if needed) and make one image from the shared latents, timing each phase and step."""
        load = self._ensure_loaded(prepared, spec, progress)
        settings = ImageSettings(prompt=request.prompt, negative_prompt=request.negative_prompt,
                                 steps=request.steps, guidance_scale=request.guidance_scale)
        marks: dict[str, float] = {}
        steps: list[float] = []
        label = spec.label

        def on_phase(name: str) -> None:
            marks[name] = time.perf_counter()
            if name != "done":
                progress(None, f"{label}: {name.replace('_', ' ')}", force=True)

        def on_step(index: int) -> None:
            steps.append(time.perf_counter())
            progress((index + 1) / settings.steps, f"{label}: denoising step {index + 1}/{settings.steps}")

        start = time.perf_counter()
        image = self.backend.generate_image(prepared, settings, on_phase, on_step)
        end = time.perf_counter()
        step_times = [b - a for a, b in zip([marks.get("unet", start), *steps[:-1]], steps, strict=True)]
        timings = ImageTimings(
            total_s=end - start,
            text_encoder_s=marks.get("unet", start) - marks.get("text_encoder", start),
            unet_s=marks.get("vae", end) - marks.get("unet", start),
            vae_s=marks.get("done", end) - marks.get("vae", end),
            step_times_s=tuple(step_times),
        )
        latents = getattr(self.backend, "last_latents", None)  # untimed: converted after the clock stopped
        return BackendImageResult(spec=spec, image=image, timings=timings, load=load, latents=latents)

    def image_component_outputs(self, prepared: PreparedImage, spec: BackendSpec, request: ImageRunRequest,
                                inputs: dict[str, Any] | None, progress) -> dict[str, Any]:
        """Where did an image break: the pipeline's text encoder, UNet (once per kept denoising step) and VAE
        decoder on the reference's inputs (`Backend.image_component_outputs`). The reference gets ``inputs`` None or
        {"final_latents": ...} and returns its inputs and outputs; a candidate gets the reference's inputs and
        returns its outputs only.
        {"unavailable": why} when this backend cannot run its components one by one."""
        self._ensure_loaded(prepared, spec, progress)
        progress(None, f"{spec.label}: text encoder, UNet (each denoising step) and VAE decoder on the reference's "
                       "inputs", force=True)
        settings = ImageSettings(prompt=request.prompt, negative_prompt=request.negative_prompt,
                                 steps=request.steps, guidance_scale=request.guidance_scale)
        reference = inputs is None or "input_ids" not in inputs
        try:
            found = self.backend.image_component_outputs(prepared, settings, inputs)
        except NotImplementedError as exc:
            return {"unavailable": str(exc)}
        if not reference:
            found.pop("inputs", None)  # the core has them: nothing to send back
        return found

    def layer_outputs_to(self, prepared: PreparedText, spec: BackendSpec, path: str, progress,
                         token_ids: list[int] | None = None, from_token: int = 0) -> dict[str, Any]:
        """The reference's side of "where did it break": its own units' outputs (`layer_outputs`) written to
        ``path`` (a .npz in the judging stage's scratch folder, for the candidates' workers to read); returns
        {"units": [...], "path": path}, or {"unavailable": why}. No array crosses to the app."""
        found = self.layer_outputs(prepared, spec, None, progress, token_ids=token_ids, from_token=from_token)
        if "unavailable" in found:
            return found
        import numpy as np

        np.savez(path, **{name: np.asarray(value) for name, value in found["outputs"].items()})
        return {"units": found["units"], "path": path}

    def localize_against(self, prepared: PreparedText, spec: BackendSpec, units: list[str], path: str,
                         precision_class: str, progress, token_ids: list[int] | None = None,
                         from_token: int = 0) -> dict[str, Any]:
        """A candidate's side: its outputs of the reference's ``units`` over the same tokens, compared here with the
        reference's (read from ``path``) by `arena.judging.localize`; returns {"where": ...} (figures only), or
        {"unavailable": why}."""
        found = self.layer_outputs(prepared, spec, units, progress, token_ids=token_ids, from_token=from_token)
        if "unavailable" in found:
            return found
        import numpy as np

        from arena.judging.localize import localize

        with np.load(path, allow_pickle=False) as saved:
            reference = {name: saved[name] for name in saved.files}
        return {"where": localize(reference, found["outputs"], units, precision_class)}

    def layer_outputs(self, prepared: PreparedText, spec: BackendSpec, units: list[str] | None,
                      progress, token_ids: list[int] | None = None, from_token: int = 0) -> dict[str, Any]:
        """Where did it break: one forward pass over the prompt (or ``token_ids``: a teacher-forced sequence up past
        a late onset, each output kept from token ``from_token`` on), each unit's output kept. ``units`` None (the
        reference): this model's own units, returned with the outputs as {"units": [...], "outputs": {...}}; else
        the outputs of those units this backend can expose. {"unavailable": why} when it exposes none. Called
        within this worker (`layer_outputs_to`, `localize_against`): the arrays never cross to the app."""
        self._ensure_loaded(prepared, spec, progress)
        progress(None, f"{spec.label}: each layer's output over the prompt", force=True)
        try:
            names = self.backend.layer_units() if units is None else list(units)
            ids = list(prepared.prompt_token_ids) if token_ids is None else [int(t) for t in token_ids]
            outputs = self.backend.layer_outputs(ids, names)
        except NotImplementedError as exc:
            return {"unavailable": str(exc)}
        if not outputs:
            return {"unavailable": f"{spec.label} exposes none of the reference's modules by name"}
        if from_token:  # batch x tokens x features from there on (an output of another shape whole)
            outputs = {name: value[:, from_token:].copy() if getattr(value, "ndim", 0) >= 2
                       and value.shape[1] == len(ids) else value for name, value in outputs.items()}
        size = sum(getattr(v, "nbytes", 0) for v in outputs.values())
        if size > LAYER_OUTPUTS_MAX_BYTES:  # written to the cache's scratch to be compared: a long prompt is GBs
            return {"unavailable": f"its layers' outputs over this prompt are {size / 1e6:,.0f} MB, more than the "
                                   f"{LAYER_OUTPUTS_MAX_BYTES / 1e6:,.0f} MB this server compares; a shorter prompt "
                                   "fits"}
        return {"units": names, "outputs": outputs}

    def unload(self, progress=None) -> None:
        self.backend.unload()
        self.loaded_key, self.load_info = None, None

    def preload(self, progress=None) -> list[str]:
        """Import what the backend and the answer's decoding will need (`Backend.preload_modules`, transformers'
        tokenizers), so that the first load finds them in memory; the imports that failed, as sentences (the
        load says it again, with its install hint)."""
        failed = []
        for module in ("transformers", *self.backend.preload_modules):
            try:
                importlib.import_module(module)
            except Exception as exc:  # noqa: BLE001 - a missing runtime is reported by its load, with the fix
                failed.append(f"import {module}: {type(exc).__name__}: {exc}")
        return failed

    def ping(self, progress=None) -> int:
        import os

        return os.getpid()

    def close(self) -> None:
        self.backend.unload()


def _gpu_mb() -> float | None:
    """GPU memory in use on this worker's device (all processes: ONNX Runtime and TensorRT allocate outside
    torch's allocator, so torch's own counters would miss them); None when this worker never touched CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


def _rss_mb() -> float | None:
    try:
        import psutil

        return round(psutil.Process().memory_info().rss / 2**20, 1)
    except ImportError:
        return None
