"""From photos to gallery entries: the steps the gallery command, batch mode and the pipeline's
enrolment share, so that a face is embedded and enrolled the same way everywhere.

An enrolment photo may show bystanders; the person it is filed under is taken to be the largest
face, the one the photographer framed. Each embedding is keyed by its image file's sha256, so an
image already in the gallery is not embedded or added again."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.gallery import MANIFEST, GalleryConfig, GalleryIndex, content_key, make_thumbnail
from core.media import DEFAULT_MAX_PIXELS, MediaError, iter_image_files, load_image
from models.analyzer import FaceAnalyzer
from models.recognisers import FaceEmbedder
from models.registry import ModelRegistry

# The bundled gallery the demo names faces from when given none: the test media's people, with
# obama on the watchlist so the sample video shows an alarm.
SAMPLE_PEOPLE = Path(__file__).resolve().parent.parent / "tests" / "media" / "gallery"
SAMPLE_WATCH = ("obama",)


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
    key: str  # sha256 of the image file (core.gallery.content_key)
    thumbnail: np.ndarray  # the identity chip made small (core.gallery.make_thumbnail), RGB


@dataclass(frozen=True, slots=True)
class Enrolled:
    embeddings: int
    people: int
    skipped: int  # images that gave nothing (unreadable, no face)
    already: int  # images whose content the gallery already holds: left as they are


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
    model = identity_model(analyzer)
    try:
        image = load_image(path, max_pixels)
    except MediaError as error:
        raise EnrolmentError(path, error.reason) from None
    faces, crops = analyzer.stage(image)
    if len(faces.boxes) == 0:
        raise EnrolmentError(path, "no face found")
    i = largest_face(faces.boxes)
    chip = crops.chips[model.crop.key][i : i + 1]
    return FaceEmbedding(os.path.abspath(path), faces.boxes[i], model(chip).vectors[0],
                         image_key(path), make_thumbnail(chip[0]))


def image_key(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as f:
        return content_key(f.read())


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
    that gives no face goes to `on_skip` and the rest go on; an image whose content the gallery
    (or an earlier image of this call) already holds is counted as `already`, under whichever
    name it was filed. Nothing is saved here."""
    names: list[str] = []
    found: list[FaceEmbedding] = []
    keys: set[str] = set()
    skipped = already = 0
    for image in images:
        try:
            # Known content is recognised before the costly embedding; a file that cannot be read
            # gets its reason from the image loader below.
            if _known(image.path, keys, gallery):
                already += 1
                continue
            face = embed_largest_face(analyzer, image.path, max_pixels)
        except EnrolmentError as error:
            skipped += 1
            on_skip(error)
            continue
        keys.add(face.key)
        found.append(face)
        names.append(image.name)
    if found:
        gallery.add_many(names, np.stack([f.vector for f in found]), [f.source for f in found],
                         keys=[f.key for f in found], thumbnails=[f.thumbnail for f in found])
    return Enrolled(len(found), len(set(names)), skipped, already)


def _known(path: str, keys: set[str], gallery: GalleryIndex) -> bool:
    try:
        key = image_key(path)
    except OSError:
        return False
    return key in keys or gallery.holder(key) is not None


def sample_gallery(directory: Path, threads: int = 1) -> bool:
    """Build the bundled gallery in `directory` unless one is there; True when it was built."""
    if (directory / MANIFEST).exists():
        return False
    analyzer = FaceAnalyzer(ModelRegistry(), tasks=("identity",), threads=threads)
    gallery = GalleryIndex(gallery_config(analyzer))

    def bundled_image_failed(error: EnrolmentError) -> None:
        raise error

    enrol(gallery, analyzer, person_images(SAMPLE_PEOPLE), bundled_image_failed)
    for name in SAMPLE_WATCH:
        gallery.set_watch(name, True)
    gallery.save(directory)
    return True
