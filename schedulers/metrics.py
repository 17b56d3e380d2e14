"""facelive's metrics in Ray's metrics system (dashboard, Prometheus export; Ray prefixes them
`ray_`). One place for every name and tag."""
from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

LATENCY_BOUNDARIES_MS = [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120]


class PipelineMetrics:
    def __init__(self):
        self.frames_in = Counter("facelive_frames_in", "frames captured", tag_keys=("stream",))
        self.frames_processed = Counter("facelive_frames_processed", "frames fully processed", tag_keys=("stream",))
        self.frames_dropped = Counter("facelive_frames_dropped", "frames dropped, by reason", tag_keys=("stream", "reason"))
        self.faces = Counter("facelive_faces", "faces detected", tag_keys=("stream",))
        self.latency = Histogram("facelive_stage_latency_ms", "latency per stage in ms", LATENCY_BOUNDARIES_MS,
                                 tag_keys=("stage",))
        self.queue_depth = Gauge("facelive_queue_depth", "work waiting per task", tag_keys=("task",))
        self.busy = Gauge("facelive_busy_actors", "calls in flight per task (recognition: summed over the trackers)",
                          tag_keys=("task",))
        self.actors = Gauge("facelive_pool_actors", "actors per task", tag_keys=("task",))
