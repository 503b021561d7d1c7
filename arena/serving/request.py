"""The load sweep's request, declared once (`arena.fields.request_field`): the CLI's flags, the API's signature
and the form are read from here, as for text and image runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from arena.fields import RequestFields, request_field
from arena.preparing.catalog import DEFAULT_TEXT_MODEL
from arena.types import BackendSpec, parse_backends

DEFAULT_LOAD_PROMPTS = (
    "Why should one run machine learning models on-premises?",
    "Write a short poem about the sea.",
    "Explain what a neural network is to a child.",
    "List three uses of a hash table.",
)
MAX_LEVELS = 12
MAX_CONCURRENCY = 256


def parse_levels(text: Any, what: str, integer: bool) -> tuple[float, ...]:
    """"1,2,4,8" as numbers, each positive (whole for concurrency), at most `MAX_LEVELS`; a ValueError sentence."""
    parts = [p.strip() for p in str(text or "").replace(";", ",").split(",") if p.strip()]
    if len(parts) > MAX_LEVELS:
        raise ValueError(f"A sweep takes at most {MAX_LEVELS} {what} levels (asked: {len(parts)}).")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"The {what} levels are numbers separated by commas (like 1,2,4,8), not "
                             f"{part[:20]!r}.") from None
        if value <= 0 or (integer and value != int(value)):
            raise ValueError(f"Each {what} level is a {'whole ' if integer else ''}number above 0, not {part!r}.")
        if integer and value > MAX_CONCURRENCY:
            raise ValueError(f"Concurrency is at most {MAX_CONCURRENCY} users, not {part}.")
        values.append(int(value) if integer else value)
    return tuple(values)


def server_backends() -> tuple[str, ...]:
    """The backends a sweep can measure: clients of servers that take concurrent requests (the registry says)."""
    from arena.registry import all_backends

    return tuple(name for name, cls in all_backends().items() if cls.serves_concurrent_requests)


def _servers(value: Any) -> tuple[BackendSpec, ...]:
    specs = parse_backends(value)
    for spec in specs:
        if spec.backend not in server_backends():
            raise ValueError(f"A load sweep measures servers ({', '.join(server_backends())} with base_url=...), "
                             f"not '{spec.backend}': the local backends run one request at a time in their worker.")
    return specs


@dataclass(frozen=True)
class LoadRunRequest(RequestFields):
    """One sweep: the same prompts, the same output lengths (EOS ignored) at every level, after warm-up."""

    task: ClassVar[str] = "load"

    model: str = request_field(DEFAULT_TEXT_MODEL, kind="text", label="Model", blank_is_default=True,
                               help="the model the server serves, as the arena knows it (catalog key, hub id or "
                                    "folder): its tokenizer renders the prompts and its reference judges the answers")
    backends: tuple[BackendSpec, ...] = request_field(
        kind="backends", label="Servers", default_factory=tuple, parser=_servers,
        help='OpenAI-compatible servers, e.g. {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1"}; each '
             "is swept in turn")
    concurrency: str = request_field("1,2,4,8", kind="text", label="Concurrency levels (users)",
                                     blank_is_default=True, help="closed loop: this many requests in flight")
    rates: str = request_field("", kind="text", label="Request rates (req/s; Poisson)",
                               help="instead of concurrency: open loop, Poisson arrivals at these rates")
    prompts: str = request_field("", kind="text", label="Prompts (one per line; empty: four built-in)",
                                 help="the fixed prompt set, cycled over each level's requests")
    requests: int = request_field(8, kind="int", label="Requests per level", minimum=1, maximum=10_000,
                                  form_maximum=200, help="every level sends the same requests")
    max_new_tokens: int = request_field(32, kind="int", label="Output tokens per request", minimum=1, maximum=4096,
                                        form_maximum=512, help="fixed output length: EOS is ignored")
    warmup: int = request_field(1, kind="int", label="Warm-up requests", minimum=0, maximum=100,
                                help="sent before the first level, not measured")
    ttft_slo_s: float = request_field(1.0, kind="float", label="Objective: TTFT ≤ (s)", minimum=0,
                                      help="goodput counts the requests meeting every objective (0: none)")
    itl_slo_ms: float = request_field(100.0, kind="float", label="Objective: inter-token latency ≤ (ms)",
                                      minimum=0, help="mean per request, as AIPerf and vLLM's TPOT (0: none)")
    e2e_slo_s: float = request_field(0.0, kind="float", label="Objective: end-to-end ≤ (s)", minimum=0,
                                     help="0: none")
    reference: str = request_field("auto", kind="text", label="Reference", blank_is_default=True,
                                   help='judge every answer against this backend\'s greedy answer: "auto" (PyTorch '
                                        'fp32), a backend name, or "off"')
    seed: int = request_field(0, kind="int", label="Seed (Poisson arrivals)", minimum=0, maximum=2**32 - 1)

    def levels(self) -> tuple[str, tuple[float, ...]]:
        """("rate", rates) when rates are given, else ("concurrency", levels)."""
        if str(self.rates).strip():
            return "rate", parse_levels(self.rates, "rate", integer=False)
        return "concurrency", parse_levels(self.concurrency, "concurrency", integer=True)

    def prompt_list(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in str(self.prompts).splitlines() if p.strip()) or DEFAULT_LOAD_PROMPTS

    def refuse(self) -> str | None:
        """Bounds and the levels' syntax, as one sentence (None: fine)."""
        problem = self.refuse_bounds()
        if problem:
            return problem
        if not self.backends:
            return 'Give the server to sweep: {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1"}.'
        try:
            kind, levels = self.levels()
        except ValueError as exc:
            return str(exc)
        if not levels:
            return "Give at least one concurrency level (like 1,2,4,8)."
        return None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["backends"] = [b.to_dict() for b in self.backends]
        return data
