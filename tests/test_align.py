import math

import cv2
import numpy as np
import pytest

from models.align import (DLIB_5PT_TEMPLATE, align_face, band_limited_chip, chip_transform, similarity_transform,
                          unit_transform, warp_chip)


def _similarity(angle_deg, scale, tx, ty):
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


def test_similarity_transform_recovers_known_rotation_and_scale():
    truth = _similarity(23.0, 2.7, 120.0, -35.0)
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    dst = src @ truth[:, :2].T + truth[:, 2]
    np.testing.assert_allclose(similarity_transform(src, dst), truth, atol=1e-9)


def test_similarity_transform_is_least_squares_under_noise():
    truth = _similarity(-12.0, 0.5, 10.0, 20.0)
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (50, 2))
    dst = src @ truth[:, :2].T + truth[:, 2] + rng.normal(0, 0.5, (50, 2))
    fit = similarity_transform(src, dst)
    assert abs(math.degrees(math.atan2(fit[1, 0], fit[0, 0])) + 12.0) < 0.2
    assert abs(math.hypot(fit[0, 0], fit[1, 0]) - 0.5) < 0.005


def test_face_rotated_in_the_image_comes_out_upright():
    # a face whose landmarks are the template rotated by 30 degrees, scaled x300, shifted
    pose = _similarity(30.0, 300.0, 400.0, 200.0)
    landmarks = DLIB_5PT_TEMPLATE @ pose[:, :2].T + pose[:, 2]
    unit = unit_transform(landmarks)
    np.testing.assert_allclose(landmarks @ unit[:, :2].T + unit[:, 2], DLIB_5PT_TEMPLATE, atol=1e-9)
    # paint a bright dot at the nose landmark; the chip must show it where the template puts it
    image = np.zeros((900, 900, 3), np.uint8)
    nx, ny = landmarks[4].round().astype(int)
    image[ny - 3:ny + 4, nx - 3:nx + 4] = 255
    chip = align_face(image, landmarks, 64, 0.2)
    expected = np.array([*DLIB_5PT_TEMPLATE[4], 1.0]) @ chip_transform(np.eye(3)[:2], 64, 0.2).T
    y, x = np.unravel_index(chip[:, :, 0].argmax(), chip.shape[:2])
    assert abs(x - expected[0]) <= 1.5 and abs(y - expected[1]) <= 1.5


def test_views_shift_zoom_and_mirror_the_chip_about_the_template():
    from models.align import View, cut_crops
    from models.entry import CropSpec

    pose = _similarity(0.0, 200.0, 100.0, 100.0)
    landmarks = DLIB_5PT_TEMPLATE @ pose[:, :2].T + pose[:, 2]
    image = np.zeros((500, 500, 3), np.uint8)
    nx, ny = landmarks[4].round().astype(int)
    image[ny - 2:ny + 3, nx - 2:nx + 3] = 255
    spec = CropSpec(101, 0.0, "rgb")  # no padding: one template unit is 100 chip pixels

    def nose(view):
        chip = cut_crops(image, landmarks[None], [spec], view).chips[spec.key][0]
        y, x = np.unravel_index(chip[:, :, 0].argmax(), chip.shape[:2])
        return x, y

    x0, y0 = nose(View())
    assert abs(x0 - 100 * DLIB_5PT_TEMPLATE[4, 0]) <= 1.5 and abs(y0 - 100 * DLIB_5PT_TEMPLATE[4, 1]) <= 1.5
    x, y = nose(View(dx=0.1))
    assert abs(x - (x0 + 10)) <= 1.5 and abs(y - y0) <= 1.5
    centre = 100 * DLIB_5PT_TEMPLATE.mean(0)
    x, y = nose(View(zoom=1.2))  # zooming in moves every point away from the template's centre
    assert abs(y - (centre[1] + 1.2 * (y0 - centre[1]))) <= 1.5
    x, _ = nose(View(flip=True))
    assert abs(x - (100 - x0)) <= 1.5


def _centroid(chip):
    w = chip.astype(np.float64)
    ys, xs = np.indices(w.shape)
    return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()


@pytest.mark.parametrize("face_px", [40.0, 120.0, 400.0])  # the chip enlarges, shrinks a little, shrinks a lot
def test_band_limited_chip_puts_the_face_where_warp_chip_does(face_px):
    # a bright dot on the nose; the blur spreads it, but its centroid must not move (an offset in
    # the box-averaged region's pixel centres would move it by a fraction of a chip pixel)
    pose = _similarity(17.0, face_px, 250.0, 230.0)
    landmarks = DLIB_5PT_TEMPLATE @ pose[:, :2].T + pose[:, 2]
    image = np.zeros((800, 800), np.uint8)
    nx, ny = landmarks[4]
    yy, xx = np.indices(image.shape)
    image[(xx - nx) ** 2 + (yy - ny) ** 2 <= (face_px / 30) ** 2] = 255
    matrix = chip_transform(unit_transform(landmarks), 64, 0.35)
    sharp, soft = warp_chip(image, matrix, 64), band_limited_chip(image, matrix, 64, 48)
    np.testing.assert_allclose(_centroid(soft), _centroid(sharp), atol=0.1)


def test_band_limited_chips_of_one_face_at_any_resolution_are_alike():
    # fine texture on a face 400 px wide, shrunk as the resolution series shrinks photos: area
    # averaging at a non-integer ratio aliases differently at each size, so warp_chip's chips of
    # the same face differ by most of the texture's contrast; band-limited to 48 px they agree
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (1000, 1000)).astype(np.float32), (0, 0), 1.0)
    big = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    landmarks = DLIB_5PT_TEMPLATE * 400 + 300
    chips = {"sharp": [], "soft": []}
    for side in (1000, 750, 500, 333, 250):
        image = big if side == 1000 else cv2.resize(big, (side, side), interpolation=cv2.INTER_AREA)
        # the same face in the smaller image: pixel centres scale about -0.5, as cv2.resize maps them
        matrix = chip_transform(unit_transform((landmarks + 0.5) * side / 1000 - 0.5), 64, 0.35)
        chips["sharp"].append(warp_chip(image, matrix, 64).astype(np.float64))
        chips["soft"].append(band_limited_chip(image, matrix, 64, 48).astype(np.float64))
    worst = {k: max(np.abs(a - b).mean() for a in c for b in c) for k, c in chips.items()}
    assert worst["soft"] < 0.2 * chips["soft"][0].std()  # measured 0.49 grey levels of 4.4
    assert worst["sharp"] > 0.5 * chips["sharp"][0].std()  # measured 5.6 of 7.9


def test_chips_band_limited_differently_are_different_chips():
    from models.entry import CropSpec, ModelEntry, ModelEntryError

    assert CropSpec(64, 0.35, "gray", 48).key != CropSpec(64, 0.35, "gray").key
    table = {"name": "fer", "task": "expression", "backend": "tflite", "file": "x.tflite", "input_size": 64,
             "labels": ["happy", "sad"], "crop_detail": 48}
    assert ModelEntry.from_table(table, "test").crop == CropSpec(64, 0.2, "rgb", 48)
    with pytest.raises(ModelEntryError, match="crop_detail"):
        ModelEntry.from_table(table | {"crop_detail": 0}, "test")
