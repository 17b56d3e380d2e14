"""`Pipeline`: wires one run's actors together on a connected Ray cluster and waits for it to end.
No logic of its own beyond wiring and the end-of-run sequence."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ray

from actors.capture import CaptureActor, CaptureReport
from actors.gallery import GalleryKeeper
from actors.sinks import EventLogActor, VideoSinkActor
from actors.tracker import TrackerActor
from core.config import PipelineConfig
from core.gallery import GalleryConfig
from core.sources import stream_name
from models.registry import DEFAULT_MODELS, ModelRegistry
from schedulers.scheduler import PriorityScheduler, RunSummary


@dataclass(frozen=True, slots=True)
class RunResult:
    summary: RunSummary
    tracks: int
    fresh_share: float  # faces whose attributes are at most 0.5 s old
    captures: tuple[CaptureReport, ...]
    videos: dict[str, str]
    events: str


def _labels(config: PipelineConfig):
    registry = ModelRegistry()
    if config.models_file:
        registry.add_file(config.models_file)
    age = registry.get(DEFAULT_MODELS["age"])
    return (age.values, registry.get(DEFAULT_MODELS["gender"]).labels,
            registry.get(DEFAULT_MODELS["expression"]).labels)


class Pipeline:
    def __init__(self, config: PipelineConfig, out: Path, view=None):
        self.config, self.out, self.view = config, Path(out), view
        self.gallery = None
        if config.gallery or config.enrol_unknown:
            registry = ModelRegistry()
            scale = registry.get(DEFAULT_MODELS["identity"]).distance_scale
            self.gallery = GalleryKeeper.remote(config.gallery, GalleryConfig(distance_scale=scale))
        self.scheduler = PriorityScheduler.remote(config, self.gallery)
        self.captures: list = []

    def start(self) -> dict[str, int]:
        return ray.get(self.scheduler.start_pools.remote())

    def run(self) -> RunResult:
        """Run until every source ends (Ctrl-C stops the captures; frames in flight still finish).
        Every actor of the run is stopped at the end, also when it fails."""
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        events_path = str((self.out / "events.msgpack").resolve())
        event_log = EventLogActor.remote(events_path, self.view)
        realtime = cfg.mode == "live" if cfg.realtime is None else cfg.realtime
        labels = _labels(cfg)
        trackers, sinks, videos = [], [], {}
        try:
            for i, source in enumerate(cfg.sources):
                stream = stream_name(source, i)
                capture = CaptureActor.remote(stream, source, self.scheduler, realtime, cfg.loop, cfg.duration)
                self.captures.append(capture)
                fps = ray.get(capture.open.remote())
                folder = self.out if len(cfg.sources) == 1 else self.out / stream.replace(":", "-")
                videos[stream] = str((folder / "annotated.mp4").resolve())
                sinks.append(VideoSinkActor.remote(videos[stream], fps, stream, self.view))
                trackers.append(TrackerActor.remote(stream, self.scheduler, sinks[-1], event_log, cfg, labels,
                                                    self.gallery))
                ray.get(self.scheduler.register_stream.remote(stream, trackers[-1]))
            runs = [c.run.remote() for c in self.captures]
            try:
                reports = ray.get(runs)
            except KeyboardInterrupt:
                self.stop()
                reports = ray.get(runs)
            ray.get(self.scheduler.drain.remote())
            ends = ray.get([t.finish.remote() for t in trackers])
            ray.get([s.close.remote() for s in sinks] + [event_log.close.remote()])
            summary = ray.get(self.scheduler.summary.remote())
        finally:
            ray.get(self.scheduler.shutdown.remote())
            for handle in [*self.captures, *trackers, *sinks, event_log, self.scheduler, *filter(None, [self.gallery])]:
                ray.kill(handle)
        shown = sum(r.faces_shown for r in ends)
        fresh = sum(r.faces_fresh for r in ends) / shown if shown else 0.0
        return RunResult(summary, sum(r.tracks for r in ends), fresh, tuple(reports), videos, events_path)

    def stop(self) -> None:
        """Ask every capture to stop; frames in flight still finish."""
        for capture in self.captures:
            capture.stop.remote()
