"""A load sweep: one OpenAI-compatible server at 1 to N concurrent users (or Poisson request rates), every level
doing the same work, with its answers judged.

1. Prepare each prompt once (the arena's preparation worker: the model's tokenizer and prompt format) and, unless
   the reference is "off", run it through the reference (PyTorch fp32 in its worker) for its greedy tokens.
2. For each server: connect and probe it as the text runs do (the server backend's ``load``), send
   the warm-up requests (not measured), then each level: a closed loop of ``c`` users each sending its next
   request when the last one ended, or an open loop of Poisson arrivals at ``r`` requests/s. Every level sends the
   same ``requests`` requests (the prompts cycled), greedy, ``max_new_tokens`` each with EOS ignored.
3. Each request's chunks are stamped on arrival (this process's clock); token counts and re-tokenizing (a server
   that returns no ids) happen after the level, off the clock. `arena.serving.metrics` turns the readings into the
   level's figures; `arena.running.load` says whether the machine was busy meanwhile (a local server's CPU time
   counts as the measurement's own).
4. Each answer is judged (`arena.judging.verdicts.judge_text`) against the reference's tokens, and compared with
   the same server's answer to the same prompt at the first level: batching and scheduling change numerics.

A failed request is a reason, counted per level; a level in which every request failed to reach the server ends
that server's sweep, keeping the levels measured before it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from arena.running import load as machine
from arena.serving.metrics import LevelFigures, Objectives, RequestRecord
from arena.serving.request import LoadRunRequest

ProgressFn = Callable[[float | None, str], None]
SEVERITY = ("MATCH", "NOT COMPARED", "DRIFT", "LOSSY", "WRONG", "GIBBERISH", "EMPTY", "ERROR")  # worst last
UNREACHABLE = ("Nothing answers at", "did not accept a connection", "Cannot connect to")
PUBLIC_REFUSAL = ("Load sweeps are not available on this public server: they would turn it into a load generator "
                  "against the servers it reaches; run the arena locally (python -m arena load ...).")


def _quiet(_fraction: float | None, _description: str) -> None:
    pass


def refuse(arena, request: LoadRunRequest) -> str | None:
    """Why this sweep may not run, as one sentence (public mode refuses every sweep), or None."""
    if arena.policy.public:
        return PUBLIC_REFUSAL
    problem = request.refuse()
    if problem:
        return problem
    from arena.registry import backend_class

    env = arena.environment()
    for spec in request.backends:
        problem = arena.policy.refuse_spec(spec) or backend_class(spec.backend).check_spec(spec, env, "text")
        if problem:
            return f"{spec.label}: {problem}"
    return None


def run_sweep(arena, request: LoadRunRequest, progress: ProgressFn = _quiet,
              cancel: threading.Event | None = None) -> dict[str, Any]:
    """Sweep every server of ``request``; returns the JSON-ready result (see docs/load.md)."""
    kind, levels = ("concurrency", ())
    out: dict[str, Any] = {"task": "load", "request": request.to_dict(), "error": None, "servers": [],
                           "reference": None, "kind": kind, "levels": [], "model": None}
    problem = refuse(arena, request)
    if problem:
        return out | {"error": problem}
    kind, levels = request.levels()
    out |= {"kind": kind, "levels": list(levels)}
    prompts = request.prompt_list()
    try:
        prepared, reference = _prepare(arena, request, prompts, progress, cancel)
    except Exception as exc:  # noqa: BLE001 - a bad model id or a failed preparation is the sweep's one sentence
        return out | {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    out["model"] = {"name": prepared[0].model_name, "dir": prepared[0].model_dir}
    out["reference"] = reference
    objectives = Objectives(ttft_s=request.ttft_slo_s or None, itl_s=(request.itl_slo_ms or 0) / 1000 or None,
                            e2e_s=request.e2e_slo_s or None)
    for index, spec in enumerate(request.backends):
        def relay(fraction: float | None, description: str, index: int = index) -> None:
            share = 1 / len(request.backends)
            progress(None if fraction is None else (index + fraction) * share, description)

        out["servers"].append(_sweep_server(arena, spec, request, kind, levels, prepared, reference, objectives,
                                            relay, cancel))
        if cancel is not None and cancel.is_set():
            out["phase"] = "stopped"
            break
    return out


def _prepare(arena, request: LoadRunRequest, prompts: tuple[str, ...], progress: ProgressFn, cancel):
    """Each prompt prepared once, and the reference's greedy answers ({"label", "answers", "error"}; None: off)."""
    from arena.registry import default_reference
    from arena.types import BackendSpec, TextRunRequest

    wanted = str(request.reference).strip().lower()
    ref_spec = None if wanted == "off" else BackendSpec.from_any(default_reference() if wanted == "auto"
                                                                 else request.reference)
    prepared, answers = [], []
    for i, prompt in enumerate(prompts):
        progress(None, f"Preparing prompt {i + 1} of {len(prompts)}"
                 + (f" and the reference's answer ({ref_spec.label})" if ref_spec else ""))
        text_request = TextRunRequest(model=request.model, prompt=prompt, max_new_tokens=request.max_new_tokens,
                                      ignore_eos=True, warmup=0, repeats=1, localize="off",
                                      backends=(ref_spec,) if ref_spec else ())
        if ref_spec is None:
            prepared.append(arena.prepare_text(text_request))
            continue
        result = arena.run_text_to_end(text_request, cancel=cancel)
        if result.error:
            raise RuntimeError(result.error)
        prepared.append(result.prepared)
        answer = result.results[0]
        answers.append({"prompt": prompt, "text": answer.text, "token_ids": list(answer.token_ids),
                        "error": answer.error})
    reference = None if ref_spec is None else {
        "label": ref_spec.label, "answers": answers,
        "error": next((a["error"] for a in answers if a["error"]), None)}
    return prepared, reference


