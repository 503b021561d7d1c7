"""The dashboard's worker, able to run a runtime's own loop on the model it loaded (benchmarks only).

benchmarks/text_latency.py hosts each configuration in an `OwnLoopHost` instead of the plain `BackendHost`: the
dashboard's runs go through the host's code as usual, and ``own_loop`` runs benchmarks/bare_text.py's loop for
that runtime on the very model object the backend loaded, in the same process. Three runs side by side then
split the dashboard's distance from a bare script in two: the arena's code (dashboard against its own worker's
bare loop) and the process it runs in (its worker's bare loop against a bare script's).
"""

from __future__ import annotations

from typing import Any

from arena.running.host import BackendHost
from benchmarks.bare_text import STEPS, timed


class OwnLoopHost(BackendHost):
    def own_loop(self, kind: str, prompt: list[int], new_tokens: int, progress=None) -> dict[str, Any]:
        """One timed run of ``kind``'s bare loop (bare_text.STEPS) on this worker's loaded model."""
        if self.loaded_key is None:
            raise RuntimeError("nothing is loaded in this worker yet: run the configuration once first")
        model = self.backend.llm if kind == "llamacpp" else self.backend.model
        return timed(STEPS[kind](model, [int(t) for t in prompt], int(new_tokens)))
