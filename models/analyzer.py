"""`FaceAnalyzer`: detect -> landmarks -> one alignment -> every recogniser, batched, on one image.
It is the batch mode's engine, the sequential baseline, and the code the pipeline's actors split."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from core.media import VideoFrames
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
                 threads: int = 1):
        self.detector = registry.load(detector, threads, config=config)
        self.refiner = registry.load(landmarks, threads)
        self.crop_specs = list(crop_specs)

    def __call__(self, image: np.ndarray) -> tuple[FaceBoxes, FaceCrops]:
        found = self.detector.detect(image)
        aligned = FaceBoxes(found.boxes, found.scores, self.refiner.refine(image, found.boxes))
        return aligned, cut_crops(image, aligned.landmarks, self.crop_specs)


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

    def video_detections(self, path) -> Iterator[tuple[float, np.ndarray, np.ndarray, list[np.ndarray] | None]]:
        """Every frame of a video as (seconds, boxes, scores, identity embeddings or None): what
        `core.trackscore.tracked_events` tracks offline."""
        with VideoFrames(path) as frames:
            for _, t, image in frames:
                results = self.analyze(image)
                vectors = None if results.identity is None else list(results.identity.vectors)
                yield t, results.faces.boxes, results.faces.scores, vectors

    def analyze(self, image: np.ndarray) -> FaceResults:
        faces, crops = self.stage(image)
        results = {task: r(crops.chips[r.crop.key]) for task, r in self.recognisers.items()}
        attributes = {name: r(crops.chips[r.crop.key]) for name, r in self.attributes.items()}
        return FaceResults(faces, attributes=attributes, **results)
