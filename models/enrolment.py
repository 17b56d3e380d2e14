"""From photos to gallery entries: the steps the gallery command, batch mode and the pipeline's
enrolment share, so that a face is embedded and enrolled the same way everywhere.

An enrolment photo may show bystanders; the person it is filed under is taken to be the largest
face, the one the photographer framed."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from core.gallery import GalleryConfig, GalleryIndex
from core.media import DEFAULT_MAX_PIXELS, MediaError, iter_image_files, load_image
from models.analyzer import FaceAnalyzer
from models.recognisers import FaceEmbedder


class EnrolmentError(Exception):
    """An image or folder that gives nothing to enrol, with the reason in one line."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        super().__init__(os.fspath(path), reason)
        self.path = os.fspath(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True, slots=True)
class PersonImage:
    name: str
    path: str


@dataclass(frozen=True, slots=True)
class FaceEmbedding:
    source: str
    box: np.ndarray  # (4,) float32 x1, y1, x2, y2 in pixels
    vector: np.ndarray  # (D,) float32, L2-normalised


@dataclass(frozen=True, slots=True)
class Enrolled:
    embeddings: int
    people: int
    skipped: int


def identity_model(analyzer: FaceAnalyzer) -> FaceEmbedder:
    try:
        return analyzer.recognisers["identity"]
    except KeyError:
        raise ValueError("the analyzer has no identity model (add 'identity' to its tasks)") from None


def gallery_config(analyzer: FaceAnalyzer, **fields) -> GalleryConfig:
    """A GalleryConfig on the analyzer's identity model's distance scale, so the gallery's
    distances and threshold read like the model's published ones."""
    return GalleryConfig(distance_scale=identity_model(analyzer).entry.distance_scale, **fields)


def largest_face(boxes: np.ndarray) -> int:
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return int(np.argmax(areas))


def embed_largest_face(
    analyzer: FaceAnalyzer, path: str, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> FaceEmbedding:
    """The identity embedding of the largest face in the image at `path`; EnrolmentError when
    the file cannot be read or shows no face."""
    # Checked first: a missing identity model is the caller's mistake, not this image's.
    identity_model(analyzer)
    try:
        image = load_image(path, max_pixels)
    except MediaError as error:
        raise EnrolmentError(path, error.reason) from None
    results = analyzer.analyze(image)
    if len(results.faces.boxes) == 0:
        raise EnrolmentError(path, "no face found")
    i = largest_face(results.faces.boxes)
    return FaceEmbedding(os.path.abspath(path), results.faces.boxes[i], results.identity.vectors[i])


def person_images(folder: str | os.PathLike[str]) -> list[PersonImage]:
    """Every image under each sub-folder of `folder`, filed under the sub-folder's name (images
    in nested folders count for the person whose folder holds them)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise EnrolmentError(folder, "not a folder")
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    images = [
        PersonImage(name, path)
        for name in names
        for path, _ in iter_image_files([os.path.join(folder, name)])
    ]
    if not images:
        raise EnrolmentError(folder, "no images in sub-folders (expected one sub-folder per person)")
    return images


def enrol(
    gallery: GalleryIndex,
    analyzer: FaceAnalyzer,
    images: Iterable[PersonImage],
    on_skip: Callable[[EnrolmentError], None],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Enrolled:
    """Embed each image's largest face and add them all to the gallery in one call; an image
    that gives no face goes to `on_skip` and the rest go on. Nothing is saved here."""
    names: list[str] = []
    found: list[FaceEmbedding] = []
    skipped = 0
    for image in images:
        try:
            found.append(embed_largest_face(analyzer, image.path, max_pixels))
        except EnrolmentError as error:
            skipped += 1
            on_skip(error)
            continue
        names.append(image.name)
    if found:
        vectors = np.stack([f.vector for f in found])
        gallery.add_many(names, vectors, [f.source for f in found])
    return Enrolled(len(found), len(set(names)), skipped)
