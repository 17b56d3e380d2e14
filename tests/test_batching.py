"""Batches across frames: one detector call for several frames gives each frame's own faces."""
import numpy as np

import cv2

from tests.conftest import VIDEO, iou


def video_frames(seqs: tuple[int, ...]) -> list[np.ndarray]:
    video, frames = cv2.VideoCapture(str(VIDEO / "crossing_faces.mp4")), []
    for seq in range(max(seqs) + 1):
        ok, image = video.read()
        assert ok
        if seq in seqs:
            frames.append(image[:, :, ::-1].copy())
    return frames


def test_a_batch_of_frames_finds_what_each_frame_alone_finds(registry):
    from models.analyzer import FaceDetectionStage

    stage = FaceDetectionStage(registry, [registry.get("cydral-age-v1").crop])
    frames = video_frames((80, 120, 160))  # 2, 3 and 3 faces
    together = stage.batch(frames)
    for frame, (faces, crops) in zip(frames, together):
        alone, alone_crops = stage(frame)
        assert len(faces) == len(alone) > 0
        assert all(iou(a, b) > 0.99 for a, b in zip(faces.boxes, alone.boxes))
        np.testing.assert_allclose(faces.landmarks, alone.landmarks, atol=0.05)
        assert len(crops) == len(alone_crops)
