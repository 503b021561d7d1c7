"""What the last finished text runs measured here, for the line under the prompt (its token count and each
backend's time) and the prefill line of a run under way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arena.preparing.catalog import find_catalog_model


class RunEstimates:
    """{(model, backend): (time to first token s, its prompt's tokens, s per new token)} from the last finished text
    runs, and the folder each model resolved to (its tokenizer.json counts a prompt's tokens)."""

    def __init__(self, policy) -> None:
        self.policy = policy  # public mode parses no visitor's tokenizer in this process
        self._rates: dict[tuple[str, str], tuple[float, int, float]] = {}
        self._model_dirs: dict[str, str] = {}
        self._counters: dict[str, Any] = {}

    def resolved(self, model: str, folder: str) -> None:
        """A run resolved ``model`` to ``folder`` (its tokenizer counts the next prompts exactly)."""
        self._model_dirs[model] = folder

    def remember(self, request, prepared, results) -> None:
        """Each finished backend's prefill time per prompt token and time per new token, for the next estimate."""
        prompt_tokens = max(1, len(prepared.prompt_token_ids))
        for result in results:
            timings = getattr(result, "timings", None)
            if result.error or timings is None or not timings.ttft_s:
                continue
            per_token = 1.0 / timings.decode_tokens_per_s if timings.decode_tokens_per_s else timings.ttft_s
            self._rates[(request.model, result.spec.backend)] = (timings.ttft_s, prompt_tokens, per_token)

    def prompt_line(self, model: str, prompt: str, max_new_tokens: int | None, backends: list[str]) -> str:
        """One line under the prompt: its token count (exact with the model's tokenizer.json once a run has
        resolved the model; else about 4 characters a token) and, from the last runs of this model here, the
        time each ticked backend will take (prefill grows with the prompt: a linear guess is a lower bound)."""
        prompt = prompt or ""
        if not prompt.strip():
            return ""
        count, exact = self._count_tokens(model, prompt)
        line = (f"**{count:,} tokens** in the prompt (before its chat template)" if exact else
                f"**about {count:,} tokens** in the prompt ({len(prompt):,} characters at ~4 a token; counted "
                "exactly once a run has loaded this model)")
        guesses = []
        for name in backends:
            rate = self._rates.get((model, name))
            if rate is not None and max_new_tokens:
                seconds = self.prefill(model, name, count) + rate[2] * max_new_tokens
                guesses.append(f"{name} ~{seconds:,.0f} s" if seconds >= 1 else f"{name} <1 s")
        if guesses:
            line += (" · to generate, from this server's last runs of this model: " + ", ".join(guesses)
                     + " (plus loading and judging)")
        return line

    def _count_tokens(self, model: str, prompt: str) -> tuple[int, bool]:
        """(tokens, exact): the prompt counted by the model's own tokenizer.json (`tokenizers`, no torch) when a
        run resolved the model already (a public server: its own catalog models only, a visitor's tokenizer is
        not parsed in this process); else a character estimate."""
        estimate = (max(1, round(len(prompt) / 4)), False)
        folder = self._model_dirs.get(model)
        if folder is None or len(prompt) > 200_000 or (self.policy.public and find_catalog_model(model) is None):
            return estimate
        counter = self._counters.get(folder)
        if counter is None:
            try:
                from tokenizers import Tokenizer

                counter = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
            except Exception:  # noqa: BLE001 - no tokenizer.json (a GGUF's or an old format): estimate
                counter = False
            self._counters[folder] = counter
        if not counter:
            return estimate
        return len(counter.encode(prompt, add_special_tokens=False).ids), True

    def prefill(self, model: str, backend: str, prompt_tokens: int) -> float | None:
        """The last time to first token of ``backend`` on ``model`` here, scaled by the prompt's length when this
        one is longer (attention makes it grow faster still: a lower bound), not shrunk when it is shorter (a
        short prompt's first token is mostly fixed costs)."""
        rate = self._rates.get((model, backend))
        return None if rate is None else rate[0] * max(1.0, prompt_tokens / rate[1])
