"""`DetectorActor`: detection, landmarks and every model's aligned chips for one frame. Three
return values: the face count (all the scheduler waits for), the faces (fetched by the stream's
tracker) and the chips, which stay in the object store, owned by the caller (they outlive this
actor if it dies) and fetched only by the recognition actor that needs them."""
from __future__ import annotations

import numpy as np
import ray

from core.messages import FaceBoxes, FaceCrops, FrameRef
from models.analyzer import FaceDetectionStage
from models.detector import DetectorConfig
from models.registry import DEFAULT_MODELS, ModelRegistry


@ray.remote(num_cpus=0.5)
class DetectorActor:
    def __init__(self, models: dict[str, str] | None = None, config: DetectorConfig = DetectorConfig(),
                 threads: int = 1, models_file: str | None = None):
        import cv2

        cv2.setNumThreads(threads)
        registry = ModelRegistry()
        if models_file:
            registry.add_file(models_file)
        names = DEFAULT_MODELS | (models or {})
        specs = [registry.get(names[t]).crop for t in ("age", "gender", "expression", "identity")]
        self.stage = FaceDetectionStage(registry, specs, names["detection"], names["landmarks"], config, threads)
        # builds the session before the first frame (a 640x480 frame is the common case)
        self.stage(np.zeros((480, 640, 3), np.uint8))

    def where(self) -> tuple[str, int]:
        """(node id, process id): where Ray placed this actor."""
        import os

        return ray.get_runtime_context().get_node_id(), os.getpid()

    @ray.method(num_returns=3)
    def detect(self, frame: FrameRef) -> tuple[int, FaceBoxes, FaceCrops]:
        faces, crops = self.stage(ray.get(frame.ref))
        n = len(faces)
        if faces.boxes.shape != (n, 4) or faces.landmarks.shape != (n, 5, 2) or len(crops) not in (0, n):
            raise ValueError(f"detector answered boxes {faces.boxes.shape}, landmarks {faces.landmarks.shape} "
                             f"for {n} faces")
        return n, faces, crops
