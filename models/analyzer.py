"""`FaceAnalyzer`: detect -> landmarks -> one alignment -> every recogniser, batched, on one image.
It is the batch mode's engine, the sequential baseline, and the code the pipeline's actors split."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.messages import AgeEstimates, ClassScores, Embeddings, FaceBoxes, FaceCrops
from models.align import cut_crops
from models.detector import DetectorConfig
from models.registry import DEFAULT_MODELS, ModelRegistry

RECOGNITION_TASKS = ("age", "gender", "expression", "identity")


@dataclass(frozen=True, slots=True)
class FaceResults:
    """Everything known about the faces of one image, index i = face i."""

    faces: FaceBoxes
    age: AgeEstimates | None = None
    gender: ClassScores | None = None
    expression: ClassScores | None = None
    identity: Embeddings | None = None
    attributes: dict[str, ClassScores] = field(default_factory=dict)


class FaceDetectionStage:
    """Detection + dlib landmarks + the chips every configured recogniser needs."""

    def __init__(self, registry: ModelRegistry, crop_specs, detector: str = DEFAULT_MODELS["detection"],
                 landmarks: str = DEFAULT_MODELS["landmarks"], config: DetectorConfig = DetectorConfig(),
                 threads: int = 1, device: str = "cpu"):
        # dlib's landmarks have no GPU build: only the detector follows `device`
        self.detector = registry.load(detector, threads, device=device, config=config)
        self.refiner = registry.load(landmarks, threads)
        self.names = (detector, landmarks)
        self.crop_specs = list(crop_specs)

    def devices(self) -> dict[str, str]:
        """Where each model of the stage really runs, by model name."""
        return {self.names[0]: self.detector.net.device, self.names[1]: self.refiner.device}

    def __call__(self, image: np.ndarray) -> tuple[FaceBoxes, FaceCrops]:
        return self.batch([image])[0]

    def batch(self, images: list[np.ndarray]) -> list[tuple[FaceBoxes, FaceCrops]]:
        """Detection of every image in one network call; landmarks and chips per image."""
        out = []
        for image, found in zip(images, self.detector.detect_batch(images)):
            aligned = FaceBoxes(found.boxes, found.scores, self.refiner.refine(image, found.boxes))
            out.append((aligned, cut_crops(image, aligned.landmarks, self.crop_specs)))
        return out


class FaceAnalyzer:
    def __init__(self, registry: ModelRegistry | None = None, tasks=RECOGNITION_TASKS,
                 models: dict[str, str] | None = None, attributes: tuple[str, ...] = (),
                 config: DetectorConfig = DetectorConfig(), threads: int = 1):
        self.registry = registry or ModelRegistry()
        names = DEFAULT_MODELS | (models or {})
        self.recognisers = {task: self.registry.load(names[task], threads) for task in tasks}
        self.attributes = {name: self.registry.load(name, threads) for name in attributes}
        specs = [r.crop for r in (*self.recognisers.values(), *self.attributes.values())]
        self.stage = FaceDetectionStage(self.registry, specs, names["detection"], names["landmarks"], config, threads)

    def analyze(self, image: np.ndarray) -> FaceResults:
        faces, crops = self.stage(image)
        results = {task: r(crops.chips[r.crop.key]) for task, r in self.recognisers.items()}
        attributes = {name: r(crops.chips[r.crop.key]) for name, r in self.attributes.items()}
        return FaceResults(faces, attributes=attributes, **results)
