"""`TrackerActor`: one per stream, a thin async shell around `StreamTracker`. Detections come
straight from the detector pool, possibly out of order; frames leave in order, drawn into the
stream's annotated video here (the frame is already in this process's reach), their events go to
the run's event log in batches. A frame's recognition jobs go from here straight to the pool
actors (`PoolClient`); the scheduler hears which frames are out in the answers to its calls, or
in small batches of their own."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

import cv2
import ray

from actors.pool_client import PoolClient
from actors.sinks import EVENT_BATCH, AnnotatedVideo
from core.config import PipelineConfig
from core.messages import DoneReport, FaceBoxes, FrameRef, PoolRoute, RecognitionJob
from core.stats import RayTraffic, TrafficCounter
from core.stream import FrameWork, StreamTracker

log = logging.getLogger("facelive.tracker")

# frames reported done per scheduler call, and the longest a done frame waits to be reported:
# at 0.05 s one 25 fps camera sent a report every second frame (one live crossing_faces camera,
# 5.35 Ray calls a frame, 5.17 at 0.1 s, the same p95). Latency is taken at output, not at report.
# A report also rides on the answer to the scheduler's next call here, so these bound only frames
# put out after the stream's last call.
DONE_BATCH = 4
DONE_WAIT_S = 0.1


@dataclass(frozen=True, slots=True)
class TrackerReport:
    tracks: int
    faces_shown: int  # faces of confirmed tracks in output frames
    faces_fresh: int  # of those, faces whose every attribute came from a frame at most 0.5 s older
    frames_carried: int  # output frames whose boxes were carried by tracking, not detected
    traffic: RayTraffic  # the calls this tracker made to others than the scheduler (which counts its own)


@ray.remote(num_cpus=0)
class TrackerActor:
    def __init__(self, stream: str, scheduler, video: tuple[str | None, float], event_log, config: PipelineConfig,
                 labels, tasks: tuple[str, ...], gallery=None, view=None, looks: bool = True):
        cv2.setNumThreads(1)  # as in CaptureActor: drawing, encoding and flow a frame at a time
        self.stream, self.scheduler, self.gallery = stream, scheduler, gallery
        self.video, self.event_log, self.view = AnnotatedVideo(*video), event_log, view
        self._video_error: Exception | None = None
        self._events: list[dict] = []
        self._logged: list = []  # event-log writes not yet seen to land
        self._log_error: Exception | None = None
        self._checks: set[asyncio.Task] = set()
        age_bins, gender_labels, expression_labels = labels
        self.core = StreamTracker(stream, age_bins, gender_labels, expression_labels,
                                  config.tracker, config.fusion, config.stream_budget(), tasks=tasks,
                                  alarm_cooldown_s=config.alarm_cooldown_s,
                                  enrol_after=config.enrol_after if config.enrol_unknown and gallery else None,
                                  names_faces=gallery is not None, motion=config.motion, need=config.need)
        # seq -> (frame, its pixels): pixels are fetched as the frame arrives, so putting it out
        # later never waits on the object store
        self._frames: dict[int, tuple[FrameRef | None, object]] = {}
        # `looks`: this tracker uses pixels (it draws, or follows carried faces by their motion);
        # if not, it never fetches a frame, and only hands frames' handles on to the pools
        self.looks = looks
        # seq -> the frame's handle, for its recognition jobs, and the answer its on_detections call
        # awaits: the call stays open until the frame's jobs are answered (RecognitionJob.frame)
        self._handles: dict[int, object] = {}
        self._recognised: dict[int, asyncio.Future] = {}
        self._done: dict[int, tuple[FrameWork, FrameRef | None, object]] = {}
        self._next_out = 0
        self._reported: list[tuple[int, float, float]] = []
        self._open_calls: dict[int, int] = {}  # seq -> recognition calls not yet answered
        self._report_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        # live: a frame waits only for these tasks' results; the others (queued behind them by
        # priority) fuse into their tracks when they come and show from then on
        self.blocking = set(config.blocking_tasks) if config.mode == "live" else None
        self._last_t = 0.0
        self.carried = 0
        self.traffic = TrafficCounter()
        self.pools = PoolClient(config, self.traffic)

    # async methods: they run on the actor's event loop, where the recognition tasks live
    async def route(self, routes: tuple[PoolRoute, ...], waiting: frozenset[str] = frozenset()) -> None:
        """The recognition actors to send jobs to (the scheduler's, on start and when pools change)."""
        await self.pools.route(routes, waiting)

    async def on_detections(self, frame: FrameRef, faces: FaceBoxes) -> DoneReport | None:
        """Answers once the frame's recognition jobs are answered, with the news since the last report."""
        if self._known(frame.seq) or frame.seq in self._recognised:
            return None  # a retried detection whose first answer already arrived, or a frame already dropped
        recognised = self._recognised[frame.seq] = asyncio.get_running_loop().create_future()
        self._handles[frame.seq] = frame.ref
        if not self._add(frame, await self._pixels(frame), faces):
            self._handles.pop(frame.seq, None)
            self._answered(frame.seq)
        await recognised
        return self._take_report()

    async def on_carried(self, frame: FrameRef) -> DoneReport | None:
        self._add(frame, await self._pixels(frame), None, carried=True)
        return self._take_report()

    async def on_dropped(self, seq: int) -> None:
        if self._known(seq):
            return  # it reached the tracker before the scheduler gave it up
        self._frames[seq] = (None, None)
        self._start(self.core.add(seq, 0.0, None))

    async def _pixels(self, frame: FrameRef):
        if not self.looks or frame.ref is None:  # nothing here looks, or the capture holds the pixels
            return None
        try:
            return await frame.ref
        except Exception as error:  # noqa: BLE001 - a lost frame is still tracked and counted, just not drawn
            log.error("%s#%d: frame lost from the object store: %r", self.stream, frame.seq, error)
            return None

    def _known(self, seq: int) -> bool:
        return seq < self.core.next_seq or seq in self._frames

    def _add(self, frame: FrameRef, image, faces: FaceBoxes | None, carried: bool = False) -> bool:
        """False if the frame came already (a retried detection, a frame dropped meanwhile)."""
        if self._known(frame.seq):
            return False
        # the handle is kept only for the frame's jobs (`_handles`): the pixels are
        self._frames[frame.seq] = (replace(frame, ref=None), image)
        self.carried += carried
        self._start(self.core.add(frame.seq, frame.t_stream, faces, frame.t_capture, carried=carried, image=image))
        return True

    def _start(self, ready: list[FrameWork]) -> None:
        for work in ready:
            handle = self._handles.pop(work.seq, None)
            jobs = [RecognitionJob(self.stream, work.seq, job.task, work.faces.landmarks[list(job.indices)],
                                   job.track_ids, [handle]) for job in work.jobs]
            now, later = [], []
            for job in jobs:
                (now if self.blocking is None or job.task in self.blocking else later).append(job)
            if not jobs:
                self._answered(work.seq)
            if now or later:
                self._open_calls[work.seq] = bool(now) + bool(later)
            if later:
                self._spawn(self._recognise(later, work.t))
            if now:
                self._spawn(self._recognise(now, work.t, work))
            else:
                self._complete(work)

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        # kept, so it is not collected mid-flight and its failure is seen
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: recognition of a frame failed: %r", self.stream, task.exception())

    async def _recognise(self, jobs: list[RecognitionJob], t: float, work: FrameWork | None = None) -> None:
        """Run `jobs` and fuse their results; then, if this call holds `work`, put it out."""
        seq = jobs[0].seq
        try:
            for result in await self.pools.run(jobs):
                if result is not None:
                    self.core.fuse(result, t)
            for request in self.core.enrol_requests():
                self.traffic.call("gallery.enrol_unknown")
                name = await self.gallery.enrol_unknown.remote(request.vectors, f"{self.stream}#track={request.track_id}")
                self.core.enrolled(request.track_id, name, t)
        finally:
            # whatever failed above, the frame still goes out, or every later frame would wait for it
            self._open_calls[seq] -= 1
            if not self._open_calls[seq]:
                del self._open_calls[seq]
                self._answered(seq)
            if work is not None:
                self._complete(work)

    def _answered(self, seq: int) -> None:
        """The frame's jobs are answered (or it had none): its on_detections call may return."""
        recognised = self._recognised.pop(seq, None)
        if recognised is not None and not recognised.done():
            recognised.set_result(None)

    def _complete(self, work: FrameWork) -> None:
        frame, image = self._frames.pop(work.seq)
        self._done[work.seq] = (work, frame, image)
        while self._next_out in self._done:
            work, frame, image = self._done.pop(self._next_out)
            self._next_out += 1
            if work.faces is None:  # dropped before detection: already counted by the scheduler
                continue
            output = self.core.output(work)
            self._last_t = work.t
            self._show(frame, image, output)
            self._log([*work.events, *output.extra_events, output.event], flush=self._next_out % EVENT_BATCH == 0)
            self._reported.append((work.seq, work.t_capture, time.time()))
        self._report_soon()

    def _report_soon(self) -> None:
        if len(self._reported) >= DONE_BATCH:
            self._report()
        elif (self._reported or self.pools.calls) and self._report_timer is None:
            self._report_timer = asyncio.get_running_loop().call_later(DONE_WAIT_S, self._report)

    def _show(self, frame: FrameRef, image, output) -> None:
        if image is None or self._video_error is not None:
            return
        try:
            jpeg = self.video.write(image, list(output.labels), output.banner, jpeg=self.view is not None)
        except Exception as error:  # noqa: BLE001 - a video that cannot be written fails the run at its end
            self._video_error = error
            return
        if jpeg is not None:
            self.traffic.call("view.frame")
            self.view.frame.remote(self.stream, frame.seq, frame.t_capture, jpeg)

    def _log(self, events: list[dict], flush: bool) -> None:
        self._events.extend(events)
        if flush and self._events:
            self.traffic.call("events.write")
            self._logged.append(self.event_log.write.remote(self._events))
            self._events = []
            done, self._logged = ray.wait(self._logged, num_returns=len(self._logged), timeout=0)
            if done:
                check = asyncio.get_running_loop().create_task(self._check_logged(done))
                self._checks.add(check)
                check.add_done_callback(self._checks.discard)

    async def _check_logged(self, writes: list) -> None:
        try:
            await asyncio.gather(*writes)
        except Exception as error:  # noqa: BLE001 - kept for the end of the run
            # a write that failed (a full disk) fails the run loudly at its end, not silently
            self._log_error = self._log_error or error

    def _report(self) -> None:
        report = self._take_report()
        if report is not None:
            self.scheduler.frames_done.remote(report)

    def _take_report(self) -> DoneReport | None:
        """What the scheduler has not heard yet, if anything; from here on it is the caller's to send."""
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_timer = None
        if not (self._reported or self.pools.calls):
            return None
        report = DoneReport(self.stream, tuple(self._reported), self.core.detection_need(), self.pools.take_calls(),
                            self.pools.load())
        self._reported = []
        return report

    async def finish(self) -> TrackerReport:
        """End every track, close the video and wait until every event of this stream has landed."""
        self._report()
        self._log(self.core.finish(self._last_t), flush=True)
        await asyncio.gather(*self._logged)
        self._logged = []
        await asyncio.gather(*self._checks)
        self.video.close()
        if self._video_error is not None or self._log_error is not None:
            raise self._video_error or self._log_error
        return TrackerReport(self.core.tracks_started, self.core.faces_shown, self.core.faces_fresh, self.carried,
                             self.traffic.traffic())
