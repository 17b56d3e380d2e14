"""`TrackerActor`: one per stream, a thin async shell around `StreamTracker`. Detections may come
back out of order from the detector pool; frames leave in order."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import ray

from actors.recognition import RecognitionJob
from core.config import PipelineConfig
from core.messages import FaceBoxes, FrameRef
from core.stream import FrameWork, StreamTracker


@dataclass(frozen=True, slots=True)
class TrackerReport:
    tracks: int
    faces_shown: int  # faces of confirmed tracks in output frames
    faces_fresh: int  # of those, faces whose every attribute came from a frame at most 0.5 s older


@ray.remote(num_cpus=0)
class TrackerActor:
    def __init__(self, stream: str, scheduler, video_sink, event_log, config: PipelineConfig, labels,
                 gallery=None):
        self.stream, self.scheduler, self.gallery = stream, scheduler, gallery
        self.video_sink, self.event_log = video_sink, event_log
        age_bins, gender_labels, expression_labels = labels
        self.core = StreamTracker(stream, age_bins, gender_labels, expression_labels,
                                  config.tracker, config.fusion, config.budget,
                                  alarm_cooldown_s=config.alarm_cooldown_s,
                                  enrol_after=config.enrol_after if config.enrol_unknown and gallery else None,
                                  names_faces=gallery is not None)
        self._refs: dict[int, tuple[FrameRef | None, list | None]] = {}
        self._done: dict[int, FrameWork] = {}
        self._next_out = 0
        self._writes: list = []
        self._last_t = 0.0

    async def on_detections(self, stream: str, seq: int, t_stream: float, faces: FaceBoxes | None,
                            crops: list | None, frame: FrameRef | None = None) -> None:
        self._refs[seq] = (frame, crops)
        for work in self.core.add(seq, t_stream, faces, frame.t_capture if frame else None):
            asyncio.create_task(self._recognise(work))

    async def _recognise(self, work: FrameWork) -> None:
        frame, crops = self._refs.pop(work.seq)
        if work.faces is not None and work.jobs:
            calls = [self.scheduler.recognize.remote(
                RecognitionJob(self.stream, work.seq, job.task, crops, job.indices, job.track_ids))
                for job in work.jobs]
            for result in await asyncio.gather(*calls):
                if result is not None:
                    self.core.fuse(result, work.t)
            for request in self.core.enrol_requests():
                name = await self.gallery.enrol_unknown.remote(request.vectors, f"{self.stream}#track={request.track_id}")
                self.core.enrolled(request.track_id, name, work.t)
        self._done[work.seq] = (work, frame)
        self._emit_in_order()

    def _emit_in_order(self) -> None:
        while self._next_out in self._done:
            work, frame = self._done.pop(self._next_out)
            self._next_out += 1
            if work.faces is None:  # dropped before detection: already counted by the scheduler
                continue
            output = self.core.output(work)
            self._last_t = work.t
            self._writes.append(self.video_sink.write.remote(frame, list(output.labels), output.banner))
            self._writes.append(self.event_log.write.remote([*work.events, *output.extra_events, output.event]))
            self._writes.append(self.scheduler.frame_done.remote(self.stream, work.seq, work.t_capture))
            if len(self._writes) > 300:
                _, self._writes = ray.wait(self._writes, num_returns=len(self._writes), timeout=0)

    async def finish(self) -> TrackerReport:
        """End every track and wait until every write of this stream has landed."""
        events = self.core.finish(self._last_t)
        if events:
            self._writes.append(self.event_log.write.remote(events))
        await asyncio.gather(*self._writes)
        self._writes = []
        return TrackerReport(self.core.tracks_started, self.core.faces_shown, self.core.faces_fresh)
