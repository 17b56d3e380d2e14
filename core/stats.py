"""Throughput and latency per stage, for the run summary and the live view (the Ray dashboard gets
the same figures through `schedulers/metrics.py`)."""
from __future__ import annotations

from collections import deque
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
