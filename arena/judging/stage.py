"""Judging, a stage of its own: once every backend has run, the core hands the results to `JudgingStage`, which
gives each its verdict (`arena.judging.verdicts`) and, for the candidates it is asked about, where it breaks
(`arena.judging.localize`, `arena.judging.localize_image`).

The stage reaches the backends only through ``host(spec)`` (that backend's worker, called like its
`arena.running.host.BackendHost`) and never imports the core. Arrays stay where they are made: the reference's
distributions and layer outputs go to a scratch folder in the cache (`scratch`), each candidate's worker reads them
beside its own and sends back figures only. Figures kept between runs live in its `JudgingMemo`; the public limits
on judging (how large a model is localized) are read from the policy here, in one place (`localize_refusal`).

One rule for "auto" localization (`localize_targets`): a candidate judged broken or DRIFT, and, where the task's
verdict floor is read from its components (images: `image_floor_verdict`), every candidate at the reference's
precision. "all": every candidate; "off": none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from arena.judging.export_files import export_file_warnings
from arena.judging.memo import JudgingMemo, digest
from arena.judging.memo import identity as memo_identity
from arena.judging.verdicts import (
    REACH_CACHED_STEPS,
    REACH_SEQUENCE,
    image_floor_verdict,
    judge_image,
    judge_text,
    logits_error,
    pool_summaries,
)
from arena.registry import backend_class
from arena.running.workers import WorkerCrashed, WorkerFailed
from arena.tasks import task_of
from arena.types import PreparedImage, PreparedText


def precision_of(result) -> tuple[str, str]:
    """The precision a result is judged at, in its backend's words, and the class its backend maps it to
    (`Backend.tolerance_class`): what its loaded model really is (a user's export, a GGUF's type), else what
    its configuration says (`Backend.judged_precision`)."""
    cls = backend_class(result.spec.backend)
    detected = result.load.precision if result.load is not None else None
    precision = detected or cls.judged_precision(result.spec.options)
    return precision, cls.tolerance_class(precision)


def localize_targets(mode: str, results: list, reference: int, floor_from_components: bool) -> list[int]:
    """The candidates to localize (see the module's docstring): ``mode`` "auto", "all" or "off"."""
    if mode == "off":
        return []
    ref_precision = precision_of(results[reference])[0]
    targets = []
    for i, r in enumerate(results):
        if i == reference or r.verdict is None or not (r.ok or r.verdict.kind == "NAN"):
            continue
        if mode == "all" or r.verdict.broken or r.verdict.kind == "DRIFT" or (
                floor_from_components and precision_of(r)[0] == ref_precision):
            targets.append(i)
    return targets


def kv_cache_where(problem: dict[str, Any]) -> dict[str, Any]:
    """Every unit agrees with the reference on a full pass, and the cached decode does not: what differs is the
    cache (``problem``: the verdict's ``decode_problem``)."""
    at = (f"position {problem['position']} of the {problem['sequence']}" if "position" in problem
          else f"step {problem['step']}")
    return {"unit": "the KV cache", "error": None, "cause": (
        f"every unit agrees with the reference on a full pass, and the cached decode leaves it at {at}: the cache "
        "(what the graph hands back as present.*, the positions or the attention mask of a cached step, the past "
        "length)")}


class JudgingStage:
    """Verdicts and localization for one run's results (`text`, `image`), given a way to each backend's worker."""

    LATE_TAIL = 64  # tokens past a late onset that its localization compares

    def __init__(self, host: Callable[[Any], Any], time_left: Callable[[float | None], float], policy,
                 scratch_root: Path):
        self._host = host  # spec -> that backend's worker (a `Hosted` BackendHost)
        self._time_left = time_left  # deadline -> the seconds a call may take
        self.policy = policy
        self._scratch_root = Path(scratch_root)
        self.memo = JudgingMemo()  # judging figures kept between runs (`arena.judging.memo`)
        # The reference's teacher-forced distributions kept between runs (`_reference_distributions`): off unless
        # one caller at a time runs many checks of one reference (`python -m arena check`, several candidates).
        self.keep_reference_distributions = False
        self._kept_distributions: dict[tuple[str, str], tuple[str, int, dict | None]] = {}  # in use order
        self._kept_dir: str | None = None

    def forget(self) -> None:
        """Drop the judging figures kept between runs (benchmarks measure judging from scratch)."""
        self.memo = JudgingMemo()

    def localize_refusal(self, prepared: PreparedText | PreparedImage) -> str | None:
        """The public limit on localization, for both tasks: a model (a pipeline's three components together) of
        more than `PublicLimits.max_localize_parameters` is not localized (a second session of the candidate runs
        beside it), and one whose size cannot be read is not either. None: go ahead (always, locally)."""
        if not self.policy.public:
            return None
        cap = self.policy.limits.max_localize_parameters
        if task_of(prepared).pictures:  # a pipeline: its text encoder, UNet and VAE together
            from arena.preparing.prepare import parameter_count

            counts = [parameter_count(Path(prepared.model_dir) / part) for part in ("text_encoder", "unet", "vae")]
            size = None if None in counts else sum(counts)
        else:
            size = prepared.parameters
        if size is not None and size <= cap:
            return None
        return (f"this public server localizes models up to {cap / 1e6:.0f}M parameters (a second session of the "
                "candidate runs beside it); run it locally with `python -m arena check --localize`")

    def text(self, prepared: PreparedText, results: list, reference: int, request, progress,
             cancel: threading.Event | None = None, deadline: float | None = None,
             tolerances: dict | None = None) -> list:
        """Every text result judged, and the candidates ``request.localize`` asks about localized. ``tolerances``:
        given in place of the tables' (`arena.judging.verdicts.tolerance_overrides`: a check's ``--atol``)."""
        judged = self._judge_text(prepared, results, reference, progress, cancel, deadline, tolerances)
        return self._localize(prepared, judged, reference, request, progress, cancel, deadline)

    def image(self, prepared: PreparedImage, results: list, reference: int, request, progress,
              cancel: threading.Event | None = None, deadline: float | None = None,
              tolerances: dict | None = None) -> list:
        """Every image result judged, the candidates ``request.localize`` asks about localized; the latents kept
        for that are dropped. ``tolerances``: given in place of the tables' (a check's ``--min-psnr``)."""
        judged = self._judge_image(prepared, results, reference, progress, cancel, tolerances)
        judged = self._localize_image(prepared, judged, reference, request, progress, cancel, deadline)
        return [dataclasses.replace(r, latents=None) for r in judged]

    def _judge_text(self, prepared: PreparedText, results: list, reference: int, progress,
                    cancel: threading.Event | None = None, deadline: float | None = None,
                    tolerances: dict | None = None) -> list:
        """Verdicts for every text output: perplexity under the reference model (in the reference's worker,
        where that model already lives), first-step logits and tokens against the reference, and teacher-forced
        quality (`_quality`)."""
        ref = results[reference]
        nll: list = [None] * len(results)
        if ref.ok and not (cancel is not None and cancel.is_set()):
            ref_id, prompt = self._identity(prepared, ref), list(prepared.prompt_token_ids)
            keys = [("nll", ref_id, digest(prompt + list(r.token_ids))) if r.ok else None for r in results]
            nll = [self.memo.get(key) for key in keys]
            todo = [list(r.token_ids) if r.ok and nll[i] is None else [] for i, r in enumerate(results)]
            if any(todo):
                try:
                    fresh = self._host(ref.spec).score_nll(
                        prepared, ref.spec, todo, progress=progress,
                        timeout=self._time_left(deadline), cancel=cancel)
                    for i, value in enumerate(fresh):
                        if todo[i]:
                            nll[i] = value
                            self.memo.put(keys[i], value)
                except (WorkerCrashed, WorkerFailed):
                    pass  # judged without perplexity; the other detectors still run
        ref_precision, ref_class = precision_of(ref)
        ref_verdict = judge_text(ref.text, ref.token_ids, ref_precision, error=ref.error, is_reference=True,
                                 unk_token_id=prepared.unk_token_id, nll=nll[reference], precision_class=ref_class)
        # A reference that failed (an error, or nothing but special tokens) is no yardstick: the others are NOT
        # COMPARED. A gibberish reference is still one (the same model's math); its own verdict says what it is.
        ref_failed = f"{ref_verdict.kind}: {ref_verdict.reason}" if ref_verdict.kind in ("ERROR", "EMPTY") else None
        quality = self._quality(prepared, results, reference, progress, cancel, deadline) if ref.ok else {}
        decode = self._decode_path(prepared, results, reference, progress, cancel, deadline) if ref.ok else {}
        judged = []
        for i, r in enumerate(results):
            precision, precision_class = precision_of(r)
            verdict = ref_verdict if i == reference else judge_text(
                r.text, r.token_ids, precision, error=r.error,
                reference_ids=ref.token_ids if ref.ok else None, unk_token_id=prepared.unk_token_id, nll=nll[i],
                logits=logits_error(r.first_logits, ref.first_logits), quality=quality.get(i),
                reference_precision=ref_precision, reference_failed=ref_failed, precision_class=precision_class,
                decode=decode.get(i), tolerances=tolerances)
            if i == reference and quality.get(i):
                verdict = dataclasses.replace(verdict, metrics=verdict.metrics | {"quality": quality[i]})
            warnings = export_file_warnings(prepared.model_dir, r.load.artifact_dir if r.load else None)
            if warnings and i != reference:  # what deployment would do differently: beside the verdict, not in it
                verdict = dataclasses.replace(
                    verdict, reason=verdict.reason + "".join(f" Warning: {w}." for w in warnings),
                    metrics=verdict.metrics | {"warnings": warnings})
            judged.append(dataclasses.replace(r, verdict=verdict, first_logits=None))
        return judged

    def _identity(self, prepared, result) -> str | None:
        """What a result's judging figures depend on (`arena.judging.memo.identity`)."""
        return memo_identity(result.spec, result.load, prepared.fingerprint)

    def _quality(self, prepared: PreparedText, results: list, reference: int, progress,
                 cancel: threading.Event | None = None, deadline: float | None = None) -> dict[int, dict]:
        """Teacher-forced quality of every backend against the reference, on the same tokens: the prompt followed
        by the reference's own answer, and the fixed paragraph (or the long reach). The reference's
        log-probabilities (positions x vocab, float32: ~20 MB per 100 positions of a 49k vocabulary) cross the
        pipes once to each candidate's worker, where the candidate's own distributions are compared; only the
        figures come back. Each sequence's figures are kept (`arena.judging.memo`): a repeated run teacher-forces
        only what it has not judged before with the same two models."""
        ref = results[reference]
        prompt = list(prepared.prompt_token_ids)
        sequences = [("output", prompt + list(ref.token_ids), len(prompt))] if ref.token_ids else []
        cached: dict[str, int] = {}
        if len(prepared.reach_token_ids) > 1:  # the long reach: the paragraph and the long text after it
            sequences.append((REACH_SEQUENCE, list(prepared.reach_token_ids), 1))
            cached[REACH_SEQUENCE] = REACH_CACHED_STEPS
        elif len(prepared.quality_token_ids) > 1:
            sequences.append(("paragraph", list(prepared.quality_token_ids), 1))
        if not sequences or (cancel is not None and cancel.is_set()):
            return {}
        ref_id = self._identity(prepared, ref)
        keys = {name: digest([start, *ids]) for name, ids, start in sequences}
        candidates = [i for i in reversed(range(len(results)))  # newest first: each worker holds its last model
                      if i != reference and results[i].ok]
        found: dict[int, dict[str, Any]] = {
            i: {name: self.memo.get(("quality", self._identity(prepared, results[i]), ref_id, name,
                                              keys[name])) for name, _, _ in sequences} for i in candidates}
        own = {name: self.memo.get(("self", ref_id, name, keys[name])) for name, _, _ in sequences}
        needed = [s for s in sequences if own[s[0]] is None or any(found[i][s[0]] is None for i in candidates)]
        out: dict[int, dict] = {}
        seconds: dict[int, float] = {}
        computed: dict[int, list[str]] = {}
        if needed:
            progress(None, "Teacher-forced quality against the reference")
        with self._scratch() as scratch:
            ref_lp: dict[str, Any] = {"sequences": [], "self_sequences": {}}
            if needed:
                ref_lp = self._reference_distributions(prepared, ref, needed, scratch, progress, cancel, deadline)
                if "unavailable" in ref_lp:  # the reference failed, or has no logits (a server)
                    return {i: dict(ref_lp) for i in range(len(results))}
                for name, figures in ref_lp["self_sequences"].items():
                    own[name] = figures
                    self.memo.put(("self", ref_id, name, keys[name]), figures)
            for i in candidates:
                r = results[i]
                todo = [s for s in needed if found[i][s[0]] is None]
                if not todo:
                    continue
                computed[i] = [name for name, _, _ in todo]
                if cancel is not None and cancel.is_set():
                    return out
                try:
                    got = self._host(r.spec).quality_against(
                        prepared, r.spec, todo, ref_lp["sequences"], cached=cached, progress=progress,
                        timeout=self._time_left(deadline), cancel=cancel)
                except (WorkerCrashed, WorkerFailed) as exc:
                    got = {"unavailable": f"failed: {exc}"}
                if "unavailable" in got:
                    out[i] = got
                    continue
                seconds[i] = got.get("seconds", 0.0)
                for name, figures in got["sequences"].items():
                    found[i][name] = figures
                    self.memo.put(("quality", self._identity(prepared, r), ref_id, name, keys[name]),
                                           figures)
        if all(own.values()):
            out[reference] = pool_summaries(own)
        for i in candidates:
            if i not in out and all(found[i].values()):
                reused = [name for name, _, _ in sequences if name not in computed.get(i, ())]
                out[i] = pool_summaries(found[i]) | {"sequences": found[i], "seconds": seconds.get(i, 0.0)} | (
                    {"reused": reused} if reused else {})
        return out

    def forget_reference_distributions(self) -> None:
        """Remove the reference's distributions kept between runs (`keep_reference_distributions`)."""
        if self._kept_dir is not None:
            import shutil

            shutil.rmtree(self._kept_dir, ignore_errors=True)
        self._kept_dir, self._kept_distributions = None, {}

    KEPT_DISTRIBUTION_BYTES = 600 * 2**20  # the reference's files kept between runs (the last ones used stay)

    def _reference_distributions(self, prepared: PreparedText, ref, sequences: list, scratch: str, progress,
                                 cancel: threading.Event | None, deadline: float | None) -> dict[str, Any]:
        """The reference's distributions over ``sequences``, written to ``scratch`` (`BackendHost.quality_reference`),
        or {"unavailable": why}. With ``keep_reference_distributions`` (local mode, a reference whose model is
        known: `arena.judging.memo`) the files are kept between runs under (the reference's identity, the sequence's
        token ids): a ``check`` of many candidates computes the reference's passes over the same tokens once."""
        ref_id = self._identity(prepared, ref) if self.keep_reference_distributions and not self.policy.public \
            else None
        if ref_id is None:
            return self._compute_reference_distributions(prepared, ref, sequences, scratch, progress, cancel,
                                                         deadline)
        keys = {name: (ref_id, digest([start, *ids])) for name, ids, start in sequences}
        missing = list({keys[s[0]]: s for s in sequences if keys[s[0]] not in self._kept_distributions}.values())
        if missing:
            found = self._compute_reference_distributions(prepared, ref, missing, scratch, progress, cancel,
                                                          deadline)
            if "unavailable" in found:
                return found
            if self._kept_dir is None or not os.path.isdir(self._kept_dir):
                import tempfile

                self._kept_dir = tempfile.mkdtemp(prefix=f".tmp-judging-kept-{os.getpid()}-",
                                                  dir=os.path.dirname(scratch))
            for name, path, positions in found["sequences"]:
                kept = os.path.join(self._kept_dir, f"{len(self._kept_distributions)}-{time.monotonic_ns()}-"
                                    f"{os.path.basename(path)}")
                os.replace(path, kept)  # the same folder's parent: a rename
                self._kept_distributions[keys[name]] = (kept, positions, found["self_sequences"].get(name))
        out: dict[str, Any] = {"sequences": [], "self_sequences": {}}
        used = []
        for name, _, _ in sequences:
            if keys[name] in self._kept_distributions:  # (a sequence too short to predict anything has no file)
                path, positions, figures = self._kept_distributions.pop(keys[name])
                self._kept_distributions[keys[name]] = (path, positions, figures)  # the last used go last
                used.append(keys[name])
                out["sequences"].append((name, path, positions))
                if figures is not None:
                    out["self_sequences"][name] = figures
        size = sum(os.path.getsize(path) for path, _, _ in self._kept_distributions.values())
        for key in list(self._kept_distributions):  # the least recently used go first; this run's stay
            if size <= self.KEPT_DISTRIBUTION_BYTES:
                break
            if key not in used:
                path = self._kept_distributions.pop(key)[0]
                size -= os.path.getsize(path)
                os.remove(path)
        return out

    def _compute_reference_distributions(self, prepared: PreparedText, ref, sequences: list, scratch: str,
                                         progress, cancel: threading.Event | None,
                                         deadline: float | None) -> dict[str, Any]:
        try:
            found = self._host(ref.spec).quality_reference(
                prepared, ref.spec, sequences, scratch, progress=progress,
                timeout=self._time_left(deadline), cancel=cancel)
        except (WorkerCrashed, WorkerFailed) as exc:
            return {"unavailable": f"the reference's distributions failed: {exc}"}
        if "unavailable" in found:
            return {"unavailable": f"the reference has {found['unavailable']}"}
        return found

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[str]:
        """A folder for one judging step's distributions (the reference's worker writes them, the candidates' read
        them: no distribution crosses the app), in the cache (a ``.tmp-`` folder: counted against its size cap, and
        removed by `ArtifactCache.clean_stale` if the app dies meanwhile)."""
        import shutil
        import tempfile

        parent = self._scratch_root
        parent.mkdir(parents=True, exist_ok=True)
        folder = tempfile.mkdtemp(prefix=f".tmp-judging-{os.getpid()}-", dir=parent)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _decode_path(self, prepared: PreparedText, results: list, reference: int, progress,
                     cancel: threading.Event | None = None, deadline: float | None = None) -> dict[int, dict]:
        """Each candidate's own answer, judged along the path a deployment runs: the reference's full pass over the
        prompt and that answer (one call for every candidate), then each candidate's cached decode over the same
        tokens in its own worker (`BackendHost.decode_against`). Where the answers split, the reference's margin
        for its own token there says whether the split is a near-tie; it needs nothing from the candidate."""

        ref = results[reference]
        prompt = list(prepared.prompt_token_ids)
        todo = {i: list(r.token_ids) for i, r in enumerate(results)
                if i != reference and r.ok and r.token_ids and all(isinstance(t, int) and t >= 0
                                                                   for t in r.token_ids)}
        if not todo or (cancel is not None and cancel.is_set()):
            return {}
        ref_id = self._identity(prepared, ref)
        keys = {i: ("decode", self._identity(prepared, results[i]), ref_id, digest(prompt + ids),
                    digest(list(ref.token_ids))) for i, ids in todo.items()}
        out: dict[int, dict] = {}
        for i in list(todo):
            kept = self.memo.get(keys[i])
            if kept is not None:
                out[i] = kept | {"reused": True}
                del todo[i]
        if not todo:
            return out
        progress(None, "The decode path: each candidate's own answer under the reference")
        sequences = [(str(i), prompt + ids, len(prompt)) for i, ids in todo.items()]
        from arena.judging.verdicts import load_distributions, reference_margin

        with self._scratch() as scratch:
            ref_lp = self._reference_distributions(prepared, ref, sequences, scratch, progress, cancel, deadline)
            if "unavailable" in ref_lp:
                return out | {i: dict(ref_lp) for i in todo}
            for name, path, positions in ref_lp["sequences"]:
                i = int(name)
                ids, ref_ids = todo[i], list(ref.token_ids)
                split = next((k for k, (a, b) in enumerate(zip(ids, ref_ids, strict=False)) if a != b), None)
                figures: dict[str, Any] = {}
                if split is not None and split < positions:
                    margin, best = reference_margin(load_distributions(path), split, ids[split])  # one row read
                    figures["split"] = {"step": split, "margin": margin, "reference_token": best, "token": ids[split]}
                if not (cancel is not None and cancel.is_set()):
                    try:
                        figures |= self._host(results[i].spec).decode_against(
                            prepared, results[i].spec, ids, path, progress=progress,
                            timeout=self._time_left(deadline), cancel=cancel)
                    except (WorkerCrashed, WorkerFailed) as exc:
                        figures["unavailable"] = f"failed: {exc}"
                    if "unavailable" not in figures:
                        self.memo.put(keys[i], figures)
                out[i] = figures
        return out

    def _localize(self, prepared: PreparedText, results: list, reference: int, request, progress,
                  cancel: threading.Event | None = None, deadline: float | None = None) -> list:
        """Where did it break: for each candidate `localize_targets` picks, each unit's output over the prompt
        against the reference's (`arena.judging.localize`), kept in its verdict's metrics as ``where`` (None, with
        ``where_unavailable`` saying why, when it cannot be done)."""
        ref = results[reference]
        targets = [i for i in localize_targets(request.localize, results, reference, floor_from_components=False)
                   if results[i].ok]
        if not targets or not ref.ok or (cancel is not None and cancel.is_set()):
            return results
        progress(None, "Where did it break: each layer's output against the reference")
        why = self.localize_refusal(prepared)
        if why:
            return [dataclasses.replace(r, verdict=dataclasses.replace(
                r.verdict, metrics=r.verdict.metrics | {"where": None, "where_unavailable": why}))
                if i in targets else r for i, r in enumerate(results)]

        def failed(spec, exc) -> dict[str, str]:
            return {"unavailable": f"{spec.label} failed to return its layers' outputs: {exc}"}

        def reference_outputs(scratch: str, name: str, token_ids=None, from_token=0) -> dict[str, Any]:
            try:  # written to the scratch folder by the reference's worker: no array crosses the app
                return self._host(ref.spec).layer_outputs_to(
                    prepared, ref.spec, os.path.join(scratch, f"{name}.npz"), token_ids=token_ids,
                    from_token=from_token, progress=progress, timeout=self._time_left(deadline), cancel=cancel)
            except (WorkerCrashed, WorkerFailed) as exc:
                return failed(ref.spec, exc)

        def compared(r, saved: dict[str, Any], token_ids=None, from_token=0) -> dict[str, Any]:
            if "unavailable" in saved:
                return saved
            try:  # the candidate's worker reads them beside its own outputs and sends back the figures
                return self._host(r.spec).localize_against(
                    prepared, r.spec, saved["units"], saved["path"], precision_of(r)[1], token_ids=token_ids,
                    from_token=from_token, progress=progress, timeout=self._time_left(deadline), cancel=cancel)
            except (WorkerCrashed, WorkerFailed) as exc:
                return failed(r.spec, exc)

        out = list(results)
        with self._scratch() as scratch:
            prompt_saved: dict[str, Any] | None = None
            for i in targets:
                r = results[i]
                metrics = r.verdict.metrics or {}
                late = self._onset_sequence(prepared, ref, metrics.get("onset"))
                if late is not None:  # a late onset: the units are compared from there on, where the math changes
                    ids, first = late
                    found = compared(r, reference_outputs(scratch, f"late-{i}", ids, first), ids, first)
                    if "where" in found:
                        found["where"] |= {"from": {"sequence": metrics["onset"]["sequence"],
                                                    "position": metrics["onset"]["position"]}}
                else:
                    if prompt_saved is None:
                        prompt_saved = reference_outputs(scratch, "prompt")
                    found = compared(r, prompt_saved)
                extra = {"where": found["where"]} if "where" in found else \
                    {"where": None, "where_unavailable": found["unavailable"]}
                problem = metrics.get("decode_problem") or {}
                if problem.get("full_agrees") and extra.get("where") and extra["where"]["unit"] is None:
                    extra["where"] = extra["where"] | kv_cache_where(problem)
                verdict = dataclasses.replace(r.verdict, metrics=r.verdict.metrics | extra)
                out[i] = dataclasses.replace(r, verdict=verdict)
        return out

    def _onset_sequence(self, prepared: PreparedText, ref, onset: dict[str, Any] | None) -> tuple[list, int] | None:
        """(token ids, first token index to compare) for a late onset of the teacher-forced paragraph or answer."""
        if not onset or onset.get("kind") != "late":
            return None
        position = int(onset["position"])
        if onset.get("sequence") == "paragraph" and len(prepared.quality_token_ids) > 1:
            ids, first = list(prepared.quality_token_ids), position  # position k predicts token k + 1 from token k
        elif onset.get("sequence") == REACH_SEQUENCE and len(prepared.reach_token_ids) > 1:
            ids, first = list(prepared.reach_token_ids), position
        elif onset.get("sequence") == "output" and ref.token_ids:
            ids = list(prepared.prompt_token_ids) + list(ref.token_ids)
            first = len(prepared.prompt_token_ids) - 1 + position
        else:
            return None
        return ids[:first + self.LATE_TAIL + 1], first

    def _localize_image(self, prepared: PreparedImage, results: list, reference: int, request, progress,
                        cancel: threading.Event | None = None, deadline: float | None = None) -> list:
        """Where did an image break: for each candidate `localize_targets` picks, its text encoder, UNet and VAE
        decoder run on the reference's inputs to each (`arena.judging.localize_image`; the UNet at each kept
        denoising step of the reference's loop), kept in its verdict's metrics as ``where`` (None, with
        ``where_unavailable`` saying why, when it cannot be done). A run stopped by a NaN guard is localized too: its
        worker still holds the pipeline."""
        from arena.judging.localize_image import localize_components, unet_steps

        ref = results[reference]
        ref_precision = precision_of(ref)[0]
        # The components have a floor at the reference's precision (`image_floor_verdict`: a close picture can
        # still hide a wrong component), so "auto" looks at those candidates too.
        targets = localize_targets(request.localize, results, reference, floor_from_components=True)
        if not targets or not ref.ok or (cancel is not None and cancel.is_set()):
            return results

        def unavailable(why: str) -> list:
            return [dataclasses.replace(r, verdict=dataclasses.replace(
                r.verdict, metrics=r.verdict.metrics | {"where": None, "where_unavailable": why}))
                if i in targets else r for i, r in enumerate(results)]

        why = self.localize_refusal(prepared)
        if why:
            return unavailable(why)
        progress(None, "Where did it break: the text encoder, UNet (at each denoising step) and VAE decoder on "
                       "the reference's inputs")

        def outputs(spec, inputs):
            try:
                return self._host(spec).image_component_outputs(
                    prepared, spec, request, inputs, progress=progress,
                    timeout=self._time_left(deadline), cancel=cancel)
            except (WorkerCrashed, WorkerFailed) as exc:
                return {"unavailable": f"{spec.label} failed to run its components: {exc}"}

        reference_out = outputs(ref.spec, None if ref.latents is None else {"final_latents": ref.latents})
        if "unavailable" in reference_out:
            return unavailable(f"the reference cannot: {reference_out['unavailable']}")
        if reference_out.get("errors"):
            return unavailable("the reference's own components failed: " + "; ".join(
                f"{name}: {why}" for name, why in reference_out["errors"].items()))
        out = list(results)
        for i in targets:
            r = results[i]
            found = outputs(r.spec, reference_out["inputs"])
            if "unavailable" in found:
                extra = {"where": None, "where_unavailable": found["unavailable"]}
            else:
                extra = {"where": localize_components(reference_out["outputs"], found["outputs"],
                                                      precision_of(r)[1], found.get("errors"),
                                                      image_broken=r.verdict.broken,
                                                      steps=unet_steps(reference_out["inputs"]))}
            verdict = dataclasses.replace(r.verdict, metrics=r.verdict.metrics | extra)
            precision, precision_class = precision_of(r)
            if precision == ref_precision:
                verdict = image_floor_verdict(verdict, extra["where"], precision, precision_class)
            out[i] = dataclasses.replace(r, verdict=verdict)
        return out

    @staticmethod
    def _judge_image(prepared: PreparedImage, results: list, reference: int, progress, cancel=None,
                     tolerances: dict | None = None) -> list:
        ref = results[reference]
        judged = []
        for i, r in enumerate(results):
            precision, precision_class = precision_of(r)
            judged.append(dataclasses.replace(r, verdict=judge_image(
                r.image, precision, error=r.error, is_reference=i == reference,
                reference=ref.image if ref.ok else None, precision_class=precision_class, tolerances=tolerances)))
        return judged

