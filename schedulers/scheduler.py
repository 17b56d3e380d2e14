"""`PriorityScheduler`: the async actor that applies `SchedulingPolicy`. It admits frames, sends
them to free detection actors by need and priority, routes each tracker to the recognition pools,
and keeps the ledger where every frame ends exactly once. Pool actors come from `PoolManager`;
results go where they are used: detections straight from the detector to the stream's tracker,
recognition jobs from the tracker straight to the pools (actors/pool_client.py), never through
here."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import ray

from core.config import PipelineConfig
from core.messages import DoneReport, FrameRef, PoolRoute
from core.stats import RayTraffic, StageFigures, StageStats, TrafficCounter
from schedulers.metrics import PipelineMetrics
from schedulers.policy import FrameLedger, SchedulingPolicy, WorkItem, Worker
from schedulers.pools import ActorFactory, PoolManager
from schedulers.wake import WakeTimer

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
        # detection only: the trackers queue their own recognition jobs (PoolClient); the workers
        # of every pool are registered here all the same, the registry PoolManager keeps
        detection = next(s for s in config.all_pools() if s.task == "detection")
        self.policy = SchedulingPolicy({"detection": detection.priority}, config.mode, config.in_flight_limit(),
                                        {"detection": detection.batch_size}, carry=config.carry,
                                        batch_waits={"detection": detection.batch_wait_s})
        self.pools = PoolManager(config, self.policy, factory)
        self.ledger = FrameLedger()
        self.stats = StageStats()
        self.traffic = TrafficCounter()
        self.metrics = PipelineMetrics()
        self.trackers: dict[str, ray.actor.ActorHandle] = {}
        self.blind: set[str] = set()  # streams whose tracker looks at no pixels (see register_stream)
        self.holders: dict[str, ray.actor.ActorHandle] = {}  # stream -> its capture, where it may hold pixels
        # admitted frames, until their tracker answers that no job names them any more (or they
        # are dropped), each with the answer its open admit call awaits
        self.frames: dict[tuple[str, int], tuple[FrameRef, asyncio.Future]] = {}
        self.changed = asyncio.Event()
        self.faces = 0
        self.carried = 0
        self.detected: Counter[str] = Counter()
        self.load: dict[str, tuple[tuple[str, int, int], ...]] = {}  # stream -> its recognition load
        self._tracked_calls: set[asyncio.Task] = set()  # on_detections / on_carried answers awaited
        self.started = time.monotonic()
        self._attempts: dict[tuple[str, int], int] = {}
        self._sent: set[tuple[str, int]] = set()  # frames sent to detection, until let go of
        self._gauges_at = 0.0
        self._wake = WakeTimer(self._pump)

    # ---- pools
    async def start_pools(self, timeout_s: float = 300.0) -> dict[str, int]:
        await self.pools.start(timeout_s)
        return self.pool_sizes()

    async def resize_pool(self, task: str, count: int) -> dict[str, int]:
        await self.pools.resize(task, count, 300.0)
        await self._route()
        self._pump()
        return self.pool_sizes()

    async def swap_model(self, task: str, model: str | None = None, detector_threshold: float | None = None) -> dict[str, int]:
        """Replace a task's actors with ones running another model (or detector threshold): no
        frame is lost or counted twice."""
        config = self.config if detector_threshold is None else replace(self.config, detector_threshold=detector_threshold)
        try:
            await self.pools.swap(task, 300.0, lambda: self._route(frozenset({task})), model, config)
            self.config = config
        finally:
            await self._route()
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

    async def register_stream(self, stream: str, tracker, looks: bool = True, holder=None) -> None:
        """`looks`: the stream's tracker uses frames' pixels (it draws a video or a live view, and
        follows faces through carried frames by their motion); if not, it only hands detected
        frames' handles on to the pools, and is sent none for carried frames. `holder`: the
        stream's capture where it holds its frames' pixels (`CaptureActor.pixels`): its offers
        come without a handle, and a frame's pixels are asked for as it goes to detection."""
        self.trackers[stream] = tracker
        if not looks:
            self.blind.add(stream)
        if holder is not None:
            self.holders[stream] = holder
        self.traffic.call("tracker.route")
        await tracker.route.remote(self._routes())

    def _routes(self) -> tuple[PoolRoute, ...]:
        return tuple(PoolRoute(w.worker_id, w.task, w.handle) for task in self.pools.specs if task != "detection"
                     for w in self.pools.workers(task))

    async def _route(self, waiting: frozenset[str] = frozenset()) -> None:
        """Every tracker sends its jobs to the recognition actors there are now; retired ones stop
        once no tracker's call to them is in flight. Jobs of `waiting` tasks wait for actors to come."""
        routes = self._routes()
        self.traffic.calls["tracker.route"] += len(self.trackers)
        await asyncio.gather(*[tracker.route.remote(routes, waiting) for tracker in self.trackers.values()])
        self.pools.release_retired()

    def _for_tracker(self, frame: FrameRef, call: str) -> FrameRef:
        """The frame as `call` (a tracker method about to be called with it) gets it."""
        self.traffic.call(f"tracker.{call}")
        if frame.stream not in self.blind:
            self.traffic.fetch("tracker")
        elif call == "on_carried":
            return replace(frame, ref=None)
        return frame

    def _track(self, frame: FrameRef, answer) -> None:
        """Await a tracker's answer to on_detections or on_carried: the frame's jobs are over (no
        job names its handle any more), and the answer brings the tracker's report."""
        task = asyncio.get_running_loop().create_task(self._tracked(frame.stream, frame.seq, answer))
        self._tracked_calls.add(task)
        task.add_done_callback(self._tracked_calls.discard)

    async def _tracked(self, stream: str, seq: int, answer) -> None:
        try:
            report = await answer
        except Exception:  # noqa: BLE001 - its detection failed: _detect retries or drops the frame
            return
        self._let_go(stream, seq)
        if report is not None:
            self._apply_report(report)
        self._pump()

    # ---- frames
    async def admit(self, frame: FrameRef) -> bool:
        """Queue the frame (lossless: once the stream has room, which is the capture's
        backpressure), and answer when this actor lets go of its handle: the tracker answered
        that the frame's recognition is over, or it was dropped. Ray 2.60 keeps an entry in the
        owner's (the capture's) object table for good for every handle a borrower still holds when
        the call that brought it returns (bench/borrow_leak.py): one per frame, for as long as a
        camera runs. True if the frame went to detection, False if it was carried or dropped
        (`PixelHolding` counts them)."""
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
            frame = self._for_tracker(carried.payload, "on_carried")
            self._track(frame, self.trackers[carried.stream].on_carried.remote(frame))
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
        done = 0
        for seq, t_capture, t_out in report.frames:
            if self.ledger.finish(report.stream, seq):
                done += 1
                latency = t_out - t_capture
                self.stats.record("end_to_end", time.monotonic(), latency)
                self.metrics.latency.observe(latency * 1000, tags={"stage": "end_to_end"})
        if done:
            self.metrics.frames_processed.inc(done, tags={"stream": report.stream})
        for call in report.calls:
            self.stats.record(call.task, time.monotonic(), call.seconds, call.jobs)
            self.metrics.latency.observe(call.seconds * 1000, tags={"stage": call.task})
        if report.load:
            self.load[report.stream] = report.load
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

    # ---- dispatch
    def _pump(self) -> None:
        now = time.monotonic()
        for item in self.policy.expire(now, self.config.max_age_s, "detection"):
            self._drop(item, "stale")
        for dispatch in self.policy.next_dispatches(now):
            asyncio.create_task(self._execute(dispatch))
        self._wake.within(self.policy.next_wake(now))
        if now - self._gauges_at > 1.0:  # gauges are read every few seconds: no need to set them per event
            self._gauges_at = now
            depth = Counter({"detection": self.policy.queue_depth("detection")})
            busy = Counter({"detection": self.policy.busy("detection")})
            for load in self.load.values():  # the trackers' recognition queues, as last reported
                for task, waiting, in_flight in load:
                    depth[task] += waiting
                    busy[task] += in_flight
            for task in depth:
                self.metrics.queue_depth.set(depth[task], tags={"task": task})
                self.metrics.busy.set(busy[task], tags={"task": task})

    async def _execute(self, dispatch) -> None:
        worker = dispatch.worker
        started = time.monotonic()
        try:
            await self._detect(worker, dispatch.items)
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
        holding capture's are asked for now, and the handle is kept with the frame until it is
        let go of. Not awaited: the detector's call waits on it, not this actor."""
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
            self._track(frame, self.trackers[frame.stream].on_detections.remote(
                self._for_tracker(frame, "on_detections"), refs[1 + i]))
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

    def shutdown(self) -> None:
        """Stop every pool actor: a finished run gives its CPUs back to the cluster."""
        self.pools.shutdown()

    # ---- reporting
    def summary(self) -> RunSummary:
        return RunSummary(self.ledger.captured, self.ledger.processed, dict(self.ledger.dropped),
                          self.stats.figures(), self.faces, time.monotonic() - self.started, self.carried,
                          self.pools.placement(), self.traffic.traffic(), dict(self.detected))
