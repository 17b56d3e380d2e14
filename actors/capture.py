"""`CaptureActor`: one per stream. Puts each frame into the object store once and offers the
scheduler a small `FrameRef`; the scheduler answers an offer when it lets go of the frame. In
lossless mode at most a window of offers is open (backpressure); in live mode the source is read
at its own pace. A capture that `may_hold` (nobody draws the stream) keeps its frames' pixels
instead while most of them are carried past the detector (`PixelHolding`), and puts only those
the scheduler sends to detection (`pixels`): nobody looks at the others' pixels."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import cv2
import ray

from core.holding import PixelHolding
from core.messages import FrameRef
from core.sources import open_source


@dataclass(frozen=True, slots=True)
class CaptureReport:
    stream: str
    frames: int
    errors: tuple[str, ...]


@ray.remote(num_cpus=0, max_concurrency=2)
class CaptureActor:
    def __init__(self, stream: str, source: str, scheduler, realtime: bool, loop: bool = False,
                 duration: float | None = None, window: int | None = None, may_hold: bool = False):
        # OpenCV's own thread pool works against the models on a small box: decoding and converting
        # a 640x480 frame took 1.12 ms of CPU with it, 0.72 on one thread (crossing_faces, 2-core
        # machine, 2026-12-07)
        cv2.setNumThreads(1)
        # lossless: frames offered and not yet let go of, at most (backpressure); live: no limit
        self.stream, self.scheduler, self.window = stream, scheduler, window
        self.address, self.loop = source, loop
        self.source = None
        self.realtime, self.duration = realtime, duration
        self.holding = PixelHolding() if may_hold else None
        # seq -> pixels of a frame offered without them and not yet let go of, read by `pixels` on
        # the actor's other thread: single dict operations, atomic under the GIL
        self._held: dict = {}
        self._stop = threading.Event()

    def open(self) -> float:
        """Open the source; its frame rate, or the MediaError that says why not (raised from a
        method, not the constructor, so the caller gets the error rather than a dead actor)."""
        self.source = open_source(self.address, self.loop)
        return self.source.fps

    def pixels(self, seq: int):
        """A held frame's pixels, returned into the object store for the scheduler, which asks
        only for frames it has not let go of (their offers are unanswered, so still held)."""
        image = self._held.get(seq)
        if image is None:
            raise LookupError(f"{self.stream}#{seq}: frame no longer held by its capture")
        return image

    def run(self) -> CaptureReport:
        seq, errors, offers = 0, [], []  # offers: admit calls not yet answered
        offered: dict = {}  # offer -> its frame's seq, for pixels held until it is answered
        start = time.monotonic()
        for item in self.source:
            if self._stop.is_set() or (self.duration and time.monotonic() - start > self.duration):
                break
            if item.image is None:
                errors.append(item.error)
                # every frame the source lost counts, not one per report
                ray.get([self.scheduler.drop_uncaptured.remote(self.stream, seq + k, "decode_error")
                         for k in range(item.frames)])
                seq += item.frames - 1
            else:
                now = time.time()
                t_stream = seq / self.source.fps if self.source.is_file else now
                holds = self.holding is not None and self.holding.holding
                if holds:
                    self._held[seq] = item.image
                frame = FrameRef(self.stream, seq, now, item.image.shape, None if holds else ray.put(item.image),
                                 t_stream)
                offers.append(self.scheduler.admit.remote(frame))
                offered[offers[-1]] = seq
                # the scheduler answers once it lets go of the frame (PriorityScheduler.admit):
                # lossless waits while the window is full, live only clears away answered offers
                if self.window is not None and len(offers) >= self.window:
                    answered, offers = ray.wait(offers, num_returns=len(offers) - self.window + 1)
                elif len(offers) > 8:
                    answered, offers = ray.wait(offers, num_returns=len(offers), timeout=0)
                else:
                    answered = []
                # a scheduler that failed ends the run here
                for offer, detected in zip(answered, ray.get(answered)):
                    self._held.pop(offered.pop(offer), None)
                    if self.holding is not None:
                        self.holding.answered(detected)
            seq += 1
            if self.realtime and self.source.is_file:
                # a file played as a camera: frame k is due k/fps seconds after the start
                delay = start + seq / self.source.fps - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
        # offers still open are answered as their frames finish; the pipeline drains them
        return CaptureReport(self.stream, seq, tuple(errors))

    def stop(self) -> None:
        self._stop.set()
