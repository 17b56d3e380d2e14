"""The actor pipeline against the sequential baseline, measured in one run on one machine."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.config import PipelineConfig
from core.budget import BudgetConfig

# every task on every face of every frame: the same work as the sequential baseline
EVERY_FRAME = BudgetConfig(expression_interval_s=0.0, age_gender_interval_s=0.0, age_gender_refresh_s=0.0,
                           identity_refresh_s=0.0, identity_unknown_refresh_s=0.0)


@dataclass(frozen=True, slots=True)
class PipelineFigures:
    label: str
    frames: int
    seconds: float
    fresh_share: float
    p50_ms: float
    p95_ms: float
    dropped: int

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def run_pipeline(video: str, out: Path, label: str, budget: BudgetConfig | None = None, mode: str = "lossless",
                 realtime: bool = False) -> PipelineFigures:
    from actors.pipeline import Pipeline

    config = PipelineConfig(sources=(video,), mode=mode, realtime=realtime)
    if budget is not None:
        config = replace(config, budget=budget)
    pipeline = Pipeline(config, out)
    pipeline.start()
    start = time.perf_counter()
    result = pipeline.run()
    seconds = time.perf_counter() - start
    e2e = result.summary.stages.get("end_to_end")
    return PipelineFigures(label, result.summary.processed, seconds, result.fresh_share,
                           e2e.p50_ms if e2e else 0.0, e2e.p95_ms if e2e else 0.0,
                           sum(result.summary.dropped.values()))


def hop_cost_ms(shape=(480, 640, 3), repeats: int = 100) -> float:
    """ms to put one frame into the object store and get it back in another process's view."""
    import ray

    @ray.remote(num_cpus=0)
    def touch(frames):
        return ray.get(frames[0]).shape[0]

    frame = np.random.default_rng(0).integers(0, 255, shape, np.uint8)
    ray.get(touch.remote([ray.put(frame)]))
    start = time.perf_counter()
    for _ in range(repeats):
        ray.get(touch.remote([ray.put(frame)]))
    return 1000 * (time.perf_counter() - start) / repeats
