"""Sinks: the annotated video of a stream, and the event log of a run."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import msgpack
import ray

from core.draw import FaceLabel, draw_faces
from core.messages import FrameRef


@ray.remote(num_cpus=0)
class VideoSinkActor:
    """Writes a stream's annotated video; with a live view, also hands it each frame as JPEG."""

    def __init__(self, path: str, fps: float, stream: str = "", view=None):
        self.path, self.fps = path, fps
        self.stream, self.view = stream, view
        self.writer = None
        self.frames = 0

    def write(self, frame: FrameRef, labels: list[FaceLabel], banner: str | None = None) -> None:
        image = draw_faces(ray.get(frame.ref), labels, banner)
        if self.view is not None:
            ok, jpeg = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
            self.view.frame.remote(self.stream, frame.seq, frame.t_capture, jpeg.tobytes())
        if self.writer is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          (image.shape[1], image.shape[0]))
        self.writer.write(image[:, :, ::-1])
        self.frames += 1

    def close(self) -> int:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        return self.frames


@ray.remote(num_cpus=0)
class EventLogActor:
    """Appends msgpack events to one file, readable only by its owner (it describes people)."""

    def __init__(self, path: str, view=None):
        self.view = view
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.file = os.fdopen(fd, "wb")
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
