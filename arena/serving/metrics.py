"""A level's figures from its requests' clock readings: latency percentiles, throughput and goodput.

Definitions follow the serving benchmarks (vLLM's ``bench serve``, NVIDIA AIPerf) so the numbers compare:
TTFT is the request's send to its first streamed token; inter-token latency (ITL) is a request's
``(end-to-end - TTFT) / (output tokens - 1)`` (AIPerf's ITL, vLLM's TPOT), and its percentiles are over requests;
end-to-end is send to the stream's end. Throughput divides by the level's wall time (the first request sent to
the last one done). Goodput counts the completed requests meeting every objective.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Latency:
    """Percentiles (linear interpolation, numpy's default, as vLLM and AIPerf) of one latency in seconds."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    min: float | None
    max: float | None

    @classmethod
    def from_values(cls, values: list[float]) -> Latency:
        if not values:
            return cls(0, None, None, None, None, None, None)
        array = np.asarray(values, dtype=float)
        p50, p90, p99 = (float(v) for v in np.percentile(array, PERCENTILES))
        return cls(len(values), float(array.mean()), p50, p90, p99, float(array.min()), float(array.max()))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RequestRecord:
    """One request of a level: its clock readings relative to the level's start, or why it failed."""

    prompt_index: int
    start_s: float
    end_s: float
    ttft_s: float | None = None
    output_tokens: int = 0
    error: str | None = None
    token_ids: tuple[int, ...] = ()
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def e2e_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def itl_s(self) -> float | None:
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


@dataclass(frozen=True)
class Objectives:
    """The latency objectives a good request meets (None: not set)."""

    ttft_s: float | None = None
    itl_s: float | None = None
    e2e_s: float | None = None

    def met(self, record: RequestRecord) -> bool:
        if not record.ok:
            return False
        checks = ((self.ttft_s, record.ttft_s), (self.itl_s, record.itl_s), (self.e2e_s, record.e2e_s))
        return all(value is not None and value <= bound for bound, value in checks if bound)

    def sentence(self) -> str:
        parts = [f"TTFT ≤ {self.ttft_s:g} s" if self.ttft_s else "",
                 f"ITL ≤ {self.itl_s * 1000:g} ms" if self.itl_s else "",
                 f"end-to-end ≤ {self.e2e_s:g} s" if self.e2e_s else ""]
        return ", ".join(p for p in parts if p) or "none (every completed request is good)"


@dataclass(frozen=True)
class LevelFigures:
    """What one level measured."""

    requests: int
    completed: int
    failed: int
    failures: dict[str, int]
    duration_s: float
    ttft_s: Latency
    itl_s: Latency
    e2e_s: Latency
    output_tokens: int
    output_tokens_per_s: float
    output_tokens_per_s_per_user: float | None
    requests_per_s: float
    goodput_share: float
    goodput_requests_per_s: float
    objectives: str
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_records(cls, records: list[RequestRecord], objectives: Objectives, expected_tokens: int) -> LevelFigures:
        done = [r for r in records if r.ok]
        duration = (max(r.end_s for r in records) - min(r.start_s for r in records)) if records else 0.0
        duration = max(duration, 1e-9)
        itls = [r.itl_s for r in done if r.itl_s is not None]
        tokens = sum(r.output_tokens for r in done)
        good = sum(objectives.met(r) for r in records)
        short = [r for r in done if r.output_tokens != expected_tokens]
        warnings = [f"{len(short)} request(s) returned other than {expected_tokens} tokens "
                    f"({', '.join(str(r.output_tokens) for r in short[:5])}): the server may not ignore EOS"] \
            if short else []
        return cls(requests=len(records), completed=len(done), failed=len(records) - len(done),
                   failures=dict(Counter(r.error for r in records if r.error).most_common()),
                   duration_s=duration, ttft_s=Latency.from_values([r.ttft_s for r in done if r.ttft_s is not None]),
                   itl_s=Latency.from_values(itls), e2e_s=Latency.from_values([r.e2e_s for r in done]),
                   output_tokens=tokens, output_tokens_per_s=tokens / duration,
                   output_tokens_per_s_per_user=float(np.mean([1 / v for v in itls if v > 0])) if itls else None,
                   requests_per_s=len(done) / duration, goodput_share=good / len(records) if records else 0.0,
                   goodput_requests_per_s=good / duration, objectives=objectives.sentence(), warnings=warnings)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("ttft_s", "itl_s", "e2e_s"):
            data[key] = getattr(self, key).to_dict()
        return data
