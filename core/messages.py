"""Frozen messages that cross actor boundaries. Pixels never travel in them by value: a frame is an
object-store reference (`FrameRef.ref`), and every actor that needs a face's chip cuts it from
the frame itself."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class FrameRef:
    """One captured frame. `ref` is a Ray ObjectRef to an HxWx3 RGB uint8 array (None as sent to
    a tracker that draws nothing, and as offered by a capture that holds the pixels until they
    are asked for); core never imports Ray, so it is typed Any here. `t_capture` is wall-clock
    (latency); `t_stream` is the stream's own clock: video time for a file, wall-clock for a
    camera."""

    stream: str
    seq: int
    t_capture: float
    shape: tuple[int, int, int]
    ref: Any
    t_stream: float = 0.0


@dataclass(frozen=True, slots=True)
class FaceBoxes:
    """Faces found in one image: boxes [x1, y1, x2, y2], scores, and the 5 landmarks used for
    alignment (x, y in image pixels)."""

    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    landmarks: np.ndarray  # (N, 5, 2) float32

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> FaceBoxes:
        return FaceBoxes(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        )


@dataclass(frozen=True, slots=True)
class FaceCrops:
    """Aligned crops of every face of one frame, one stacked uint8 array per crop spec
    (key from `CropSpec.key`), face i at index i of each array."""

    chips: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.chips.values()))) if self.chips else 0


@dataclass(frozen=True, slots=True)
class AgeEstimates:
    ages: np.ndarray  # (N,) expected value in years
    posteriors: np.ndarray  # (N, bins)


@dataclass(frozen=True, slots=True)
class ClassScores:
    """Class probabilities for a batch (gender, expression, any user classifier)."""

    labels: tuple[str, ...]
    probs: np.ndarray  # (N, K)

    def best(self, i: int) -> tuple[str, float]:
        k = int(np.argmax(self.probs[i]))
        return self.labels[k], float(self.probs[i, k])

    def as_dict(self, i: int) -> dict[str, float]:
        return {label: float(p) for label, p in zip(self.labels, self.probs[i])}


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: np.ndarray  # (N, D) float32, L2-normalised


@dataclass(frozen=True, slots=True)
class IdentityMatch:
    """The nearest gallery face of one embedding. Within the gallery's threshold it is an identity;
    beyond it (`lookalike`) it is only who the face resembles and must never be shown, alarmed on or
    enrolled against as that person."""

    name: str
    distance: float
    watched: bool = False
    lookalike: bool = False
    # Derived from `distance` (core/gallery.py `similarity`), so equality need not compare them.
    similarity: float = field(default=0.0, compare=False)
    # The gallery's thumbnail of the nearest embedding (RGB uint8), None where it has none.
    thumbnail: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RecognitionJob:
    """One task on some faces of one frame: the tracker asks, a recognition actor answers. The
    actor cuts its own chips from the frame at the faces' landmarks: the frame is in the object
    store already, while chips cut once for every model were a put and two fetches more a frame,
    paid even for the frames (most of them, under the budget) that ask for no recognition.

    The tracker attaches the frame's handle (`frame`) from the on_detections call that brought it,
    and that call stays open until the frame's jobs are answered: a borrower that kept a handle past
    the call would leave an entry in the owner's reference table for every frame (Ray 2.60,
    bench/borrow_leak.py)."""

    stream: str
    seq: int
    task: str
    landmarks: np.ndarray  # (N, 5, 2) float32, face i of the job is track_ids[i]
    track_ids: tuple[int, ...]
    frame: list[Any] = field(default_factory=list)  # [ObjectRef to the pixels]: a list, so Ray hands it on unresolved


@dataclass(frozen=True, slots=True)
class Recognised:
    """Results of one job, row i for track_ids[i]."""

    task: str
    track_ids: tuple[int, ...]
    age: AgeEstimates | None = None
    gender: ClassScores | None = None
    expression: ClassScores | None = None
    embeddings: np.ndarray | None = None
    matches: tuple[IdentityMatch | None, ...] = ()

    def rows_match(self) -> bool:
        """Every result has one row per track: a model that answered another shape is caught
        where it ran, not as an index error in the tracker."""
        parts = [self.age and self.age.ages, self.age and self.age.posteriors, self.gender and self.gender.probs,
                 self.expression and self.expression.probs, self.embeddings, self.matches or None]
        return all(len(p) == len(self.track_ids) for p in parts if p is not None)


@dataclass(frozen=True, slots=True)
class PoolCall:
    """One recognition call a tracker made: its task, how long it took and how many jobs it carried."""

    task: str
    seconds: float
    jobs: int


@dataclass(frozen=True, slots=True)
class DoneReport:
    """A tracker's news for the scheduler: frames it has put out, as (seq, capture time, output
    time), so latency is the output's, not the report's; `need`, how much the stream needs its next
    detection (core/need.py); the recognition calls it made, and (task, jobs waiting, calls in
    flight) of each task, for the run's stage figures and gauges. It rides on the answer to the
    scheduler's next on_detections or on_carried call, or is sent on its own (`frames_done`)."""

    stream: str
    frames: tuple[tuple[int, float, float], ...]
    need: float
    calls: tuple[PoolCall, ...] = ()
    load: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class PoolRoute:
    """A recognition pool actor a tracker may send jobs to."""

    worker_id: str
    task: str
    handle: Any
