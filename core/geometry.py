"""Box geometry shared by tracking, scoring and tests: one IoU, so a tracker and the score that
judges it can never disagree on what overlap means. Boxes are [x1, y1, x2, y2] in pixels."""
from __future__ import annotations

import numpy as np


def as_boxes(boxes) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def areas(boxes) -> np.ndarray:
    """Areas of (N, 4) boxes; degenerate boxes count as a tiny area, never zero, so ratios and
    logarithms of areas stay finite."""
    b = as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 1e-6, None) * np.clip(b[:, 3] - b[:, 1], 1e-6, None)


def centres(boxes) -> np.ndarray:
    b = as_boxes(boxes)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)


def centre_distances(a, b) -> np.ndarray:
    """(len(a), len(b)) distances between box centres."""
    return np.linalg.norm(centres(a)[:, None, :] - centres(b)[None, :, :], axis=2)


def iou_matrix(a, b) -> np.ndarray:
    """(len(a), len(b)) intersection over union; 0 where boxes do not overlap."""
    a, b = as_boxes(a), as_boxes(b)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    return inter / (areas(a)[:, None] + areas(b)[None, :] - inter)


def iou(a, b) -> float:
    """IoU of two single boxes."""
    return float(iou_matrix(a, b)[0, 0])


def covered(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)): the share of each box of `a` that each box of `b` covers."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    overlap = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return overlap / areas(a)[:, None]
