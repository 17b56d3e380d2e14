"""Per-model cost on real faces, and the sequential baseline's frames per second."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from core.media import VideoFrames
from models.align import cut_crops
from models.analyzer import FaceAnalyzer


@dataclass(frozen=True, slots=True)
class ModelCost:
    stage: str
    model: str
    unit: str  # "frame" or "face"
    ms: float  # per unit, batched as the pipeline batches (all faces of a frame)
    ms_single: float | None = None  # per face when called one face at a time


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def model_costs(video: str, analyzer: FaceAnalyzer, frames: int = 40) -> list[ModelCost]:
    images = []
    with VideoFrames(video, every=max(1, 300 // frames)) as source:
        for _, _, image in source:
            images.append(image)
    stage = analyzer.stage
    stage.detector.detect(images[0])  # first call builds the session
    detect = sum(_timed(stage.detector.detect, im) for im in images)
    found = [stage.detector.detect(im) for im in images]
    n_faces = sum(len(f) for f in found)
    landmarks = [None] * len(images)
    refine = 0.0
    for i, (im, f) in enumerate(zip(images, found)):
        start = time.perf_counter()
        landmarks[i] = stage.refiner.refine(im, f.boxes)
        refine += time.perf_counter() - start
    start = time.perf_counter()
    crops = [cut_crops(im, lm, stage.crop_specs) for im, lm in zip(images, landmarks)]
    align = time.perf_counter() - start
    costs = [
        ModelCost("detection", stage.detector.net.path.name, "frame", 1000 * detect / len(images)),
        ModelCost("landmarks", stage.refiner.path.name, "face", 1000 * refine / n_faces),
        ModelCost("alignment (all chips)", "-", "face", 1000 * align / n_faces),
    ]
    for task, recogniser in analyzer.recognisers.items():
        key = recogniser.crop.key
        recogniser(crops[0].chips[key][:1])  # warm-up (graph tracing, session build)
        batched = sum(_timed(recogniser, c.chips[key]) for c in crops if len(c))
        chips = np.concatenate([c.chips[key] for c in crops])[:40]
        single = sum(_timed(recogniser, chips[i:i + 1]) for i in range(len(chips)))
        costs.append(ModelCost(task, recogniser.entry.name, "face", 1000 * batched / n_faces,
                               1000 * single / len(chips)))
    return costs


def format_costs(costs: list[ModelCost]) -> str:
    rows = ["| stage | model | ms per | batched (faces of a frame) | one face per call |", "|---|---|---|---|---|"]
    for c in costs:
        single = f"{c.ms_single:.1f}" if c.ms_single is not None else "-"
        rows.append(f"| {c.stage} | {c.model} | {c.unit} | {c.ms:.1f} | {single} |")
    return "\n".join(rows)
