"""`FaceAnalyzer`: detect -> landmarks -> one alignment -> every recogniser, batched, on one image.
It is the batch mode's engine, the sequential baseline, and the code the pipeline's actors split."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from core.media import VideoFrames
from core.messages import AgeEstimates, ClassScores, Embeddings, FaceBoxes, FaceCrops
from models.align import PLAIN, View, cut_crops
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


@dataclass(frozen=True, slots=True)
class SeriesSpread:
    """How one face's attributes move across versions of one picture (e.g. its resolutions):
    values per version, in the order given. Versions where the face is smaller than `min_side`
    pixels (square root of its box area) are listed but left out of the spreads, as track fusion
    leaves such estimates out."""

    name: str
    versions: tuple[str, ...]
    sides: tuple[float, ...]
    ages: tuple[float, ...]
    gender_probs: tuple[tuple[float, ...], ...]
    expressions: tuple[str, ...]
    min_side: float = 0.0

    @property
    def used(self) -> tuple[int, ...]:
        return tuple(i for i, side in enumerate(self.sides) if side >= self.min_side)

    @property
    def age_spread(self) -> float | None:
        ages = [self.ages[i] for i in self.used]
        return max(ages) - min(ages) if ages else None

    @property
    def gender_spread(self) -> float | None:
        if not self.used:
            return None
        probs = np.array([self.gender_probs[i] for i in self.used])
        return float((probs.max(0) - probs.min(0)).max())

    @property
    def same_expression(self) -> bool | None:
        return len({self.expressions[i] for i in self.used}) == 1 if self.used else None


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

    def find(self, images: list[np.ndarray]) -> list[FaceBoxes]:
        """Detection of every image in one network call, with the landmarks chips are cut at."""
        return [FaceBoxes(found.boxes, found.scores, self.refiner.refine(image, found.boxes))
                for image, found in zip(images, self.detector.detect_batch(images))]

    def batch(self, images: list[np.ndarray]) -> list[tuple[FaceBoxes, FaceCrops]]:
        """`find`, and every configured recogniser's chips per image."""
        return [(faces, cut_crops(image, faces.landmarks, self.crop_specs))
                for image, faces in zip(images, self.find(images))]


class FaceAnalyzer:
    """`views`: the test-time views every estimate but identity averages over (models/align.py
    TTA_VIEWS); identity takes the plain crop, which the gallery's embeddings were made from."""

    def __init__(self, registry: ModelRegistry | None = None, tasks=RECOGNITION_TASKS,
                 models: dict[str, str] | None = None, attributes: tuple[str, ...] = (),
                 config: DetectorConfig = DetectorConfig(), threads: int = 1,
                 views: tuple[View, ...] = (PLAIN,)):
        self.views = views
        self.registry = registry or ModelRegistry()
        names = DEFAULT_MODELS | (models or {})
        self.recognisers = {task: self.registry.load(names[task], threads) for task in tasks}
        self.attributes = {name: self.registry.load(name, threads) for name in attributes}
        specs = [r.crop for r in (*self.recognisers.values(), *self.attributes.values())]
        self.stage = FaceDetectionStage(self.registry, specs, names["detection"], names["landmarks"], config, threads)

    def series_spread(self, name: str, versions: dict[str, np.ndarray], min_side: float = 0.0) -> SeriesSpread | None:
        """The largest face's attributes in each version of one picture; None where a version
        shows no face (then there is nothing to compare)."""
        sides, ages, genders, expressions = [], [], [], []
        for image in versions.values():
            r = self.analyze(image)
            if not len(r.faces):
                return None
            areas = np.prod(r.faces.boxes[:, 2:] - r.faces.boxes[:, :2], axis=1)
            i = int(np.argmax(areas))
            sides.append(float(np.sqrt(areas[i])))
            ages.append(float(r.age.ages[i]))
            genders.append(tuple(float(p) for p in r.gender.probs[i]))
            expressions.append(r.expression.best(i)[0])
        return SeriesSpread(name, tuple(versions), tuple(sides), tuple(ages), tuple(genders), tuple(expressions),
                            min_side)

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
        viewed = [r for task, r in self.recognisers.items() if task != "identity"] + list(self.attributes.values())
        extra = [cut_crops(image, faces.landmarks, [r.crop for r in viewed], view)
                 for view in self.views if view != PLAIN]

        def run(r):
            if r not in viewed or not extra:
                return r(crops.chips[r.crop.key])
            key = r.crop.key
            return r(np.concatenate([crops.chips[key], *(c.chips[key] for c in extra)]), views=1 + len(extra))

        results = {task: run(r) for task, r in self.recognisers.items()}
        attributes = {name: run(r) for name, r in self.attributes.items()}
        return FaceResults(faces, attributes=attributes, **results)
