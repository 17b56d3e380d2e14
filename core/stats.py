"""Throughput and latency per stage, for the run summary and the live view (the Ray dashboard gets
the same figures through `schedulers/metrics.py`)."""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class StageFigures:
    count: int
    fps: float
    p50_ms: float
    p95_ms: float


class StageStats:
    def __init__(self, window: int = 20000):
        self.window = window
        self._latency: dict[str, deque[float]] = {}
        self._count: dict[str, int] = {}
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def record(self, stage: str, now: float, latency_s: float, items: int = 1) -> None:
        self._latency.setdefault(stage, deque(maxlen=self.window)).append(latency_s)
        self._count[stage] = self._count.get(stage, 0) + items
        self._first.setdefault(stage, now - latency_s)
        self._last[stage] = now

    def figures(self) -> dict[str, StageFigures]:
        out = {}
        for stage, lat in self._latency.items():
            span = self._last[stage] - self._first[stage]
            ms = np.asarray(lat) * 1000
            out[stage] = StageFigures(self._count[stage], self._count[stage] / span if span > 0 else 0.0,
                                      float(np.percentile(ms, 50)), float(np.percentile(ms, 95)))
        return out


@dataclass(frozen=True, slots=True)
class RayTraffic:
    """Ray operations a run paid for, by what they were: actor calls, object fetches (a frame's
    pixels read out of the object store) and puts. Each has a CPU floor summed over the processes
    involved (BENCHMARKS.md, "Ray's own operations"), so their count per frame is a cost of the
    layout, apart from the models."""

    calls: dict[str, int]
    fetches: dict[str, int]
    puts: int = 0

    def __add__(self, other: RayTraffic) -> RayTraffic:
        return RayTraffic(dict(Counter(self.calls) + Counter(other.calls)),
                          dict(Counter(self.fetches) + Counter(other.fetches)), self.puts + other.puts)

    def per_frame(self, frames: int) -> tuple[float, float]:
        """(actor calls, fetches) per frame over `frames`."""
        n = max(frames, 1)
        return sum(self.calls.values()) / n, sum(self.fetches.values()) / n


class TrafficCounter:
    """Counts an actor's Ray operations as they happen; `traffic()` is what it saw."""

    def __init__(self):
        self.calls: Counter[str] = Counter()
        self.fetches: Counter[str] = Counter()
        self.puts = 0

    def call(self, kind: str, n: int = 1) -> None:
        self.calls[kind] += n

    def fetch(self, kind: str, n: int = 1) -> None:
        self.fetches[kind] += n

    def traffic(self) -> RayTraffic:
        return RayTraffic(dict(self.calls), dict(self.fetches), self.puts)
