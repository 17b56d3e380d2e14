"""Where a stream's annotated frames go. `AnnotatedVideo` draws and writes them inside the stream's
tracker, which already holds each frame's labels: a separate sink actor cost an actor call and a
second object-store fetch per frame. The run's `EventLogActor` appends every stream's events to
one file, a call every few frames."""
from __future__ import annotations

import cv2
import msgpack
import numpy as np
import ray

from core.draw import FaceLabel, draw_faces
from core.media import MediaError
from core.private import open_private

EVENT_BATCH = 12  # frames' events per call to the event log


class AnnotatedVideo:
    """A stream's annotated video file; also the annotated frame as JPEG, for a live view. With
    no path it only draws, for the view (a run with `video` off)."""

    def __init__(self, path: str | None, fps: float):
        self.path, self.fps = path, fps
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, image: np.ndarray, labels: list[FaceLabel], banner: str | None, jpeg: bool = False) -> bytes | None:
        """Draw and append one frame; returns it as JPEG when `jpeg`."""
        drawn = draw_faces(image, labels, banner)
        # contiguous: OpenCV's writer converts a strided view more slowly than this copy costs
        bgr = np.ascontiguousarray(drawn[:, :, ::-1])
        if self.path is not None:
            if self.writer is None:
                self.writer = self._open(drawn.shape)
            self.writer.write(bgr)
            self.frames += 1
        if not jpeg:
            return None
        return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes()

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
