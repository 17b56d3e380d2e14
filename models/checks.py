"""Files built at set-up are checked by what they compute, not by their bytes: a converter or
quantizer of another version writes other bytes for the same network, and the same bytes would
prove nothing about a converter that changed what the network computes.

Each built entry has a reference in models/reference/<name>.npz, made by `launch/model_files.py
reference` from the entry it is made from (whose bytes are pinned by sha256): inputs cut from the
shared photos, and what the source model computes on them. The built file must compute the same
within the entry's `check_tolerance`:
- recognisers: the largest absolute difference of any output (probability or embedding value);
- detectors: every reference face found again with IoU >= 1 - tolerance, no face found that the
  reference lacks, and the two scores within the tolerance.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.detector import DetectorConfig
from models.entry import ModelEntry

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
REPO = Path(__file__).resolve().parent.parent
# reference faces are those the source finds at least this surely: one near the detector's
# threshold may fall either side of it after any rounding, which says nothing of the conversion
DETECTION_MIN_SCORE = 0.7


@dataclass(frozen=True, slots=True)
class CheckResult:
    model: str
    largest_difference: float
    tolerance: float
    what: str  # what the difference is of, for the message

    @property
    def passed(self) -> bool:
        return self.largest_difference <= self.tolerance

    def describe(self) -> str:
        verdict = "within" if self.passed else "over"
        return (f"model {self.model!r}: largest difference of its {self.what} from the reference outputs: "
                f"{self.largest_difference:.3g}, {verdict} the tolerance {self.tolerance:g}")


def reference_path(entry: ModelEntry) -> Path:
    return REFERENCE_DIR / f"{entry.name}.npz"


def check_built(entry: ModelEntry, path: Path) -> CheckResult:
    """Run the file at `path` as `entry` on the entry's reference inputs and compare."""
    from models.registry import build_model

    with np.load(reference_path(entry), allow_pickle=False) as reference:
        if entry.task == "detection":
            config = DetectorConfig(max_side=int(reference["max_side"]))
            detector = build_model(entry, path, config=config)
            found = [_faces(detector.detect(image), 0.0) for image in _images(reference["images"])]
            difference = _detection_difference(reference["faces"], found)
            return CheckResult(entry.name, difference, entry.check_tolerance,
                               "face boxes (1 - IoU) and scores (1: a face found or lost)")
        model = build_model(entry, path)
        got = model.outputs(reference["chips"])
        difference = float(np.abs(got - reference["outputs"]).max())
        return CheckResult(entry.name, difference, entry.check_tolerance, entry.output)


def make_reference(entry: ModelEntry, registry) -> Path:
    """Write built entry `entry`'s reference from what its source computes (maintainers, after the
    source's file is fetched: `launch/model_files.py reference`)."""
    from models.analyzer import FaceDetectionStage
    from models.derived import pipeline_max_side

    source = registry.get(entry.made_from)
    target = reference_path(entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    images = _images(REFERENCE_PHOTOS)
    if entry.task == "detection":
        max_side = pipeline_max_side()
        detector = registry.load(source.name, config=DetectorConfig(max_side=max_side))
        found = [_faces(detector.detect(image), DETECTION_MIN_SCORE) for image in images]
        rows = np.concatenate([np.column_stack([np.full(len(f), i), f]) for i, f in enumerate(found)])
        np.savez_compressed(target, images=np.array(REFERENCE_PHOTOS), max_side=max_side,
                            faces=rows.astype(np.float32))
        return target
    stage = FaceDetectionStage(registry, [source.crop])
    chips = np.concatenate([crops.chips[source.crop.key] for _, crops in stage.batch(images)])
    chips = chips[np.linspace(0, len(chips) - 1, min(REFERENCE_FACES, len(chips))).round().astype(int)]
    np.savez_compressed(target, chips=chips, outputs=registry.load(source.name).outputs(chips).astype(np.float32))
    return target


# shared photos the references are cut from, relative to the repository: faces large and small,
# one and several to an image, bright and dim
REFERENCE_PHOTOS = ("tests/media/photos/two_people.jpg", "tests/media/photos/obama.jpg",
                    "tests/media/photos/biden.jpg", "tests/media/photos/messi5.jpg",
                    "tests/media/photos/obama_partial_face.jpg")
# chips kept per recogniser reference: enough to span the photos' faces, small enough to ship
REFERENCE_FACES = 6


def _images(names) -> list[np.ndarray]:
    from core.media import load_image

    return [load_image(REPO / str(name)) for name in names]


def _faces(found, min_score: float) -> np.ndarray:
    """(N, 5): box and score of each face scoring at least `min_score`."""
    rows = np.column_stack([found.boxes, found.scores]).astype(np.float32).reshape(-1, 5)
    return rows[rows[:, 4] >= min_score]


def _detection_difference(reference: np.ndarray, found: list[np.ndarray]) -> float:
    """The worst of 1 - IoU and the score difference over the reference faces, each paired with the
    detection that overlaps it most; 1 where a reference face is not found or a detection that
    scores surely (DETECTION_MIN_SCORE) has no reference face."""
    from core.geometry import iou_matrix

    worst = 0.0
    for i, faces in enumerate(found):
        expected = reference[reference[:, 0] == i][:, 1:]
        if not len(expected) or not len(faces):
            if len(expected) or (faces[:, 4] >= DETECTION_MIN_SCORE).any():
                return 1.0
            continue
        iou = iou_matrix(expected[:, :4], faces[:, :4])
        best = iou.argmax(axis=1)
        for row, column in enumerate(best):
            worst = max(worst, 1.0 - float(iou[row, column]),
                        abs(float(expected[row, 4]) - float(faces[column, 4])))
        unmatched = np.setdiff1d(np.arange(len(faces)), best)
        if (faces[unmatched, 4] >= DETECTION_MIN_SCORE).any():
            return 1.0
    return worst
