"""`PriorityScheduler`: the async actor that applies `SchedulingPolicy`. It owns the pools (several
actors per task, on CPU or GPU workers), admits frames, sends detection and recognition work to
free actors by priority, and keeps the ledger where every frame ends exactly once."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from actors.detector import DetectorActor
from actors.metrics import PipelineMetrics
from actors.recognition import RECOGNITION_ACTORS, RecognitionJob
from core.config import TASKS, ConfigError, PipelineConfig, PoolSpec
from core.messages import FrameRef
from core.stats import StageFigures, StageStats
from core.stream import Recognised
from models.detector import DetectorConfig
from schedulers.policy import FrameLedger, SchedulingPolicy, WorkItem, Worker

log = logging.getLogger("facelive.scheduler")


@dataclass(frozen=True, slots=True)
class RunSummary:
    captured: int
    processed: int
    dropped: dict[str, int]
    stages: dict[str, StageFigures]
    faces: int
    seconds: float


def check_feasible(spec: PoolSpec, cluster: dict[str, float]) -> None:
    """An actor asking for what no node has stays pending forever in Ray: refuse it up front."""
    wants = {"CPU": spec.num_cpus, "GPU": spec.num_gpus, **spec.resources}
    for name, amount in wants.items():
        if amount > 0 and cluster.get(name, 0) < amount:
            hint = ("run without --gpu, or on a machine with a GPU" if name == "GPU" else
                    f"start a node with `ray start --address=HEAD:6379 --resources='{{\"{name}\": N}}'`")
            raise ConfigError(f"pool {spec.task!r} asks for {name}={amount:g} per actor but the cluster has "
                              f"{cluster.get(name, 0):g}; {hint}")


@ray.remote(num_cpus=0)
class PriorityScheduler:
    def __init__(self, config: PipelineConfig, gallery=None):
        self.config = config
        self.gallery = gallery
        specs = config.all_pools()
        self.specs = {s.task: s for s in specs}
        self.policy = SchedulingPolicy({s.task: s.priority for s in specs}, config.mode, config.in_flight_limit(),
                                        {s.task: (1 if s.task == "detection" else s.batch_size) for s in specs})
        self.ledger = FrameLedger()
        self.stats = StageStats()
        self.metrics = PipelineMetrics()
        self.trackers: dict[str, ray.actor.ActorHandle] = {}
        self.changed = asyncio.Event()
        self.faces = 0
        self.started = time.monotonic()
        self._next_worker = 0

    # ---- pools
    async def start_pools(self, timeout_s: float = 300.0) -> dict[str, int]:
        cluster = ray.cluster_resources()
        for spec in self.specs.values():
            check_feasible(spec, cluster)
        await self._ready([self._spawn(spec) for spec in self.specs.values() for _ in range(spec.count)], timeout_s)
        return self.pool_sizes()

    async def resize_pool(self, task: str, count: int) -> dict[str, int]:
        """Grow or shrink a task's pool while frames flow: new actors join once ready, surplus
        ones finish the batch they hold and leave."""
        live = [w for w in self.policy.workers.values() if w.task == task and not w.retired]
        if count > len(live):
            await self._ready([self._spawn(self.specs[task]) for _ in range(count - len(live))])
        for worker in live[count:]:
            self._retire(worker)
        return self.pool_sizes()

    async def swap_model(self, task: str, model: str | None = None, detector_threshold: float | None = None) -> dict[str, int]:
        """Replace a task's actors with ones running another model (or detector threshold): the new
        pool starts and takes over, the old one drains; no frame is lost or counted twice."""
        if detector_threshold is not None:
            self.config = replace(self.config, detector_threshold=detector_threshold)
        self.specs[task] = replace(self.specs[task], model=model or self.specs[task].model)
        old = [w for w in self.policy.workers.values() if w.task == task and not w.retired]
        await self._ready([self._spawn(self.specs[task]) for _ in range(max(1, len(old)))])
        for worker in old:
            self._retire(worker)
        self._pump()
        return self.pool_sizes()

    async def _ready(self, handles, timeout_s: float = 300.0) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*[h.__ray_ready__.remote() for h in handles]), timeout_s)
        except asyncio.TimeoutError:
            raise ConfigError(f"pool actors not running after {timeout_s:.0f} s: the cluster lacks the resources "
                              f"they ask for ({ray.available_resources()} available)") from None

    def _retire(self, worker: Worker) -> None:
        worker.retired = True
        if not worker.busy:
            self._release(worker)

    def _release(self, worker: Worker) -> None:
        self.policy.remove_worker(worker.worker_id)
        ray.kill(worker.handle)

    def _spawn(self, spec: PoolSpec):
        cfg = self.config
        # a dead actor is restarted with fresh state (state lives in the trackers); lossless re-runs
        # the call it was in (at-least-once), live gives it up and counts the frame as lost
        options = {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus, "max_restarts": -1,
                   "max_task_retries": -1 if cfg.mode == "lossless" else 0}
        if spec.resources:
            options["resources"] = dict(spec.resources)
        if spec.task == "detection":
            models = {"detection": spec.model} if spec.model else None
            det = DetectorConfig(threshold=cfg.detector_threshold, max_side=cfg.detector_max_side)
            handle = DetectorActor.options(**options).remote(models, det, cfg.threads, cfg.models_file)
        else:
            main_model = {"expression": "expression", "age_gender": "age", "identity": "identity"}[spec.task]
            models = {main_model: spec.model} if spec.model else None
            extra = (self.gallery,) if spec.task == "identity" else ()
            handle = RECOGNITION_ACTORS[spec.task].options(**options).remote(models, cfg.threads, cfg.models_file, *extra)
        self._next_worker += 1
        self.policy.add_worker(Worker(f"{spec.task}-{self._next_worker}", spec.task, handle))
        return handle

    def pool_sizes(self) -> dict[str, int]:
        sizes = {t: sum(1 for w in self.policy.workers.values() if w.task == t and not w.retired) for t in TASKS}
        for task, count in sizes.items():
            self.metrics.actors.set(count, tags={"task": task})
        return sizes

    async def pool_places(self) -> dict[str, list[tuple[str, int]]]:
        """(node id, pid) of every pool actor, by task: where Ray placed them."""
        workers = [w for w in self.policy.workers.values() if not w.retired]
        places = await asyncio.gather(*[w.handle.where.remote() for w in workers])
        out: dict[str, list[tuple[str, int]]] = {}
        for worker, place in zip(workers, places):
            out.setdefault(worker.task, []).append(tuple(place))
        return out

    def register_stream(self, stream: str, tracker) -> None:
        self.trackers[stream] = tracker

    # ---- frames
    async def admit(self, frame: FrameRef) -> bool:
        """Lossless: returns once the frame is queued (backpressure). Live: returns at once."""
        self.ledger.capture(frame.stream, frame.seq)
        self.metrics.frames_in.inc(tags={"stream": frame.stream})
        item = WorkItem("detection", frame.stream, frame.seq, time.monotonic(), frame)
        while True:
            decision = self.policy.admit(item, self.ledger.open_frames(frame.stream) - 1)
            if decision.accepted:
                break
            self.changed.clear()
            await self.changed.wait()
        for stale in decision.dropped:
            self._drop(stale, "stale")
        self._pump()
        return item not in decision.dropped

    async def drop_uncaptured(self, stream: str, seq: int, reason: str) -> None:
        self.ledger.capture(stream, seq)
        self.metrics.frames_in.inc(tags={"stream": stream})
        self._drop(WorkItem("detection", stream, seq, time.monotonic()), reason)

    def _drop(self, item: WorkItem, reason: str) -> None:
        if self.ledger.finish(item.stream, item.seq, reason):
            self.metrics.frames_dropped.inc(tags={"stream": item.stream, "reason": reason})
            # the tracker must still learn the frame is gone, or it waits for it forever
            self.trackers[item.stream].on_detections.remote(item.stream, item.seq, 0.0, None, None)
            self._notify()

    async def frame_done(self, stream: str, seq: int, t_capture: float) -> None:
        if self.ledger.finish(stream, seq):
            self.metrics.frames_processed.inc(tags={"stream": stream})
            latency = time.time() - t_capture
            self.stats.record("end_to_end", time.monotonic(), latency)
            self.metrics.latency.observe(latency * 1000, tags={"stage": "end_to_end"})
        self._notify()

    async def drain(self) -> None:
        while self.ledger.open_frames():
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 1.0)
            except asyncio.TimeoutError:
                self._pump()

    def _notify(self) -> None:
        self.changed.set()
        self._pump()

    # ---- recognition
    async def recognize(self, job: RecognitionJob) -> Recognised | None:
        """Run one job at its task's priority; None when it went stale (live) or its actor failed."""
        future = asyncio.get_running_loop().create_future()
        self.policy.push(WorkItem(job.task, job.stream, job.seq, time.monotonic(), (job, future)))
        self._pump()
        return await future

    # ---- dispatch
    def _pump(self) -> None:
        now = time.monotonic()
        for task in self.policy.queues:
            for item in self.policy.expire(now, self.config.max_age_s, task):
                if task == "detection":
                    self._drop(item, "stale")
                else:
                    item.payload[1].set_result(None)
        for dispatch in self.policy.next_dispatches():
            asyncio.create_task(self._execute(dispatch))
        for task in self.policy.queues:
            self.metrics.queue_depth.set(self.policy.queue_depth(task), tags={"task": task})
            self.metrics.busy.set(self.policy.busy(task), tags={"task": task})

    async def _execute(self, dispatch) -> None:
        worker = dispatch.worker
        started = time.monotonic()
        try:
            if worker.task == "detection":
                await self._detect(worker, dispatch.items[0])
            else:
                await self._recognise(worker, dispatch.items)
            elapsed = time.monotonic() - started
            self.stats.record(worker.task, time.monotonic(), elapsed, len(dispatch.items))
            self.metrics.latency.observe(elapsed * 1000, tags={"stage": worker.task})
        finally:
            self.policy.done(worker.worker_id)
            if worker.retired:
                self._release(worker)
            self._pump()

    async def _detect(self, worker: Worker, item: WorkItem) -> None:
        frame: FrameRef = item.payload
        faces_ref, crops_ref = worker.handle.detect.remote(frame)
        try:
            faces = await faces_ref
        except RayActorError as error:
            log.warning("detector %s failed on %s#%d: %s", worker.worker_id, frame.stream, frame.seq, error)
            if self.config.mode == "lossless":
                self.policy.push(replace(item, t_enqueue=time.monotonic()))
            else:
                self._drop(item, "actor_failure")
            return
        self.faces += len(faces)
        if len(faces):  # Ray's counters refuse 0
            self.metrics.faces.inc(len(faces), tags={"stream": frame.stream})
        self.trackers[frame.stream].on_detections.remote(frame.stream, frame.seq, frame.t_stream, faces,
                                                         [crops_ref], frame)

    async def _recognise(self, worker: Worker, items) -> None:
        jobs = [item.payload[0] for item in items]
        try:
            results = await worker.handle.run.remote(jobs)
        except (RayActorError, ray.exceptions.RayTaskError, GetTimeoutError) as error:
            log.warning("%s failed on %d job(s): %s", worker.worker_id, len(jobs), error)
            results = [None] * len(jobs)
        for item, result in zip(items, results):
            if not item.payload[1].done():
                item.payload[1].set_result(result)

    def shutdown(self) -> None:
        """Stop every pool actor: a finished run gives its CPUs back to the cluster."""
        for worker in list(self.policy.workers.values()):
            self._release(worker)

    # ---- reporting
    def summary(self) -> RunSummary:
        return RunSummary(self.ledger.captured, self.ledger.processed, dict(self.ledger.dropped),
                          self.stats.figures(), self.faces, time.monotonic() - self.started)
