"""Sinks: the annotated video of a stream, and the event log of a run. A stream's tracker makes one
call per frame, to its video sink; the sink hands the frame's events on to the run's event log
in batches, so the log costs a call every few frames rather than one per frame."""
from __future__ import annotations

import cv2
import msgpack
import ray

from core.draw import FaceLabel, draw_faces
from core.media import MediaError
from core.messages import FrameRef
from core.private import open_private

EVENT_BATCH = 12  # frames' events per call to the event log


@ray.remote(num_cpus=0)
class VideoSinkActor:
    """Writes a stream's annotated video; with a live view, also hands it each frame as JPEG."""

    def __init__(self, path: str, fps: float, event_log, stream: str = "", view=None):
        self.path, self.fps = path, fps
        self.event_log, self.stream, self.view = event_log, stream, view
        self.writer = None
        self.frames = 0
        self._events: list[dict] = []
        self._pending: list = []

    def write(self, frame: FrameRef, labels: list[FaceLabel], banner: str | None, events: list[dict]) -> None:
        image = draw_faces(ray.get(frame.ref), labels, banner)
        if self.view is not None:
            ok, jpeg = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
            self.view.frame.remote(self.stream, frame.seq, frame.t_capture, jpeg.tobytes())
        if self.writer is None:
            self.writer = self._open(image.shape)
        self.writer.write(image[:, :, ::-1])
        self.frames += 1
        self.events(events, flush=self.frames % EVENT_BATCH == 0)

    def _open(self, shape) -> cv2.VideoWriter:
        try:
            # owner-only before OpenCV's writer opens it (it keeps the mode): the video shows people
            open_private(self.path).close()
        except OSError as error:
            raise MediaError(self.path, f"cannot write video ({error.strerror or error})") from None
        writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (shape[1], shape[0]))
        if not writer.isOpened():
            # OpenCV says nothing and writes nothing: the run would end with no video and no error
            raise MediaError(self.path, "cannot write video (no encoder for mp4v, or the folder is not writable)")
        return writer

    def events(self, events: list[dict], flush: bool = True) -> None:
        self._events.extend(events)
        if flush and self._events:
            self._pending.append(self.event_log.write.remote(self._events))
            self._events = []
            # a write that failed (a full disk) fails the run loudly at close, not silently
            done, self._pending = ray.wait(self._pending, num_returns=len(self._pending), timeout=0)
            ray.get(done)

    def close(self) -> int:
        self.events([])
        ray.get(self._pending)
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        return self.frames


@ray.remote(num_cpus=0)
class EventLogActor:
    """Appends msgpack events to one file, readable only by its owner (it describes people)."""

    def __init__(self, path: str, view=None):
        self.view = view
        self.file = open_private(path)
        self.count = 0

    def write(self, events: list[dict]) -> None:
        for event in events:
            self.file.write(msgpack.packb(event, use_bin_type=True))
        self.count += len(events)
        if self.view is not None:
            self.view.events.remote(events)

    def close(self) -> int:
        self.file.close()
        return self.count
