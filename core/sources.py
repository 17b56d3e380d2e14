"""Frame sources behind a `CaptureActor`: a video file (optionally looped), an image folder, a
camera index or a network URL (reconnected with backoff). Plain Python, no Ray."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from core.media import MediaError, VideoFrames, is_video, iter_image_files, load_image
from core.private import redact, split_address


@dataclass(frozen=True, slots=True)
class SourceItem:
    """A frame, or the reason one could not be had (then `image` is None, and `frames` says how
    many of the source's frames that reason covers)."""

    image: np.ndarray | None
    error: str | None = None
    frames: int = 1


def stream_name(source: str, index: int) -> str:
    """"index:base", where base is a file's or folder's name, "cameraN", or a URL's last path
    segment (its host when it has no path). A URL's userinfo and query never reach the name: it
    names folders, events, metric tags and the view."""
    if source.isdigit():
        base = f"camera{source}"
    elif "://" in source:
        _, _, host, path, _ = split_address(source)
        base = path.rstrip("/").rpartition("/")[2] or host
    else:
        base = os.path.basename(os.path.normpath(source))
    return f"{index}:{base}" if base else f"stream{index}"


class FrameSource:
    fps: float = 25.0
    is_file: bool = True

    def __iter__(self) -> Iterator[SourceItem]: ...


class VideoFileSource(FrameSource):
    def __init__(self, path: str, loop: bool = False):
        self.path, self.loop = path, loop
        with VideoFrames(path) as probe:  # fails here, with a clear MediaError, for a bad file
            self.fps = probe.fps or 25.0

    def __iter__(self):
        while True:
            with VideoFrames(self.path) as frames:
                for _, _, image in frames:
                    yield SourceItem(image)
                if frames.decode_errors:
                    yield SourceItem(None, f"{self.path}: video ends early, {frames.decode_errors} frame(s) undecodable",
                                     frames.decode_errors)
            if not self.loop:
                return


class ImageFolderSource(FrameSource):
    def __init__(self, path: str, loop: bool = False, fps: float = 5.0):
        self.files = list(iter_image_files([path]))
        if not self.files:
            raise MediaError(path, "no images in this folder")
        self.loop, self.fps = loop, fps

    def __iter__(self):
        while True:
            for path, _ in self.files:
                try:
                    yield SourceItem(load_image(path))
                except MediaError as error:
                    yield SourceItem(None, str(error))
            if not self.loop:
                return


class LiveSource(FrameSource):
    """A camera index or an RTSP/HTTP URL. A stall (no data for `stall_s`) or disconnect reopens
    it, waiting 0.5 s, 1 s, 2 s ... up to `max_backoff_s` between tries; `reconnects` counts them."""

    is_file = False

    def __init__(self, address: str, max_backoff_s: float = 8.0, give_up_s: float = 60.0, stall_s: float = 5.0):
        self.address = int(address) if address.isdigit() else address
        self.shown = redact(address)
        self.max_backoff_s, self.give_up_s = max_backoff_s, give_up_s
        # OpenCV's FFmpeg backend otherwise blocks 30 s on a URL that stops sending, in read() and
        # again in each reopen: a stall went unseen that long and give_up_s was not kept.
        self.timeouts = [] if isinstance(self.address, int) else [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(stall_s * 1000), cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(stall_s * 1000)]
        self.reconnects = 0
        self.capture = self._open()
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 25.0

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(self.address, cv2.CAP_ANY, self.timeouts)
        if not capture.isOpened():
            raise MediaError(self.shown, "cannot open the camera or stream")
        return capture

    def __iter__(self):
        backoff, down_since = 0.5, None
        while True:
            ok, frame = self.capture.read()
            if ok:
                backoff, down_since = 0.5, None
                yield SourceItem(np.ascontiguousarray(frame[:, :, ::-1]))
                continue
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > self.give_up_s:
                yield SourceItem(None, f"{self.shown}: no frames for {self.give_up_s:.0f} s, giving up")
                return
            time.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
            self.capture.release()
            self.reconnects += 1
            try:
                self.capture = self._open()
            except MediaError:
                continue


def open_source(source: str, loop: bool = False) -> FrameSource:
    if source.isdigit() or "://" in source:
        return LiveSource(source)
    if os.path.isdir(source):
        return ImageFolderSource(source, loop)
    if is_video(source) or os.path.isfile(source):
        return VideoFileSource(source, loop)
    raise MediaError(source, "no such file, folder, camera or URL")
