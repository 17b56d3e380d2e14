"""Per-model cost on real faces, and the sequential baseline's frames per second."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from core.media import VideoFrames
from models.align import cut_crops
from models.analyzer import FaceAnalyzer
from models.detector import FaceDetector
from models.files import model_path
from models.registry import ModelRegistry


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
    costs += variant_costs(analyzer.registry, images, crops)
    costs += identity_costs(analyzer.registry, crops)
    for task, recogniser in analyzer.recognisers.items():
        key = recogniser.crop.key
        recogniser(crops[0].chips[key][:1])  # warm-up (graph tracing, session build)
        batched = sum(_timed(recogniser, c.chips[key]) for c in crops if len(c))
        chips = np.concatenate([c.chips[key] for c in crops])[:40]
        single = sum(_timed(recogniser, chips[i:i + 1]) for i in range(len(chips)))
        costs.append(ModelCost(task, recogniser.entry.name, "face", 1000 * batched / n_faces,
                               1000 * single / len(chips)))
    return costs


# detection and expression models whose cost the table compares side by side, whichever is the default
DETECTION_VARIANTS = ("centerface", "centerface-int8")
EXPRESSION_VARIANTS = ("fer-mini-xception", "fer-mini-xception-tflite")


def centerface_as_shipped(path, threads: int = 1) -> FaceDetector:
    """CenterFace with its weights still listed as graph inputs, as the file ships: what ONNX Runtime
    ran before facelive dropped them (it then folds nothing), for before/after figures and checks."""
    import onnx
    import onnxruntime as ort
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(path))
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    model = update_inputs_outputs_dims(
        model, dims | {"input.1": ["B", 3, "H", "W"]},
        {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"], "540": ["B", 10, "h", "w"]})
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    detector = FaceDetector(path, threads=threads)
    detector.net._session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return detector


def variant_costs(registry: ModelRegistry, images, crops, threads: int = 1) -> list[ModelCost]:
    """Each variant timed on the same frames and faces, interleaved call by call, so a busy machine
    slows them alike and their ratios hold."""
    detectors = {"centerface (as shipped)": centerface_as_shipped(model_path(registry.get("centerface")), threads)}
    detectors |= {n: registry.load(n, threads) for n in DETECTION_VARIANTS if n in registry.entries}
    experts = {n: registry.load(n, threads) for n in EXPRESSION_VARIANTS if n in registry.entries}
    spent = dict.fromkeys([*detectors, *experts], 0.0)
    for image in images[:1]:  # first calls build sessions and trace graphs
        for d in detectors.values():
            d.detect(image)
    for image in images:
        for name, d in detectors.items():
            spent[name] += _timed(d.detect, image)
    key = next(iter(experts.values())).crop.key
    chips = [c.chips[key] for c in crops if len(c)]
    for e in experts.values():
        e(chips[0])
    for batch in chips:
        for name, e in experts.items():
            spent[name] += _timed(e, batch)
    n_faces = sum(len(b) for b in chips)
    return ([ModelCost("detection variant", n, "frame", 1000 * spent[n] / len(images)) for n in detectors]
            + [ModelCost("expression variant", n, "face", 1000 * spent[n] / n_faces) for n in experts])


# identity models compared side by side: dlib itself and its network converted to ONNX
IDENTITY_VARIANTS = ("dlib-resnet-v1", "dlib-resnet-v1-onnx")


def identity_costs(registry: ModelRegistry, crops, faces: int = 32, batch: int = 16,
                   threads: tuple[int, ...] = (1, 2)) -> list[ModelCost]:
    """ms a face of each identity variant at each thread count, in batches of `batch` and one face a
    call, on the same `faces` chips, interleaved call by call so a busy machine slows them alike."""
    models = {(n, t): registry.load(n, t) for n in IDENTITY_VARIANTS if n in registry.entries for t in threads}
    key = next(iter(models.values())).crop.key
    chips = np.concatenate([c.chips[key] for c in crops if len(c)])[:faces]
    for model in models.values():
        model(chips[:1])  # builds the session
    spent = {(variant, size): 0.0 for variant in models for size in (batch, 1)}
    for size in (batch, 1):
        for start in range(0, len(chips), size):
            for variant, model in models.items():
                spent[variant, size] += _timed(model, chips[start:start + size])
    return [ModelCost(f"identity variant, {t} thread{'s' * (t > 1)}, batches of {batch}", name, "face",
                      1000 * spent[(name, t), batch] / len(chips), 1000 * spent[(name, t), 1] / len(chips))
            for name, t in models]


def format_costs(costs: list[ModelCost]) -> str:
    rows = ["| stage | model | ms per | batched (faces of a frame) | one face per call |", "|---|---|---|---|---|"]
    for c in costs:
        single = f"{c.ms_single:.1f}" if c.ms_single is not None else "-"
        rows.append(f"| {c.stage} | {c.model} | {c.unit} | {c.ms:.1f} | {single} |")
    return "\n".join(rows)
