"""The sequential baseline: one process, one loop, every model on every face of every frame.
The actor pipeline is measured against it."""
from __future__ import annotations

import time
from dataclasses import dataclass

from core.media import VideoFrames
from models.analyzer import FaceAnalyzer


@dataclass(frozen=True, slots=True)
class BaselineResult:
    frames: int
    faces: int
    seconds: float
    cpu_seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def run_sequential(video: str, analyzer: FaceAnalyzer, max_frames: int | None = None, progress=None) -> BaselineResult:
    frames = faces = 0
    wall, cpu = time.perf_counter(), time.process_time()
    with VideoFrames(video) as source:
        for _, _, image in source:
            faces += len(analyzer.analyze(image).faces)
            frames += 1
            if progress:
                progress()
            if max_frames and frames >= max_frames:
                break
    return BaselineResult(frames, faces, time.perf_counter() - wall, time.process_time() - cpu)