def _tokenizer(model_dir: str):
    """The reference's fast tokenizer from its tokenizer.json (no transformers: this may be the UI process)."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def server_pids(base_url: str | None) -> tuple[int, ...]:
    """The pid listening on a loopback base URL's port (a local server: its CPU time is the sweep's own), or ()."""
    try:
        parts = urlsplit(str(base_url or ""))
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            return ()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        import psutil

        return tuple({c.pid for c in psutil.net_connections("tcp")
                      if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid})
    except Exception:  # noqa: BLE001 - no permission to list sockets: the mark then counts the server as others'
        return ()


def _sweep_server(arena, spec, request: LoadRunRequest, kind: str, levels, prepared, reference, objectives,
                  progress: ProgressFn, cancel) -> dict[str, Any]:
    from arena.preparing.cache import ArtifactCache
    from arena.registry import backend_class
    from arena.running.host import load_context
    from backends.contract import GenerationSettings

    server: dict[str, Any] = {"label": spec.label, "spec": spec.to_dict(), "notes": [], "error": None,
                              "levels": [], "stopped_early": None}
    backend = backend_class(spec.backend)()
    ctx = load_context(ArtifactCache(arena.cache_dir), lambda *a, **k: None)
    try:
        progress(0.0, f"{spec.label}: connecting")
        backend.load(prepared[0], spec, ctx)
    except Exception as exc:  # noqa: BLE001 - ServerError sentences; anything else said as it is
        return server | {"error": str(exc), "notes": list(ctx.notes)}
    server["notes"] = list(ctx.notes)
    bodies = [backend.request_body(list(p.prompt_token_ids), GenerationSettings(
        max_new_tokens=request.max_new_tokens, eos_token_ids=p.eos_token_ids, pad_token_id=p.pad_token_id,
        ignore_eos=True, rendered_prompt=p.rendered_prompt, user_prompt=p.user_prompt,
        prompt_format=p.prompt_format)) for p in prepared]
    # No log-probabilities: users rarely ask for them, and they cost the server (llama-cpp-python: 5 to 12 times
    # slower per token here); tokens are counted from the server's ids or the re-tokenized text.
    bodies = [{k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")} for body in bodies]
    try:
        dropped = _fit_body(backend, bodies[0])
    except Exception as exc:  # noqa: BLE001 - the server refuses every form of the request
        backend.unload()
        return server | {"error": str(exc)}
    if dropped:
        bodies = [{k: v for k, v in body.items() if k not in dropped} for body in bodies]
        server["notes"].append(f"the server refuses {', '.join(dropped)}: sent without (an answer cut short by "
                               "EOS fails its request)")
    server["notes"].append(backend.shown_request(bodies[0]))
    tokenizer = None if backend.ids_from_server else _tokenizer(prepared[0].model_dir)
    pids = server_pids(getattr(backend.client, "base_url", None) and str(backend.client.base_url))
    server["server_pids_counted"] = bool(pids)
    try:
        for i in range(request.warmup):
            progress(0.0, f"{spec.label}: warm-up request {i + 1} of {request.warmup}")
            _one(backend, bodies[i % len(bodies)], i % len(bodies), time.perf_counter(), tokenizer)
        first: dict[int, tuple[int, ...]] = {}  # the first level with answers: this server's own baseline
        first_level = levels[0]
        for n, level in enumerate(levels):
            if cancel is not None and cancel.is_set():
                server["stopped_early"] = "stopped by you"
                break
            shown = f"{level:g} user(s)" if kind == "concurrency" else f"{level:g} req/s"

            def tick(done: int, n: int = n, shown: str = shown) -> None:
                progress((n + done / request.requests) / len(levels),
                         f"{spec.label}: {shown}: {done} of {request.requests} requests")

            before = machine.sample(pids)
            records = _run_level(backend, bodies, kind, level, request.requests, request.seed, tokenizer, tick,
                                 cancel)
            busy = machine.between(before, machine.sample(pids))
            figures = LevelFigures.from_records(records, objectives, request.max_new_tokens)
            if not first:
                first_level = level
                for r in records:
                    if r.ok:
                        first.setdefault(r.prompt_index, r.token_ids)
            judged = _judge_level(records, prepared, reference, first, first_level, kind)
            server["levels"].append({"level": level, "figures": figures.to_dict(), "machine": busy, **judged})
            if records and all(r.error and r.error.startswith(UNREACHABLE) for r in records):
                server["stopped_early"] = (f"every request at {shown} failed to reach the server: the later levels "
                                           "were not run")
                break
    finally:
        backend.unload()
    return server


EOS_FIELDS = (("ignore_eos", "min_tokens"), ("logit_bias",))  # dropped in this order when a server refuses them


def _fit_body(backend, body: dict[str, Any]) -> tuple[str, ...]:
    """The ignore-EOS fields this server refuses (a strict server answers 400/422 to fields it does not know; the
    backend's probe asked without them): a 1-token request with each set of fields dropped in turn."""
    from arena.errors import ArenaError

    dropped: tuple[str, ...] = ()
    while True:
        try:
            for _ in backend.stream({k: v for k, v in body.items() if k not in dropped} | {"max_tokens": 1}):
                pass
            return dropped
        except ArenaError as exc:
            refused = any(f"HTTP {code}" in str(exc) for code in (400, 415, 422))
            more = next((fields for fields in EOS_FIELDS if not set(fields) <= set(dropped)
                         and any(f in body for f in fields)), None)
            if not refused or more is None:
                raise
            dropped += more


def _one(backend, body: dict[str, Any], prompt_index: int, origin: float, tokenizer) -> RequestRecord:
    """One streamed request, stamped on this process's clock relative to ``origin`` (the level's start). An answer
    shorter than asked (EOS is ignored) did not do the level's work: it fails, with the server's finish reason."""
    start = time.perf_counter()
    stamps: list[tuple[float, str, list[int], int]] = []
    error, finish = None, None
    try:
        for chunk in backend.stream(body):
            stamps.append((time.perf_counter(), chunk["text"], chunk["ids"], chunk["count"]))
            finish = chunk["finish"] or finish
    except Exception as exc:  # noqa: BLE001 - ServerError sentences; anything else is said as it is
        error = str(exc) or type(exc).__name__
    end = time.perf_counter()
    first = next((t for t, text, ids, count in stamps if text or ids or count), None)
    served = [i for _, _, chunk_ids, _ in stamps for i in chunk_ids]
    text = "".join(s[1] for s in stamps)
    ids = served or (tokenizer.encode(text, add_special_tokens=False).ids if text and tokenizer is not None else [])
    count = len(served) or sum(s[3] for s in stamps) or len(ids)  # the server's own count first
    if error is None and first is None:
        error = "The server answered with no tokens."
    elif error is None and count < body["max_tokens"] and finish != "length":
        # (finish "length" with fewer tokens: the re-tokenized text merged some; the figures warn of it)
        error = (f"The server ended the answer after {count} of {body['max_tokens']} tokens with finish reason "
                 f"{finish!r} although EOS is ignored: it cut the answer short.")
    return RequestRecord(prompt_index=prompt_index, start_s=start - origin, end_s=end - origin,
                         ttft_s=None if first is None else first - start, output_tokens=count, error=error,
                         token_ids=tuple(ids), text=text)


def _run_level(backend, bodies, kind: str, level: float, total: int, seed: int, tokenizer,
               tick: Callable[[int], None], cancel) -> list[RequestRecord]:
    """Every request of one level: ``level`` users in a closed loop, or Poisson arrivals at ``level`` req/s."""
    records: list[RequestRecord] = []
    lock = threading.Lock()
    queue = iter(range(total))
    origin = time.perf_counter()

    def send(i: int) -> None:
        record = _one(backend, bodies[i % len(bodies)], i % len(bodies), origin, tokenizer)
        with lock:
            records.append(record)
            tick(len(records))

    if kind == "concurrency":
        def user() -> None:
            while not (cancel is not None and cancel.is_set()):
                with lock:
                    i = next(queue, None)
                if i is None:
                    return
                send(i)

        users = int(level)
        with ThreadPoolExecutor(max_workers=users) as pool:
            for future in [pool.submit(user) for _ in range(users)]:
                future.result()
    else:
        gaps = np.random.default_rng(seed).exponential(1.0 / level, size=total)
        arrivals = np.cumsum(gaps) - gaps[0]  # the first request at once
        with ThreadPoolExecutor(max_workers=min(total, 256)) as pool:
            futures = []
            for i, at in enumerate(arrivals):
                if cancel is not None and cancel.is_set():
                    break
                delay = origin + float(at) - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(send, i))
            for future in futures:
                future.result()
    return sorted(records, key=lambda r: r.start_s)


