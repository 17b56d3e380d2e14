"""Look-alikes on the real media: the nearest gallery face is given for strangers too, marked as a
look-alike, and never as who they are; gallery people are named. Plus the keeper that serves the
gallery to identity actors: its memory stays flat and an enrolment appends, never rewrites."""
from __future__ import annotations

import os

import numpy as np
import pytest

from actors.gallery import KEPT_CHANGES, GalleryKeeper, replica
from core.gallery import GalleryConfig, GalleryIndex
from models.enrolment import embed_largest_face, enrol, gallery_config, person_images
from tests.conftest import GALLERY, PHOTOS


def fail(error):
    raise error


@pytest.fixture(scope="module")
def gallery(analyzer) -> GalleryIndex:
    index = GalleryIndex(gallery_config(analyzer))
    done = enrol(index, analyzer, person_images(GALLERY), fail)
    assert (done.embeddings, done.people, done.skipped, done.already) == (9, 6, 0, 0)
    return index


def test_the_stranger_gets_a_lookalike_but_no_identity(analyzer, gallery):
    messi = embed_largest_face(analyzer, str(PHOTOS / "messi5.jpg"))
    assert gallery.search(messi.vector[None]) == [None]
    [match] = gallery.closest(messi.vector[None])
    assert match.lookalike and match.distance > gallery.config.threshold and not match.watched
    assert 0.3 < match.similarity < 1 - gallery.config.threshold / gallery.config.distance_scale
    # the thumbnail it carries is the stored one of the row it is nearest to
    row = int(gallery.nearest(messi.vector[None]).rows[0, 0])
    stored = gallery.export().thumbnails[row]
    assert gallery.entry(row).name == match.name and np.array_equal(match.thumbnail, stored)


@pytest.mark.parametrize("photo,person", [("obama.jpg", "obama"), ("obama2.jpg", "obama"), ("obama3.jpg", "obama"),
                                          ("biden.jpg", "biden")])
def test_a_gallery_persons_own_photo_is_named_not_lookalike(analyzer, gallery, photo, person):
    face = embed_largest_face(analyzer, str(PHOTOS / photo))
    [match] = gallery.closest(face.vector[None])
    assert (match.name, match.lookalike) == (person, False)


def test_every_enrolment_image_names_its_person_with_its_own_thumbnail(analyzer, gallery):
    for image in person_images(GALLERY):
        face = embed_largest_face(analyzer, image.path)
        [match] = gallery.closest(face.vector[None])
        assert (match.name, match.lookalike) == (image.name, False) and match.distance < 0.01, image
        assert np.array_equal(match.thumbnail, face.thumbnail)


def test_enrolling_the_same_images_again_changes_nothing(analyzer, gallery, tmp_path):
    copy = replica(_full(gallery), gallery.config)
    again = enrol(copy, analyzer, person_images(GALLERY), fail)
    assert (again.embeddings, again.already) == (0, 9) and len(copy) == 9


def _full(index: GalleryIndex):
    from actors.gallery import GalleryChange

    return GalleryChange(0, index.export(), full=True)


def keeper(directory) -> GalleryKeeper:
    """The keeper's own class, run in this process: its logic needs no Ray."""
    return GalleryKeeper.__ray_actor_class__(str(directory), GalleryConfig(distance_scale=1.4))


def test_keeper_remembers_a_bounded_number_of_changes(gallery, tmp_path):
    gallery.save(tmp_path)
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    keep = keeper(tmp_path)
    rng = np.random.default_rng(0)
    for _ in range(KEPT_CHANGES + 6):
        keep.enrol_unknown(rng.standard_normal((2, 128)).astype(np.float32), "cam#track=1")
    assert keep.version() == KEPT_CHANGES + 6 and len(keep.changes) == KEPT_CHANGES
    # A replica close behind gets the rows it lacks; one far behind, or new, the whole gallery.
    near = keep.since(keep.version() - 3)
    assert [c.version for c in near] == [keep.version() - 2, keep.version() - 1, keep.version()]
    assert not any(c.full for c in near)
    [whole] = keep.since(-1)
    assert whole.full and whole.version == keep.version()
    behind = replica(_full(gallery), gallery.config)
    for change in keep.since(0):
        behind = replica(change, gallery.config, behind)
    assert len(behind) == 9 + 2 * (KEPT_CHANGES + 6)
    assert all(np.array_equal(a, b) for a, b in zip(behind.export().thumbnails[:9], gallery.export().thumbnails))
    # Every enrolment was durable by a journal append: the saved generation was never rewritten,
    # and a fresh load (a restart) holds every unknown, with the thumbnails it had.
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    loaded = GalleryIndex.load(tmp_path)
    assert len(loaded) == len(behind) and loaded.names()[-1] == f"unknown-{KEPT_CHANGES + 6}"
    assert sum(t is not None for t in loaded.export().thumbnails) == 9


def test_the_demos_sample_gallery_is_built_once(tmp_path):
    from models.enrolment import SAMPLE_WATCH, sample_gallery

    directory = tmp_path / "sample"
    assert sample_gallery(directory, threads=2)
    built = GalleryIndex.load(directory)
    assert [(p.name, p.embeddings, p.watch) for p in built.people()] == [
        (name, n, name in SAMPLE_WATCH) for name, n in
        [("alex_lacamoire", 2), ("biden", 1), ("kit_harington", 2), ("lin_manuel_miranda", 1), ("obama", 1),
         ("rose_leslie", 2)]]
    assert all(t is not None for t in built.export().thumbnails)
    files = {p.name: p.read_bytes() for p in directory.iterdir()}
    assert not sample_gallery(directory)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == files
