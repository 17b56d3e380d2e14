"""Drawing annotations on a frame copy (object-store frames are read-only)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


@dataclass(frozen=True, slots=True)
class FaceLabel:
    box: tuple[float, float, float, float]
    lines: tuple[str, ...]
    key: int = 0  # picks the colour, e.g. the track id, so a track keeps its colour
    alert: bool = False


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
        y = y2 + 4
        for line in label.lines:
            (tw, th), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
            top = min(y, h - th - base - 2)
            cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + base + 2), color, -1)
            cv2.putText(out, line, (x1 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                        thick, cv2.LINE_AA)
            y = top + th + base + 3
    if banner:
        cv2.rectangle(out, (0, 0), (w, int(30 * font_scale + 14)), (255, 0, 0), -1)
        cv2.putText(out, banner, (8, int(30 * font_scale + 4)), cv2.FONT_HERSHEY_SIMPLEX, font_scale * 1.2,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return out
