import math

import numpy as np

from models.align import DLIB_5PT_TEMPLATE, align_face, chip_transform, similarity_transform, unit_transform


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
