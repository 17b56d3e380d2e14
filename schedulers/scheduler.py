"""`PriorityScheduler`: the async actor that applies `SchedulingPolicy`. It admits frames, sends
detection and recognition work to free pool actors by priority, and keeps the ledger where every
frame ends exactly once. Pool actors come from `PoolManager`; results go where they are used:
detections straight from the detector to the stream's tracker, never through here."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import ray

from core.config import PipelineConfig
from core.messages import DoneReport, FrameRef, Recognised, RecognitionJob
from core.stats import RayTraffic, StageFigures, StageStats, TrafficCounter
from schedulers.metrics import PipelineMetrics
from schedulers.policy import FrameLedger, SchedulingPolicy, WorkItem, Worker
from schedulers.pools import ActorFactory, PoolManager

log = logging.getLogger("facelive.scheduler")


@dataclass(frozen=True, slots=True)
class RunSummary:
    captured: int
    processed: int
    dropped: dict[str, int]
    stages: dict[str, StageFigures]
    faces: int
    seconds: float
    carried: int = 0  # processed frames shown with tracked, not detected, boxes (live)
    devices: dict[str, dict[str, str]] | None = None  # task -> model -> where it runs
    # the Ray operations this actor made, answered or caused; the trackers add their own
    traffic: RayTraffic = RayTraffic({}, {})
    detected: dict[str, int] = field(default_factory=dict)  # stream -> frames the detector saw


@ray.remote(num_cpus=0)
class PriorityScheduler:
    def __init__(self, config: PipelineConfig, factory: ActorFactory):
        self.config = config
        # identity actors check their gallery replica once per batch
        self.gallery_synced = bool(config.gallery or config.enrol_unknown)
        specs = config.all_pools()
        self.policy = SchedulingPolicy({s.task: s.priority for s in specs}, config.mode, config.in_flight_limit(),
                                        {s.task: s.batch_size for s in specs}, carry=config.carry,
                                        batch_waits={s.task: s.batch_wait_s for s in specs})
        self.pools = PoolManager(config, self.policy, factory)
        self.ledger = FrameLedger()
        self.stats = StageStats()
        self.traffic = TrafficCounter()
        self.metrics = PipelineMetrics()
        self.trackers: dict[str, ray.actor.ActorHandle] = {}
        self.blind: set[str] = set()  # streams whose tracker looks at no pixels (see register_stream)
        self.holders: dict[str, ray.actor.ActorHandle] = {}  # stream -> its capture, where it may hold pixels
        # admitted frames whose handles recognition jobs may still need, until their tracker
        # releases them (or they are dropped), each with the answer its open admit call awaits
        self.frames: dict[tuple[str, int], tuple[FrameRef, asyncio.Future]] = {}
        self.changed = asyncio.Event()
        self.faces = 0
        self.carried = 0
        self.detected: Counter[str] = Counter()
        self.started = time.monotonic()
        self._attempts: dict[tuple[str, int], int] = {}
        self._sent: set[tuple[str, int]] = set()  # frames sent to detection, until let go of
        self._gauges_at = 0.0
        self._wake: asyncio.TimerHandle | None = None

    # ---- pools
    async def start_pools(self, timeout_s: float = 300.0) -> dict[str, int]:
        await self.pools.start(timeout_s)
        return self.pool_sizes()

    async def resize_pool(self, task: str, count: int) -> dict[str, int]:
        await self.pools.resize(task, count, 300.0)
        self._pump()
        return self.pool_sizes()

    async def swap_model(self, task: str, model: str | None = None, detector_threshold: float | None = None) -> dict[str, int]:
        """Replace a task's actors with ones running another model (or detector threshold): no
        frame is lost or counted twice."""
        if detector_threshold is not None:
            self.config = replace(self.config, detector_threshold=detector_threshold)
            self.pools.config = self.config
        await self.pools.swap(task, model, 300.0)
        self._pump()
        return self.pool_sizes()

    def pool_sizes(self) -> dict[str, int]:
        sizes = self.pools.sizes()
        for task, n in sizes.items():
            self.metrics.actors.set(n, tags={"task": task})
        return sizes

    async def pool_places(self) -> dict[str, list[tuple[str, int]]]:
        """(node id, pid) of every pool actor, by task: where Ray placed them."""
        workers = [w for w in self.policy.workers.values() if not w.retired]
        places = await asyncio.gather(*[w.handle.where.remote() for w in workers])
        out: dict[str, list[tuple[str, int]]] = {}
        for worker, place in zip(workers, places):
            out.setdefault(worker.task, []).append(tuple(place))
        return out

    def register_stream(self, stream: str, tracker, looks: bool = True, holder=None) -> None:
        """`looks`: the stream's tracker uses frames' pixels (it draws a video or a live view, and
        follows faces through carried frames by their motion); if not, it is sent no frame
        handle, so it neither fetches pixels nor borrows a reference it does not use. `holder`:
        the stream's capture where it holds its frames' pixels (`CaptureActor.pixels`): its
        offers come without a handle, and a frame's pixels are asked for as it goes to detection."""
        self.trackers[stream] = tracker
        if not looks:
            self.blind.add(stream)
        if holder is not None:
            self.holders[stream] = holder

    def _for_tracker(self, frame: FrameRef, call: str) -> FrameRef:
        """The frame as `call` (a tracker method about to be called with it) gets it."""
        self.traffic.call(f"tracker.{call}")
        if frame.stream in self.blind:
            return replace(frame, ref=None)
        self.traffic.fetch("tracker")
        return frame

    # ---- frames
    async def admit(self, frame: FrameRef) -> bool:
        """Queue the frame (lossless: once the stream has room, which is the capture's
        backpressure), and answer when this actor lets go of its handle: the frame's recognition
        is over, or it was dropped. Ray 2.60 keeps an entry in the owner's (the capture's) object
        table for good for every handle a borrower still holds when the call that brought it
        returns (bench/borrow_leak.py): one per frame, for as long as a camera runs. True if the
        frame went to detection, False if it was carried or dropped (`PixelHolding` counts them)."""
        key = (frame.stream, frame.seq)
        self.traffic.call("scheduler.admit")
        self.traffic.puts += frame.ref is not None  # the capture's, of this frame
        self.ledger.capture(frame.stream, frame.seq)
        self.metrics.frames_in.inc(tags={"stream": frame.stream})
        released = asyncio.get_running_loop().create_future()
        self.frames[key] = (frame, released)
        item = WorkItem("detection", frame.stream, frame.seq, time.monotonic(), frame)
        while True:
            decision = self.policy.admit(item, self.ledger.open_frames(frame.stream) - 1)
            if decision.accepted:
                break
            self.changed.clear()
            await self.changed.wait()
        for stale in decision.dropped:
            self._drop(stale, "stale")
        for carried in decision.carried:
            self.carried += 1
            self.trackers[carried.stream].on_carried.remote(self._for_tracker(carried.payload, "on_carried"))
        self._pump()
        return await released

    async def drop_uncaptured(self, stream: str, seq: int, reason: str) -> None:
        self.traffic.call("scheduler.drop_uncaptured")
        self.ledger.capture(stream, seq)
        self.metrics.frames_in.inc(tags={"stream": stream})
        self._drop(WorkItem("detection", stream, seq, time.monotonic()), reason)

    def _let_go(self, stream: str, seq: int) -> None:
        held = self.frames.pop((stream, seq), None)
        detected = (stream, seq) in self._sent
        self._sent.discard((stream, seq))
        if held is not None and not held[1].done():
            held[1].set_result(detected)

    def _drop(self, item: WorkItem, reason: str) -> None:
        self._let_go(item.stream, item.seq)
        if self.ledger.finish(item.stream, item.seq, reason):
            self.metrics.frames_dropped.inc(tags={"stream": item.stream, "reason": reason})
            # the tracker must still learn the frame is gone, or it waits for it forever
            self.traffic.call("tracker.on_dropped")
            self.trackers[item.stream].on_dropped.remote(item.seq)
            self._notify()

    def frames_done(self, report: DoneReport) -> None:
        """A tracker's report when it has no recognition call to send it with (`recognize`)."""
        self.traffic.call("scheduler.frames_done")
        self._apply_report(report)
        self._pump()

    def _apply_report(self, report: DoneReport) -> None:
        """Takes the report in and wakes the offers waiting for room; the caller pumps, once for
        whatever else its call brought."""
        self.policy.needs[report.stream] = report.need
        for seq in report.released:
            self._let_go(report.stream, seq)
        done = 0
        for seq, t_capture, t_out in report.frames:
            if self.ledger.finish(report.stream, seq):
                done += 1
                latency = t_out - t_capture
                self.stats.record("end_to_end", time.monotonic(), latency)
                self.metrics.latency.observe(latency * 1000, tags={"stage": "end_to_end"})
        if done:
            self.metrics.frames_processed.inc(done, tags={"stream": report.stream})
        self.changed.set()

    async def drain(self, timeout_s: float | None = None) -> int:
        """Wait until every admitted frame has ended; returns the frames still open when
        `timeout_s` ran out (0 when all ended)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.ledger.open_frames() and (deadline is None or time.monotonic() < deadline):
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 1.0)
            except asyncio.TimeoutError:
                self._pump()
        return self.ledger.open_frames()

    def _notify(self) -> None:
        self.changed.set()
        self._pump()

    # ---- recognition
    async def recognize(self, jobs: list[RecognitionJob], report: DoneReport | None = None) -> list[Recognised | None]:
        """Run a frame's jobs, each at its task's priority; a job's result is None when it went
        stale (live) or its actor failed. `report`: the tracker's news since its last call, which
        rides here rather than in a `frames_done` call of its own."""
        self.traffic.call("scheduler.recognize")
        if report is not None:
            self._apply_report(report)
        loop = asyncio.get_running_loop()
        futures = []
        for job in jobs:
            futures.append(loop.create_future())
            held = self.frames.get((job.stream, job.seq))
            # a pool resized to 0 (nobody would ever answer), or a frame no longer held
            if not self.pools.workers(job.task) or held is None:
                futures[-1].set_result(None)
                continue
            job = replace(job, frame=[held[0].ref])
            self.policy.push(WorkItem(job.task, job.stream, job.seq, time.monotonic(), (job, futures[-1])))
        self._pump()
        return list(await asyncio.gather(*futures))

    # ---- dispatch
    def _pump(self) -> None:
        now = time.monotonic()
        for task in self.policy.queues:
            for item in self.policy.expire(now, self.config.max_age_s, task):
                if task == "detection":
                    self._drop(item, "stale")
                else:
                    item.payload[1].set_result(None)
        for dispatch in self.policy.next_dispatches(now):
            asyncio.create_task(self._execute(dispatch))
        wake = self.policy.next_wake(now)
        if wake is not None and (self._wake is None or self._wake.when() > asyncio.get_running_loop().time() + wake):
            # a batch held back for more items goes out when its wait is over, if nothing comes
            if self._wake is not None:
                self._wake.cancel()
            self._wake = asyncio.get_running_loop().call_later(wake, self._woken)
        if now - self._gauges_at > 1.0:  # gauges are read every few seconds: no need to set them per event
            self._gauges_at = now
            for task in self.policy.queues:
                self.metrics.queue_depth.set(self.policy.queue_depth(task), tags={"task": task})
                self.metrics.busy.set(self.policy.busy(task), tags={"task": task})

    def _woken(self) -> None:
        self._wake = None
        self._pump()

    async def _execute(self, dispatch) -> None:
        worker = dispatch.worker
        started = time.monotonic()
        try:
            if worker.task == "detection":
                await self._detect(worker, dispatch.items)
            else:
                await self._recognise(worker, dispatch.items)
            elapsed = time.monotonic() - started
            self.stats.record(worker.task, time.monotonic(), elapsed, len(dispatch.items))
            self.metrics.latency.observe(elapsed * 1000, tags={"stage": worker.task})
        finally:
            self.policy.done(worker.worker_id)
            if worker.retired:
                self.pools.release(worker)
            self._pump()

    async def _call(self, worker: Worker, ref):
        """Await one pool call within the deadline; past it, the actor is restarted and the
        call counts as failed."""
        try:
            return await asyncio.wait_for(ref, self.config.call_timeout_s)
        except asyncio.TimeoutError:
            log.warning("%s: no answer within %.0f s; restarting it", worker.worker_id, self.config.call_timeout_s)
            self.pools.restart(worker)
            raise

    def _to_detection(self, frame: FrameRef) -> FrameRef:
        """The frame as it goes to detection, noted as sent, with a handle to its pixels: a
        holding capture's are asked for now, and the handle is kept with the frame for its
        recognition jobs. Not awaited: the detector's call waits on it, not this actor."""
        key = (frame.stream, frame.seq)
        held = self.frames.get(key)
        if held is not None:
            self._sent.add(key)
        if frame.ref is None and frame.stream in self.holders:
            self.traffic.call("capture.pixels")
            self.traffic.puts += 1
            frame = replace(frame, ref=self.holders[frame.stream].pixels.remote(frame.seq))
            if held is not None:
                self.frames[key] = (frame, held[1])
        return frame

    async def _detect(self, worker: Worker, items: tuple[WorkItem, ...]) -> None:
        frames: list[FrameRef] = [self._to_detection(item.payload) for item in items]
        n = len(frames)
        refs = worker.handle.detect.options(num_returns=1 + n).remote(frames)
        self.traffic.call("detection.detect")
        self.traffic.fetch("detection", n)
        # each tracker gets its detections as soon as they exist: they never pass through this
        # actor, which only waits for the counts to free the worker. A top-level argument, resolved
        # before the call: a ref the tracker kept past the call would leave an entry in this
        # actor's object table for good (Ray 2.60, bench/borrow_leak.py)
        for i, frame in enumerate(frames):
            self.trackers[frame.stream].on_detections.remote(self._for_tracker(frame, "on_detections"), refs[1 + i])
        try:
            counts = await self._call(worker, refs[0])
        except Exception as error:  # noqa: BLE001 - any failure of the call ends the same way
            reason = "timeout" if isinstance(error, asyncio.TimeoutError) else "actor_failure"
            for item in items:
                self._detection_failed(item, reason, error, worker)
            return
        for frame, faces in zip(frames, counts):
            self._attempts.pop((frame.stream, frame.seq), None)
            self.detected[frame.stream] += 1
            self.faces += faces
            if faces:  # Ray's counters refuse 0
                self.metrics.faces.inc(faces, tags={"stream": frame.stream})

    def _detection_failed(self, item: WorkItem, reason: str, error: BaseException, worker: Worker) -> None:
        """Lossless retries a frame a few times (a crash or a hang is seldom the frame's fault);
        live, or a frame that keeps failing, is dropped with the reason."""
        key = (item.stream, item.seq)
        attempts = self._attempts.get(key, 0) + 1
        log.warning("%s failed on %s#%d (attempt %d): %s", worker.worker_id, item.stream, item.seq, attempts,
                    str(error).splitlines()[0] if str(error) else type(error).__name__)
        if self.config.mode == "lossless" and attempts <= self.config.retries:
            self._attempts[key] = attempts
            self.policy.push(replace(item, t_enqueue=time.monotonic()))
        else:
            self._attempts.pop(key, None)
            self._drop(item, reason)

    async def _recognise(self, worker: Worker, items) -> None:
        jobs = [item.payload[0] for item in items]
        self.traffic.call(f"{worker.task}.run")
        self.traffic.fetch(worker.task, len(jobs))  # each job's frame, to cut its chips from
        if worker.task == "identity" and self.gallery_synced:
            self.traffic.call("gallery.version")  # the replica's check (IdentityActor._sync)
        try:
            results = await self._call(worker, worker.handle.run.remote(jobs))
        except Exception as error:  # noqa: BLE001 - a failed batch gives no results, whatever the cause
            log.warning("%s failed on %d job(s): %s", worker.worker_id, len(jobs),
                        str(error).splitlines()[0] if str(error) else type(error).__name__)
            results = [None] * len(jobs)
        if len(results) != len(jobs):
            log.warning("%s answered %d results for %d jobs; discarding them", worker.worker_id, len(results), len(jobs))
            results = [None] * len(jobs)
        for item, result in zip(items, results):
            if not item.payload[1].done():
                item.payload[1].set_result(result)

    def shutdown(self) -> None:
        """Stop every pool actor: a finished run gives its CPUs back to the cluster."""
        self.pools.shutdown()

    # ---- reporting
    def summary(self) -> RunSummary:
        return RunSummary(self.ledger.captured, self.ledger.processed, dict(self.ledger.dropped),
                          self.stats.figures(), self.faces, time.monotonic() - self.started, self.carried,
                          self.pools.placement(), self.traffic.traffic(), dict(self.detected))