def _judge_level(records: list[RequestRecord], prepared, reference, first: dict[int, tuple[int, ...]],
                 first_level: float, kind: str) -> dict[str, Any]:
    """Each answer against the reference's and against the same server's first-level answer; the level's verdict
    is the worst answer's kind, and DRIFT at least when answers moved from the first level's."""
    from arena.judging.verdicts import judge_text

    answers = []
    for r in records:
        if not r.ok:
            continue
        ref = reference["answers"][r.prompt_index] if reference else None
        usable = ref is not None and not ref["error"]
        # No reference: the server's own first-level answers are what the others are held to.
        ref_ids = ref["token_ids"] if usable else None if reference else first.get(r.prompt_index)
        verdict = judge_text(r.text, r.token_ids, "fp32", reference_ids=ref_ids,
                             unk_token_id=prepared[r.prompt_index].unk_token_id,
                             reference_failed=ref["error"] if ref and not usable else None)
        answers.append({"prompt_index": r.prompt_index, "kind": verdict.kind, "reason": verdict.reason,
                        "agreement": verdict.metrics.get("agreement"),
                        "same_as_first_level": first.get(r.prompt_index) == r.token_ids,
                        "token_ids": list(r.token_ids)})
    shown_first = f"{first_level:g} user(s)" if kind == "concurrency" else f"{first_level:g} req/s"
    if not answers:
        failures = Counter(r.error for r in records if r.error)
        why = failures.most_common(1)[0][0] if failures else "no request was sent"
        return {"verdict": {"kind": "ERROR", "reason": why, "broken": True}, "answers": []}
    kinds = Counter(a["kind"] for a in answers)
    worst = max(kinds, key=SEVERITY.index)
    moved = sum(not a["same_as_first_level"] for a in answers)
    parts = [", ".join(f"{count} {k}" for k, count in sorted(kinds.items(), key=lambda kv: SEVERITY.index(kv[0])))
             + (" against the reference" if reference else "")]
    if moved:
        parts.append(f"{moved} of {len(answers)} answers differ from this server's own at {shown_first} "
                     "(batching and scheduling change the numerics)")
        if SEVERITY.index(worst) < SEVERITY.index("DRIFT"):
            worst = "DRIFT"
    else:
        parts.append(f"every answer identical to this server's at {shown_first}")
    agreements = [a["agreement"] for a in answers if a["agreement"] is not None]
    return {"verdict": {"kind": worst, "reason": "; ".join(parts), "broken": worst in _broken(),
                        "counts": dict(kinds), "differ_from_first_level": moved,
                        "agreement": round(float(np.mean(agreements)), 3) if agreements else None},
            "answers": answers}


def _broken() -> set[str]:
    from arena.judging.verdicts import TEXT_BROKEN

    return TEXT_BROKEN
