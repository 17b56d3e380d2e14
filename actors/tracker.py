"""`TrackerActor`: one per stream, a thin async shell around `StreamTracker`. Detections come
straight from the detector pool, possibly out of order; frames leave in order, each as one call to
the stream's sink, and the scheduler hears which frames are done in small batches."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import ray

from core.config import PipelineConfig
from core.messages import FaceBoxes, FrameRef, RecognitionJob
from core.stream import FrameWork, StreamTracker

log = logging.getLogger("facelive.tracker")

# frames reported done per scheduler call, and the longest a done frame waits to be reported
DONE_BATCH = 4
DONE_WAIT_S = 0.05


@dataclass(frozen=True, slots=True)
class TrackerReport:
    tracks: int
    faces_shown: int  # faces of confirmed tracks in output frames
    faces_fresh: int  # of those, faces whose every attribute came from a frame at most 0.5 s older
    frames_carried: int  # output frames whose boxes were carried by tracking, not detected


@ray.remote(num_cpus=0)
class TrackerActor:
    def __init__(self, stream: str, scheduler, sink, config: PipelineConfig, labels, tasks: tuple[str, ...],
                 gallery=None):
        self.stream, self.scheduler, self.sink, self.gallery = stream, scheduler, sink, gallery
        age_bins, gender_labels, expression_labels = labels
        self.core = StreamTracker(stream, age_bins, gender_labels, expression_labels,
                                  config.tracker, config.fusion, config.budget, tasks=tasks,
                                  alarm_cooldown_s=config.alarm_cooldown_s,
                                  enrol_after=config.enrol_after if config.enrol_unknown and gallery else None,
                                  names_faces=gallery is not None)
        self._frames: dict[int, tuple[FrameRef | None, list | None]] = {}
        self._done: dict[int, tuple[FrameWork, FrameRef | None]] = {}
        self._next_out = 0
        self._writes: list = []
        self._reported: list[tuple[int, float, float]] = []
        self._report_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        # live: a frame waits only for these tasks' results; slower ones (identity's embedding
        # alone costs 60-90 ms) fuse into their tracks when they come and show from then on
        self.blocking = set(config.blocking_tasks) if config.mode == "live" else None
        self._last_t = 0.0
        self.carried = 0

    # async methods: they run on the actor's event loop, where the recognition tasks live
    async def on_detections(self, frame: FrameRef, faces: FaceBoxes, crops: list) -> None:
        self._add(frame, faces, crops)

    async def on_carried(self, frame: FrameRef) -> None:
        self._add(frame, None, None, carried=True)

    async def on_dropped(self, seq: int) -> None:
        if seq < self.core.next_seq or seq in self._frames:
            return  # it reached the tracker before the scheduler gave it up
        self._frames[seq] = (None, None)
        self._start(self.core.add(seq, 0.0, None))

    def _add(self, frame: FrameRef, faces: FaceBoxes | None, crops: list | None, carried: bool = False) -> None:
        if frame.seq < self.core.next_seq or frame.seq in self._frames:
            return  # a retried detection whose first answer already arrived, or a frame already dropped
        self._frames[frame.seq] = (frame, crops)
        self.carried += carried
        self._start(self.core.add(frame.seq, frame.t_stream, faces, frame.t_capture, carried=carried))

    def _start(self, ready: list[FrameWork]) -> None:
        for work in ready:
            jobs = [RecognitionJob(self.stream, work.seq, job.task, self._frames[work.seq][1], job.indices,
                                   job.track_ids) for job in work.jobs]
            now, later = [], []
            for job in jobs:
                (now if self.blocking is None or job.task in self.blocking else later).append(job)
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
        try:
            for result in await self.scheduler.recognize.remote(jobs):
                if result is not None:
                    self.core.fuse(result, t)
            for request in self.core.enrol_requests():
                name = await self.gallery.enrol_unknown.remote(request.vectors, f"{self.stream}#track={request.track_id}")
                self.core.enrolled(request.track_id, name, t)
        finally:
            # whatever failed above, the frame still goes out, or every later frame would wait for it
            if work is not None:
                self._complete(work)

    def _complete(self, work: FrameWork) -> None:
        frame, _ = self._frames.pop(work.seq)
        self._done[work.seq] = (work, frame)
        while self._next_out in self._done:
            work, frame = self._done.pop(self._next_out)
            self._next_out += 1
            if work.faces is None:  # dropped before detection: already counted by the scheduler
                continue
            output = self.core.output(work)
            self._last_t = work.t
            self._writes.append(self.sink.write.remote(frame, list(output.labels), output.banner,
                                                       [*work.events, *output.extra_events, output.event]))
            self._reported.append((work.seq, work.t_capture, time.time()))
        if len(self._writes) > 300:
            _, self._writes = ray.wait(self._writes, num_returns=len(self._writes), timeout=0)
        if len(self._reported) >= DONE_BATCH:
            self._report()
        elif self._reported and self._report_timer is None:
            self._report_timer = asyncio.get_running_loop().call_later(DONE_WAIT_S, self._report)

    def _report(self) -> None:
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_timer = None
        if self._reported:
            self.scheduler.frames_done.remote(self.stream, self._reported)
            self._reported = []

    async def finish(self) -> TrackerReport:
        """End every track and wait until every write of this stream has landed."""
        self._report()
        events = self.core.finish(self._last_t)
        if events:
            self._writes.append(self.sink.events.remote(events))
        await asyncio.gather(*self._writes)
        self._writes = []
        return TrackerReport(self.core.tracks_started, self.core.faces_shown, self.core.faces_fresh, self.carried)
