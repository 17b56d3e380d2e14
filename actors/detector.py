"""`DetectorActor`: detection, landmarks and every model's aligned chips for a batch of frames.
Separate return values: the face counts (all the scheduler waits for), and each frame's faces and
chips, which go from the object store to the stream's tracker without passing through the
scheduler (the tracker puts the chips again and owns them for the recognition jobs)."""
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
        specs = [registry.get(names[t]).crop for t in ("age", "gender", "expression", "identity")]
        self.stage = FaceDetectionStage(registry, specs, names["detection"], names["landmarks"], config, threads,
                                        device)
        # builds the session before the first frame (a 640x480 frame is the common case)
        self.stage(np.zeros((480, 640, 3), np.uint8))

    def devices(self) -> dict[str, str]:
        return self.stage.devices()

    def where(self) -> tuple[str, int]:
        """(node id, process id): where Ray placed this actor."""
        import os

        return ray.get_runtime_context().get_node_id(), os.getpid()

    def detect(self, frames: list[FrameRef]) -> tuple:
        """Frames in one network call. Called with `num_returns=1 + 2 * len(frames)`: the face
        counts, then each frame's FaceBoxes, then each frame's FaceCrops."""
        found = self.stage.batch(ray.get([frame.ref for frame in frames]))
        for faces, crops in found:
            n = len(faces)
            if faces.boxes.shape != (n, 4) or faces.landmarks.shape != (n, 5, 2) or len(crops) not in (0, n):
                raise ValueError(f"detector answered boxes {faces.boxes.shape}, landmarks {faces.landmarks.shape} "
                                 f"for {n} faces")
        return (tuple(len(faces) for faces, _ in found), *(f for f, _ in found), *(c for _, c in found))
