"""`DetectorActor`: detection and landmarks for a batch of frames. Separate return values: the face
counts (all the scheduler waits for), and each frame's faces, which go to the stream's tracker
without passing through the scheduler. No chips: the recognition actors cut their own from the
frame, for the faces the tracker's budget picks."""
from __future__ import annotations

import numpy as np
import ray

from core.messages import FrameRef
from models.analyzer import FaceDetectionStage
from models.detector import DetectorConfig
from models.registry import DEFAULT_MODELS, ModelRegistry


@ray.remote(num_cpus=0.5)
class DetectorActor:
    def __init__(self, models: dict[str, str] | None = None, config: DetectorConfig = DetectorConfig(),
                 threads: int = 1, models_file: str | None = None, device: str = "cpu"):
        import cv2

        cv2.setNumThreads(threads)
        registry = ModelRegistry()
        if models_file:
            registry.add_file(models_file)
        names = DEFAULT_MODELS | (models or {})
        self.stage = FaceDetectionStage(registry, (), names["detection"], names["landmarks"], config, threads, device)
        # builds the session before the first frame (a 640x480 frame is the common case)
        self.stage.find([np.zeros((480, 640, 3), np.uint8)])

    def devices(self) -> dict[str, str]:
        return self.stage.devices()

    def where(self) -> tuple[str, int]:
        """(node id, process id): where Ray placed this actor."""
        import os

        return ray.get_runtime_context().get_node_id(), os.getpid()

    def detect(self, frames: list[FrameRef]) -> tuple:
        """Frames in one network call. Called with `num_returns=1 + len(frames)`: the face counts,
        then each frame's FaceBoxes."""
        found = self.stage.find(ray.get([frame.ref for frame in frames]))
        for faces in found:
            n = len(faces)
            if faces.boxes.shape != (n, 4) or faces.landmarks.shape != (n, 5, 2):
                raise ValueError(f"detector answered boxes {faces.boxes.shape}, landmarks {faces.landmarks.shape} "
                                 f"for {n} faces")
        return (tuple(len(faces) for faces in found), *found)
