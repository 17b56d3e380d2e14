"""Carried frames follow the faces by the image's motion (`FaceFlow`, `StreamTracker` with
`MotionConfig.flow`): a real face pasted over a textured, still background, moving in ways a
constant-velocity guess gets wrong."""
import cv2
import numpy as np
import pytest

from conftest import PHOTOS
from core.geometry import iou
from core.media import load_image
from core.messages import FaceBoxes
from core.motion import FaceFlow, MotionConfig
from core.stream import StreamTracker

FACE_W, FACE_H = 60, 76


@pytest.fixture(scope="module")
def face():
    # obama in two_people.jpg, box [230, 24, 390, 231] (tests/media/README.md)
    return cv2.resize(load_image(PHOTOS / "two_people.jpg")[24:231, 230:390], (FACE_W, FACE_H))


@pytest.fixture(scope="module")
def background():
    noise = np.random.default_rng(7).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 3)


def scene(background, face, x: float, y: float = 80.0) -> tuple[np.ndarray, np.ndarray]:
    """The face at (x, y) (its top left, whole pixels), and its box."""
    image = background.copy()
    x, y = int(round(x)), int(round(y))
    image[y:y + FACE_H, x:x + FACE_W] = face
    return image, np.array([x, y, x + FACE_W, y + FACE_H], np.float32)


def test_a_face_is_followed_to_where_it_moved(background, face):
    before, box = scene(background, face, 100)
    after, truth = scene(background, face, 109, 84)
    moved = FaceFlow().move(before, after, box[None])
    assert moved.followed.tolist() == [True]
    assert np.abs(moved.boxes[0] - truth).max() <= 1.0


def test_a_box_moved_onto_something_else_keeps_the_guess(background, face):
    """A face dragged along by one passing in front: where the guess shows the face as last
    detected better than the flow's box does, the guess stands."""
    flow = FaceFlow()
    before, box = scene(background, face, 100)
    after, truth = scene(background, face, 112)
    guess = box + 40  # somewhere else: it shows background
    followed = flow.move(before, after, box[None], guess[None], [flow.look(before, box)])
    assert followed.followed.tolist() == [True]
    looks_like_guess = flow.look(after, guess)
    kept = flow.move(before, after, box[None], guess[None], [looks_like_guess])
    assert kept.followed.tolist() == [False]
    assert np.allclose(kept.boxes[0], guess)


def test_flat_patch_is_not_followed():
    grey = np.full((120, 160, 3), 128, np.uint8)
    moved = FaceFlow().move(grey, grey, np.array([[40, 30, 90, 90]], np.float32))
    assert moved.followed.tolist() == [False]


def carried_ious(background, face, flow: bool) -> list[float]:
    """A face detected on four frames moving right 8 px a frame, that then stops: the carried
    frames' boxes against where it is."""
    tracker = StreamTracker("s", np.arange(101), ("female", "male"), ("neutral",), tasks=(),
                            motion=MotionConfig(flow=flow))
    positions = [100, 108, 116, 124, 124, 124, 124, 124]
    ious = []
    for seq, x in enumerate(positions):
        image, box = scene(background, face, x)
        detected = seq < 4
        faces = FaceBoxes(box[None], np.array([0.9], np.float32), np.zeros((1, 5, 2), np.float32)) if detected else None
        for work in tracker.add(seq, seq / 25, faces, carried=not detected, image=image):
            if work.carried:
                assert len(work.faces.boxes) == 1
                ious.append(iou(work.faces.boxes[:1], box[None]))
    return ious


def test_carried_frames_stay_on_a_face_that_stops(background, face):
    followed = carried_ious(background, face, flow=True)
    guessed = carried_ious(background, face, flow=False)
    assert len(followed) == 4
    # the constant-velocity guess runs on past the face; the flow stays on it
    assert min(followed) >= 0.85
    assert guessed[-1] < 0.5
