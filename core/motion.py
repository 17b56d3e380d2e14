"""`FaceFlow`: moves face boxes from one frame to the next by the image's own motion (sparse
Lucas-Kanade optical flow on corners inside each face), for frames that live mode carries without
detecting them. A constant-velocity guess drifts off a face that turns, stops or speeds up within
the few frames between detections; the pixels say where it went, for about half a millisecond a
face. Only a face's central part is followed (the box's edges hold background, which stays put),
each point is checked by flowing it back, and a face whose points disagree or are too few keeps
the caller's guess."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


# side of a face's look (`FaceFlow.look`): enough to tell two faces apart, small enough to ignore
# the pixel noise between frames
LOOK_PX = 16


@dataclass(frozen=True, slots=True)
class MotionConfig:
    # off: carried frames show the tracks' constant-velocity boxes. On, it applies where the
    # tracker has the pixels anyway: a run that draws a video or a live view
    flow: bool = True
    # the part of a face box points are taken from, as shares of its width and height
    core_width: float = 0.6
    core_height: float = 0.7
    # how far a face may move between two frames looked at, in face sizes; the patch searched
    search: float = 0.6
    max_points: int = 30
    min_points: int = 5
    # a point that does not come back within this many pixels when flowed back is dropped
    max_back_error_px: float = 1.0
    # the points' moves may spread this much (median distance from their median, in face sizes)
    # before the face counts as not followed: an occluder crossing it, or a blur
    max_spread: float = 0.08
    # a face another face's box covers more than this share of is not followed (see
    # StreamTracker._followable)
    max_cover: float = 0.2
    window_px: int = 15
    levels: int = 3


@dataclass(frozen=True, slots=True)
class FlowResult:
    boxes: np.ndarray  # (N, 4): each face's box moved, or the guess it was given where not followed
    followed: np.ndarray  # (N,) bool: moved by the flow


class FaceFlow:
    def __init__(self, config: MotionConfig = MotionConfig()):
        self.config = config
        self._criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)

    def move(self, previous: np.ndarray, current: np.ndarray, boxes: np.ndarray,
             guesses: np.ndarray | None = None, looks: list[np.ndarray | None] | None = None) -> FlowResult:
        """Boxes (N, 4: x1, y1, x2, y2) of faces in frame `previous`, moved to where those faces
        are in frame `current` (same size, RGB or grey); `guesses` (default: the boxes) stand
        where a face cannot be followed. `looks`: each face as last detected (`look`); where
        given, the moved box must show it at least as well as the guess does, since a face that
        passes in front drags the points of the one behind along with it."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        out = np.array(boxes if guesses is None else guesses, np.float64).reshape(-1, 4)
        followed = np.zeros(len(boxes), bool)
        for i, box in enumerate(boxes):
            shift = self._shift(previous, current, box)
            if shift is None:
                continue
            moved = box + np.concatenate([shift, shift])
            look = looks[i] if looks is not None else None
            if look is None or _likeness(self.look(current, moved), look) >= _likeness(self.look(current, out[i]), look):
                out[i] = moved
                followed[i] = True
        return FlowResult(out.astype(np.float32), followed)

    def look(self, image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """A face's central part, small, grey and normalised: what `move` compares a box's
        contents with. None where the box lies (almost) outside the picture."""
        cfg = self.config
        centre = (box[:2] + box[2:]) / 2
        half = (box[2:] - box[:2]) / 2 * (cfg.core_width, cfg.core_height)
        x0, y0 = np.maximum(centre - half, 0).astype(int)
        x1, y1 = np.minimum(centre + half, image.shape[1::-1]).astype(int)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None
        patch = cv2.resize(_grey(image[y0:y1, x0:x1]), (LOOK_PX, LOOK_PX), interpolation=cv2.INTER_AREA)
        patch = patch.astype(np.float32) - patch.mean()
        return patch / max(float(np.linalg.norm(patch)), 1e-6)

    def _shift(self, previous: np.ndarray, current: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        cfg = self.config
        height, width = previous.shape[:2]
        size = float(np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1.0)))
        pad = cfg.search * size
        x0, y0 = int(max(box[0] - pad, 0)), int(max(box[1] - pad, 0))
        x1, y1 = int(min(box[2] + pad, width)), int(min(box[3] + pad, height))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        before, after = _grey(previous[y0:y1, x0:x1]), _grey(current[y0:y1, x0:x1])
        centre = (box[:2] + box[2:]) / 2 - (x0, y0)
        half = (box[2:] - box[:2]) / 2 * (cfg.core_width, cfg.core_height)
        mask = np.zeros_like(before)
        a, b = np.maximum(centre - half, 0).astype(int), np.minimum(centre + half, mask.shape[::-1]).astype(int)
        mask[a[1]:b[1], a[0]:b[0]] = 255
        points = cv2.goodFeaturesToTrack(before, cfg.max_points, 0.01, max(size / 15, 2.0), mask=mask)
        if points is None or len(points) < cfg.min_points:
            return None
        window = (cfg.window_px, cfg.window_px)
        moved, ok, _ = cv2.calcOpticalFlowPyrLK(before, after, points, None, winSize=window, maxLevel=cfg.levels,
                                                criteria=self._criteria)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(after, before, moved, None, winSize=window,
                                                    maxLevel=cfg.levels, criteria=self._criteria)
        error = np.linalg.norm((back - points).reshape(-1, 2), axis=1)
        good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (error <= cfg.max_back_error_px)
        if good.sum() < cfg.min_points:
            return None
        moves = (moved - points).reshape(-1, 2)[good]
        shift = np.median(moves, axis=0)
        if np.median(np.linalg.norm(moves - shift, axis=1)) > cfg.max_spread * size:
            return None
        return shift


def _likeness(a: np.ndarray | None, b: np.ndarray) -> float:
    """Normalised cross-correlation of two looks (-1 to 1); -1 where a box shows nothing."""
    return -1.0 if a is None else float(np.sum(a * b))


def _grey(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
