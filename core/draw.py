"""Drawing annotations on a frame copy (object-store frames are read-only). Everything drawn stays
inside the frame: a face at the border gets its labels and thumbnail moved in, not cut off."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GAP = 4  # pixels between a box and what is drawn beside it


@dataclass(frozen=True, slots=True)
class FaceLabel:
    box: tuple[float, float, float, float]
    lines: tuple[str, ...]
    key: int = 0  # picks the colour, e.g. the track id, so a track keeps its colour
    alert: bool = False
    # the gallery face this one looks like (RGB uint8), drawn beside the box with its caption
    thumbnail: np.ndarray | None = None
    thumbnail_caption: str = ""


def draw_faces(image: np.ndarray, labels: list[FaceLabel], banner: str | None = None) -> np.ndarray:
    """An annotated RGB copy of `image`."""
    out = image.copy()
    h, w = out.shape[:2]
    font_scale = max(0.4, min(1.0, w / 1400))
    thick = 1 if font_scale < 0.7 else 2
    for label in labels:
        color = (255, 0, 0) if label.alert else _PALETTE[label.key % len(_PALETTE)]
        x1, y1, x2, y2 = (int(round(v)) for v in label.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick + 1)
        # under the box, or above it where the frame ends first
        block = sum(_text_size(line, font_scale, thick)[1] + 1 for line in label.lines)
        y = y2 + _GAP if y2 + _GAP + block <= h else max(0, y1 - _GAP - block)
        right = x1  # where the label block ends
        for line in label.lines:
            right = max(right, _clamp(x1, 0, w - _text_size(line, font_scale, thick)[0])
                        + _text_size(line, font_scale, thick)[0])
            y = _text_box(out, line, x1, y, color, font_scale, thick) + 1
        if label.thumbnail is not None:
            _thumbnail(out, label.thumbnail, label.thumbnail_caption, (x1, y1, x2, y2), right, color,
                       font_scale * 0.8)
    if banner:
        cv2.rectangle(out, (0, 0), (w, int(30 * font_scale + 14)), (255, 0, 0), -1)
        cv2.putText(out, banner, (8, int(30 * font_scale + 4)), _FONT, font_scale * 1.2,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return out


def thumbnail_origin(box: tuple[int, int, int, int], side: int, frame: tuple[int, int],
                     labels_end: int | None = None) -> tuple[int, int]:
    """Top-left corner of a thumbnail `side` pixels square beside `box` in a frame (h, w), level
    with the box's top: left of the box, where the box's label lines (which start at its left edge
    and end at `labels_end`) cannot reach it; else right of the box and its labels; else as far
    right as the frame allows. Always inside the frame."""
    h, w = frame
    x1, y1, x2, _ = box
    right = max(x2, x1 if labels_end is None else labels_end)
    if x1 - _GAP - side >= 0:
        x = x1 - _GAP - side
    elif right + _GAP + side <= w:
        x = right + _GAP
    else:
        x = w - side
    return _clamp(x, 0, w - side), _clamp(y1, 0, h - side)


def _thumbnail(out: np.ndarray, thumb: np.ndarray, caption: str, box, labels_end: int, color,
               font_scale: float) -> None:
    h, w = out.shape[:2]
    side = min(thumb.shape[0], h, w)
    if side != thumb.shape[0]:  # a frame smaller than the thumbnail
        thumb = cv2.resize(thumb, (side, side), interpolation=cv2.INTER_AREA)
    x, y = thumbnail_origin(box, side, (h, w), labels_end)
    out[y:y + side, x:x + side] = thumb
    cv2.rectangle(out, (x - 1, y - 1), (x + side, y + side), color, 1)
    if caption:
        width, height = _text_size(caption, font_scale, 1)
        # Above the thumbnail, level with the box's top, where the box's own labels never are (they
        # go under the box), else under it; wider than the thumbnail, it grows away from the box.
        top = y - 1 - height if y - 1 - height >= 0 else y + side + 1
        left = x + side - width if x < box[0] else x
        _text_box(out, caption, left, top, color, font_scale, 1)


def _text_box(out: np.ndarray, text: str, x: int, y: int, color, font_scale: float, thick: int) -> int:
    """`text` on a filled box whose top-left is (x, y), moved inside the frame; returns its bottom."""
    h, w = out.shape[:2]
    (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, thick)
    width, height = _text_size(text, font_scale, thick)
    x = _clamp(x, 0, w - width)
    top = _clamp(y, 0, h - height)
    cv2.rectangle(out, (x, top), (x + tw + 4, top + th + base + 2), color, -1)
    cv2.putText(out, text, (x + 2, top + th + 1), _FONT, font_scale, (0, 0, 0), thick, cv2.LINE_AA)
    return top + th + base + 2


def _text_size(text: str, font_scale: float, thick: int) -> tuple[int, int]:
    """Pixels a `_text_box` covers (cv2 fills both corners of a rectangle)."""
    (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, thick)
    return tw + 5, th + base + 3


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(v, hi))
