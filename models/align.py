"""Face alignment: one least-squares similarity transform per face (the TUT paper's Eq. 3), from
its 5 landmarks to a unit face template; every model's chip is cut from that same transform, only
scaled and shifted for the model's size and padding."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from core.messages import FaceCrops
from models.entry import CropSpec

# dlib's 5-point template (get_face_chip_details), in unit face coordinates; the order follows
# dlib's 5-point shape predictor: outer and inner corner of the image-left eye... as dlib numbers them.
DLIB_5PT_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True, slots=True)
class View:
    """One test-time view of an aligned face: the crop zoomed by `zoom` about the template's
    centre and shifted by (`dx`, `dy`) template widths, optionally mirrored. Estimates averaged
    over a few views depend less on the pixel grid and landmark noise of any one crop."""

    dx: float = 0.0
    dy: float = 0.0
    zoom: float = 1.0
    flip: bool = False

    def apply(self, unit: np.ndarray) -> np.ndarray:
        """The image -> unit-template transform of this view, from the face's own."""
        centre = DLIB_5PT_TEMPLATE.mean(0)
        out = unit * self.zoom
        out[:, 2] += (1.0 - self.zoom) * centre + (self.dx, self.dy)
        return out


PLAIN = View()
# Cydral's age model moves by 10-20 years between crops 4% apart on the same photo, so an
# estimate is an average over a small neighbourhood of crops: the plain one, a tighter and a looser
# one, shifted left, right and down (about the landmark noise dlib shows on a 60-pixel face), each
# also mirrored; 10 views in all
_JITTER = (View(), View(zoom=1.05), View(zoom=0.95), View(dx=0.03), View(dx=-0.03))
TTA_VIEWS = tuple(v for j in _JITTER for v in (j, View(j.dx, j.dy, j.zoom, flip=True)))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the scale+rotation+translation that maps `src` points onto `dst` with least
    squared error (Umeyama's closed form; reflections excluded)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sv, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (s0**2).sum() / len(src)
    scale = np.trace(np.diag(sv) @ sign) / var_s
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


def unit_transform(landmarks: np.ndarray, template: np.ndarray = DLIB_5PT_TEMPLATE) -> np.ndarray:
    """Image -> unit-template transform of one face. Fitted template -> image and inverted, as
    dlib does: least squares is not symmetric in scale, and the models were trained on dlib's chips."""
    return cv2.invertAffineTransform(similarity_transform(template, landmarks))


def chip_transform(unit: np.ndarray, size: int, padding: float) -> np.ndarray:
    """Image -> chip transform for a `size` chip with `padding` (dlib's meaning: the template sits
    in the middle 1/(1+2p) of the chip). Like dlib, the padded square spans pixel centres 0 to
    size-1, so chips match the ones the models were trained on."""
    k = (size - 1) / (1 + 2 * padding)
    out = unit * k
    out[:, 2] += padding * k
    return out


def warp_chip(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Cut a `size` chip. Shrinking by more than the bilinear kernel covers aliases badly (a 300 px
    face into 32 px), so the face's region is first area-averaged down to the chip's scale, as
    dlib's extract_image_chip does with its pyramid."""
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale < 1.0:
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
        pts = corners @ inverse.T
        h, w = image.shape[:2]
        x0, y0 = (max(0, int(math.floor(v)) - 2) for v in pts.min(0))
        x1 = min(w, int(math.ceil(pts[:, 0].max())) + 2)
        y1 = min(h, int(math.ceil(pts[:, 1].max())) + 2)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            sw = max(1, round((x1 - x0) * scale))
            sh = max(1, round((y1 - y0) * scale))
            small = cv2.resize(image[y0:y1, x0:x1], (sw, sh), interpolation=cv2.INTER_AREA)
            rx, ry = sw / (x1 - x0), sh / (y1 - y0)
            # pixel j of `small` is centred on image x = (j + 0.5) / rx - 0.5 + x0
            to_image = np.array([[1 / rx, 0, 0.5 / rx - 0.5 + x0], [0, 1 / ry, 0.5 / ry - 0.5 + y0], [0, 0, 1]])
            return cv2.warpAffine(small, matrix @ to_image, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def band_limited_chip(image: np.ndarray, matrix: np.ndarray, size: int, detail: int) -> np.ndarray:
    """Cut a `size` chip that holds no detail finer than a `detail`-pixel raster of the same square:
    a Gaussian of sigma half that raster's pitch, the usual anti-aliasing width, with the image
    taken as band-limited to its own pitch already. warp_chip's area averaging leaves aliasing that
    depends on the ratio of face to chip (a box filter at a non-integer ratio), so one face's chips
    differed with the photo's resolution; these do not, down to faces `detail` pixels wide."""
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    target = 0.5 * size / detail  # in chip pixels
    # an exact f x f box average first, down to 2-3 image pixels a chip pixel, so that the Gaussian
    # stays a few taps wide on a 300 px face; averaging further, to the chip's own scale, would
    # bring back the aliasing this function is for
    f = max(1, int(1 / (2 * scale)))
    sigma = math.sqrt(max(0.0, (target / (scale * f)) ** 2 - 0.25))
    margin = f * (math.ceil(3 * sigma) + 2)
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inverse.T
    h, w = image.shape[:2]
    x0, y0 = (max(0, int(math.floor(v)) - margin) for v in corners.min(0))
    x1 = min(w, int(math.ceil(corners[:, 0].max())) + margin)
    y1 = min(h, int(math.ceil(corners[:, 1].max())) + margin)
    nw, nh = (x1 - x0) // f, (y1 - y0) // f
    if nw < 2 or nh < 2:  # the chip lies off the image: nothing to filter
        return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    region = image[y0:y0 + nh * f, x0:x0 + nw * f]
    if f > 1:
        region = cv2.resize(region, (nw, nh), interpolation=cv2.INTER_AREA)
    if sigma > 0:
        region = cv2.GaussianBlur(region, (0, 0), sigma)
    # pixel j of `region` is centred on image x = f * j + (f - 1) / 2 + x0
    to_image = np.array([[f, 0, (f - 1) / 2 + x0], [0, f, (f - 1) / 2 + y0], [0, 0, 1]], np.float64)
    return cv2.warpAffine(region, matrix @ to_image, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)


def _to_color(chip: np.ndarray, color: str) -> np.ndarray:
    if color == "gray":
        return cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
    if color == "bgr":
        return np.ascontiguousarray(chip[:, :, ::-1])
    return chip


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int, padding: float = 0.2,
               color: str = "rgb", template: np.ndarray = DLIB_5PT_TEMPLATE) -> np.ndarray:
    """One aligned chip of one face from an RGB image and its 5 landmarks."""
    unit = unit_transform(landmarks, template)
    return _to_color(warp_chip(image, chip_transform(unit, size, padding), size), color)


def cut_crops(image: np.ndarray, landmarks: np.ndarray, specs: list[CropSpec], view: View = PLAIN) -> FaceCrops:
    """Every chip every model needs, for all faces of one RGB image: one alignment per face."""
    unique = {spec.key: spec for spec in specs}
    chips: dict[str, list[np.ndarray]] = {key: [] for key in unique}
    for points in landmarks:
        unit = view.apply(unit_transform(points))
        for key, spec in unique.items():
            matrix = chip_transform(unit, spec.size, spec.padding)
            chip = (warp_chip(image, matrix, spec.size) if spec.detail is None
                    else band_limited_chip(image, matrix, spec.size, spec.detail))
            if view.flip:
                chip = chip[:, ::-1]
            chips[key].append(np.ascontiguousarray(_to_color(chip, spec.color)))
    stacked = {}
    for key, spec in unique.items():
        shape = (0, spec.size, spec.size) + (() if spec.color == "gray" else (3,))
        stacked[key] = np.stack(chips[key]) if chips[key] else np.zeros(shape, np.uint8)
    return FaceCrops(stacked)
