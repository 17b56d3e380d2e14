"""`Pipeline`: wires one run's actors together on a connected Ray cluster and waits for it to end.
No logic of its own beyond wiring and the end-of-run sequence."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import ray

from actors.capture import CaptureActor, CaptureReport
from actors.detector import DetectorActor
from actors.gallery import GalleryKeeper
from actors.recognition import RECOGNITION_ACTORS
from actors.sinks import EventLogActor
from actors.tracker import TrackerActor
from core.config import TASKS, PipelineConfig, PoolSpec
from core.gallery import GalleryConfig
from core.private import private_dir
from core.sources import stream_name
from core.stats import RayTraffic
from models.detector import DetectorConfig
from models.registry import DEFAULT_MODELS, ModelRegistry
from schedulers.scheduler import PriorityScheduler, RunSummary

JOB_NAME = "facelive"
log = logging.getLogger("facelive.pipeline")


@dataclass(frozen=True, slots=True)
class RunResult:
    summary: RunSummary
    tracks: int
    fresh_share: float  # faces whose attributes are at most 0.5 s old
    carried: int  # output frames whose boxes were carried by tracking (live), not detected
    captures: tuple[CaptureReport, ...]
    videos: dict[str, str]
    events: str
    traffic: RayTraffic = RayTraffic({}, {})  # every Ray operation of the run that the scheduler or a tracker made


def named(actor_class, name: str, **options):
    """`actor_class.options(name="facelive:NAME", ...)`: the dashboard's Actors view then reads as
    the pipeline. A second run in the same Ray job gets the next free suffix."""
    for attempt in range(1000):
        full = f"{JOB_NAME}:{name}" + (f"~{attempt}" if attempt else "")
        try:
            ray.get_actor(full)
        except ValueError:
            return actor_class.options(name=full, **options)
    raise RuntimeError(f"no free actor name for {name}")


def spawn_pool_actor(spec: PoolSpec, config: PipelineConfig, name: str, gallery=None):
    """The scheduler's actor factory: one pool actor for `spec`. A dead actor is restarted with
    fresh state (state lives in the trackers); the scheduler retries or drops its call."""
    options = {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus, "max_restarts": -1, "max_task_retries": 0}
    # a pool given GPUs runs its models on one, or refuses to start: never a silent CPU fallback
    device = "gpu" if spec.num_gpus > 0 else "cpu"
    if spec.resources:
        options["resources"] = dict(spec.resources)
    if spec.task == "detection":
        models = {"detection": spec.model or config.detector_model}
        detector = DetectorConfig(threshold=config.detector_threshold, max_side=config.detector_max_side)
        return named(DetectorActor, name, **options).remote(models, detector, config.threads, config.models_file,
                                                            device)
    main_model = {"expression": "expression", "age_gender": "age", "identity": "identity"}[spec.task]
    models = {main_model: spec.model} if spec.model else None
    return named(RECOGNITION_ACTORS[spec.task], name, **options).remote(
        models, config.threads, config.models_file, gallery if spec.task == "identity" else None, device)


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
            self.gallery = named(GalleryKeeper, "gallery").remote(config.gallery, GalleryConfig(distance_scale=scale))
        self.scheduler = named(PriorityScheduler, "scheduler").remote(config, partial(spawn_pool_actor,
                                                                                     gallery=self.gallery))
        self.captures: list = []
        self.trackers: list = []
        self.event_log = None
        self.events_path = ""
        self.videos: dict[str, str] = {}

    def start(self) -> dict[str, int]:
        """Start the model pools, then each stream's capture (its source opened) and tracker and
        the run's event log, so the first frame waits for no process to start. Anything that fails
        stops every actor of the run."""
        try:
            sizes = ray.get(self.scheduler.start_pools.remote())
            self._open_streams()
        except BaseException:
            self.shutdown()
            raise
        return sizes

    def _open_streams(self) -> None:
        cfg = self.config
        private_dir(self.out)
        self.events_path = str((self.out / "events.msgpack").resolve())
        self.event_log = named(EventLogActor, "events").remote(self.events_path, self.view)
        realtime = cfg.mode == "live" if cfg.realtime is None else cfg.realtime
        labels = _labels(cfg)
        # a task whose pool has no actors is never asked for: its jobs would wait forever
        tasks = tuple(t for t in TASKS if t != "detection" and cfg.pool(t).count > 0)
        # Only a tracker that draws fetches pixels, and carried faces are followed by their motion
        # only there: fetching and following every frame for the events alone cost 4 --no-video
        # cameras here 82 % annotated and IDF1 0.37 against 99 % and 0.83 (detections they crowd out)
        looks = cfg.video or self.view is not None
        for i, source in enumerate(cfg.sources):
            stream = stream_name(source, i)
            # one frame more than the stream's window: the next frame waits in the scheduler
            window = cfg.in_flight_limit() + 1 if cfg.mode == "lossless" else None
            # nobody reads a carried frame's pixels here: the capture may put only those the
            # detector gets
            capture = named(CaptureActor, f"capture:{i}").remote(stream, source, self.scheduler, realtime,
                                                                 cfg.loop, cfg.duration, window, not looks)
            self.captures.append(capture)
            fps = ray.get(capture.open.remote())
            video = None
            if cfg.video:
                folder = self.out if len(cfg.sources) == 1 else self.out / stream.replace(":", "-")
                video = self.videos[stream] = str((folder / "annotated.mp4").resolve())
            self.trackers.append(named(TrackerActor, f"tracker:{i}").remote(
                stream, self.scheduler, (video, fps), self.event_log, cfg, labels, tasks, self.gallery, self.view,
                looks))
            ray.get(self.scheduler.register_stream.remote(stream, self.trackers[-1], looks,
                                                          None if looks else capture))
        ray.get([a.__ray_ready__.remote() for a in (*self.trackers, self.event_log)])

    def shutdown(self) -> None:
        """Stop every actor of the run (run() does at its end)."""
        try:
            ray.get(self.scheduler.shutdown.remote())
        except ray.exceptions.RayError as error:
            # a dead scheduler cannot stop its pools; the error that ended the run matters more
            log.warning("the scheduler could not stop its pools: %s", str(error).splitlines()[0])
        finally:
            for handle in [*self.captures, *self.trackers, *filter(None, [self.event_log, self.gallery]),
                           self.scheduler]:
                ray.kill(handle)

    def run(self) -> RunResult:
        """Run until every source ends (Ctrl-C stops the captures; frames in flight still finish).
        Every actor of the run is stopped at the end, also when it fails."""
        if self.event_log is None:
            self.start()
        try:
            runs = [c.run.remote() for c in self.captures]
            try:
                reports = ray.get(runs)
            except KeyboardInterrupt:
                self.stop()
                reports = ray.get(runs)
            ray.get(self.scheduler.drain.remote())
            ends = ray.get([t.finish.remote() for t in self.trackers])
            ray.get(self.event_log.close.remote())
            summary = ray.get(self.scheduler.summary.remote())
        finally:
            self.shutdown()
        shown = sum(r.faces_shown for r in ends)
        fresh = sum(r.faces_fresh for r in ends) / shown if shown else 0.0
        traffic = sum((r.traffic for r in ends), summary.traffic)
        return RunResult(summary, sum(r.tracks for r in ends), fresh, sum(r.frames_carried for r in ends),
                         tuple(reports), dict(self.videos), self.events_path, traffic)

    def stop(self) -> None:
        """Ask every capture to stop; frames in flight still finish."""
        for capture in self.captures:
            capture.stop.remote()
