"""Makes a hard tracking video from the shared photos, with its MOTChallenge ground truth.

`python tests/hard_video.py DIR` writes DIR/hard_faces.mp4 (640x480, 25 fps, 300 frames),
DIR/hard_faces.gt.txt and DIR/hard_faces.truth.json, in the formats of crossing_faces (see
tests/media/README.md). Made at test time, not committed: the script is the truth's source.

What happens, on a smooth synthetic background:
- obama and biden, the same size, cross head-on at speed (motion-blurred); biden passes in front;
- rose_leslie stands still; kit_harington walks in, growing as he comes nearer, and stands in
  front of her, hiding her completely for 2 s (more than half of her for 2.7 s), then walks on;
- alex_lacamoire walks out of the picture, stays out for 5 s and comes back, nearer (larger).

A face is in the ground truth while at least 60% of its box is in the picture and at least half
of it is not hidden by a face drawn in front of it (crossing_faces' rule).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.media import load_image  # noqa: E402

MEDIA = Path(__file__).parent / "media"
WIDTH, HEIGHT, FPS, FRAMES = 640, 480, 25, 300
NAME = "hard_faces"
# the sprite around the face box, in face-box sizes: enough hair and chin for the detector
MARGIN = 0.35


@dataclass(frozen=True)
class Person:
    gt_id: int
    name: str
    gender: str
    photo: str
    face: tuple[int, int, int, int]  # face box in the photo: CenterFace's, checked by eye


PEOPLE = (
    Person(1, "obama", "male", "photos/obama.jpg", (363, 64, 619, 443)),
    Person(2, "biden", "male", "photos/biden.jpg", (426, 157, 719, 572)),
    Person(3, "rose_leslie", "female", "gallery/rose_leslie/img2.jpg", (179, 107, 423, 469)),
    Person(4, "kit_harington", "male", "gallery/kit_harington/img1.jpg", (687, 76, 806, 231)),
    Person(5, "alex_lacamoire", "male", "gallery/alex_lacamoire/img1.jpg", (284, 97, 597, 569)),
)
# drawing order, back to front
DEPTH = (3, 1, 2, 5, 4)


def _ramp(f: float, f0: float, f1: float, v0: float, v1: float) -> float:
    """v0 before frame f0, v1 after f1, linear in between."""
    if f1 <= f0:
        return v1 if f >= f0 else v0
    a = min(max((f - f0) / (f1 - f0), 0.0), 1.0)
    return v0 + a * (v1 - v0)


def place(gt_id: int, f: int) -> tuple[float, float, float] | None:
    """Centre x, y and face width of person `gt_id` in frame f, or None while off stage."""
    if gt_id == 1:  # left to right, head-on into biden, at 6 px a frame
        return _ramp(f, 0, 90, 60, 580), 140, 90
    if gt_id == 2:
        return _ramp(f, 0, 90, 580, 60), 146, 90
    if gt_id == 3:
        return 200, 350, 80
    if gt_id == 4:  # walks in from the left growing, stands over rose_leslie for 2 s, walks on
        if f < 90:
            return None
        if f < 140:
            x = _ramp(f, 90, 140, -70, 50)
        elif f < 200:  # the last steps over her and away again are quick: she is hidden for ~2 s
            x = _ramp(f, 140, 150, 50, 200)
        else:
            x = _ramp(f, 200, 210, 200, 310) if f < 210 else _ramp(f, 210, 240, 310, 370)
        return x, 350 + _ramp(f, 90, 150, -20, 0), _ramp(f, 90, 150, 80, 140)
    if gt_id == 5:  # out to the right by frame 32, away 5 s, back in from frame 165, larger
        if f < 40:
            return _ramp(f, 0, 40, 530, 720), 320, 80
        if f < 160:
            return None
        return _ramp(f, 160, 215, 720, 565), 320, _ramp(f, 160, 215, 100, 110)
    raise ValueError(gt_id)


def _background(rng: np.random.Generator) -> np.ndarray:
    """Smooth colour fields: texture for the detector to reject, no face-like structure."""
    small = rng.uniform(40, 200, (6, 8, 3)).astype(np.float32)
    image = cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


class Sprite:
    """One person's face cut from their photo with a soft oval edge, drawn at any size."""

    def __init__(self, person: Person):
        image = load_image(MEDIA / person.photo)
        x1, y1, x2, y2 = person.face
        w, h = x2 - x1, y2 - y1
        self.left, self.top = int(x1 - MARGIN * w), int(y1 - MARGIN * h)
        right, bottom = int(x2 + MARGIN * w), int(y2 + MARGIN * h)
        pad = max(0, -self.left, -self.top, right - image.shape[1], bottom - image.shape[0])
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        self.patch = padded[self.top + pad:bottom + pad, self.left + pad:right + pad]
        ph, pw = self.patch.shape[:2]
        mask = np.zeros((ph, pw), np.float32)
        cv2.ellipse(mask, (pw // 2, ph // 2), (int(pw * 0.45), int(ph * 0.47)), 0, 0, 360, 1.0, -1)
        self.mask = cv2.GaussianBlur(mask, (0, 0), max(pw, ph) * 0.03)
        self.face = np.array(person.face, np.float64)

    def draw(self, canvas: np.ndarray, cx: float, cy: float, width: float, blur_px: float,
             cover: np.ndarray) -> np.ndarray:
        """Draws the face with its box centred on (cx, cy), `width` wide, smeared over `blur_px`
        horizontally; marks the opaque part in `cover`; returns the face box."""
        k = width / (self.face[2] - self.face[0])
        patch = cv2.resize(self.patch, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(self.mask, (patch.shape[1], patch.shape[0]), interpolation=cv2.INTER_LINEAR)
        if blur_px >= 2:
            kernel = np.full((1, int(round(blur_px))), 1.0 / round(blur_px), np.float32)
            patch = cv2.filter2D(patch, -1, kernel)
            mask = cv2.filter2D(mask, -1, kernel)
        face = (self.face - [self.left, self.top, self.left, self.top]) * k
        fcx, fcy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
        ox, oy = int(round(cx - fcx)), int(round(cy - fcy))
        h, w = mask.shape
        x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + w, WIDTH), min(oy + h, HEIGHT)
        if x1 > x0 and y1 > y0:
            m = mask[y0 - oy:y1 - oy, x0 - ox:x1 - ox, None]
            region = canvas[y0:y1, x0:x1].astype(np.float32)
            blended = m * patch[y0 - oy:y1 - oy, x0 - ox:x1 - ox] + (1 - m) * region
            canvas[y0:y1, x0:x1] = blended.astype(np.uint8)
            cover[y0:y1, x0:x1] |= m[..., 0] > 0.5
        return face + [ox, oy, ox, oy]


def visible_fraction(box: np.ndarray, covered_after: np.ndarray) -> tuple[float, float]:
    """Share of the box inside the picture, and share of that not covered by faces in front."""
    x1, y1, x2, y2 = box
    area = max((x2 - x1) * (y2 - y1), 1e-6)
    ix1, iy1 = int(max(x1, 0)), int(max(y1, 0))
    ix2, iy2 = int(min(x2, WIDTH)), int(min(y2, HEIGHT))
    if ix2 <= ix1 or iy2 <= iy1:
        return 0.0, 0.0
    inside = (ix2 - ix1) * (iy2 - iy1)
    hidden = covered_after[iy1:iy2, ix1:ix2].sum()
    return inside / area, 1.0 - hidden / inside


def make(out_dir: Path) -> tuple[Path, Path, Path]:
    """Writes the video, gt.txt and truth.json into out_dir; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    video = out_dir / f"{NAME}.mp4"
    gt_path, truth_path = out_dir / f"{NAME}.gt.txt", out_dir / f"{NAME}.truth.json"
    rng = np.random.default_rng(13)
    background = _background(rng)
    people = {p.gt_id: p for p in PEOPLE}
    sprites = {gt_id: Sprite(p) for gt_id, p in people.items()}
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    rows, spans = [], {}
    try:
        for f in range(FRAMES):
            canvas = background.copy()
            drawn: list[tuple[int, np.ndarray, np.ndarray]] = []
            for gt_id in DEPTH:
                where = place(gt_id, f)
                if where is None:
                    continue
                before = place(gt_id, f - 1) if f else None
                speed = abs(where[0] - before[0]) if before else 0.0
                cover = np.zeros((HEIGHT, WIDTH), bool)
                # an exposure of about a frame and a half: 6 px a frame smears over 9 px
                box = sprites[gt_id].draw(canvas, *where, blur_px=1.5 * speed, cover=cover)
                drawn.append((gt_id, box, cover))
            for depth, (gt_id, box, _) in enumerate(drawn):
                in_front = np.zeros((HEIGHT, WIDTH), bool)
                for _, _, cover in drawn[depth + 1:]:
                    in_front |= cover
                inside, unhidden = visible_fraction(box, in_front)
                if inside >= 0.6 and unhidden >= 0.5:
                    x1, y1, x2, y2 = box
                    rows.append(f"{f + 1},{gt_id},{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},1,-1,-1,-1")
                    first, _ = spans.get(gt_id, (f + 1, f + 1))
                    spans[gt_id] = (first, f + 1)
            writer.write(canvas[:, :, ::-1])
    finally:
        writer.release()
    gt_path.write_text("\n".join(rows) + "\n")
    truth = {"fps": FPS, "frames": FRAMES, "width": WIDTH, "height": HEIGHT,
             "tracks": {str(i): {"name": people[i].name, "gender": people[i].gender,
                                 "first": spans[i][0], "last": spans[i][1]} for i in sorted(spans)}}
    truth_path.write_text(json.dumps(truth, indent=1))
    return video, gt_path, truth_path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write the video and its truth into")
    for path in make(parser.parse_args().out):
        print(path)
