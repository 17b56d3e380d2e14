"""Identity in the live pipeline: gallery names on tracks, one alarm per watched appearance,
unknown faces enrolled once (issue 6's live criteria), and look-alikes drawn beside tracks (issue 16) on
crossing_faces.mp4."""
from collections import Counter

import pytest

from core.config import PipelineConfig
from core.events import read_events
from core.trackscore import score_tracks
from tests.conftest import GALLERY, VIDEO

pytestmark = pytest.mark.ray


def build_gallery(analyzer, directory) -> None:
    """The bundled people with their thumbnails, obama on the watchlist."""
    from core.gallery import GalleryIndex
    from models.enrolment import enrol, gallery_config, person_images

    def fail(error):
        raise error

    index = GalleryIndex(gallery_config(analyzer))
    enrol(index, analyzer, person_images(GALLERY), fail)
    index.set_watch("obama", True)
    index.save(directory)


def run_pipeline(directory, out, enrol_unknown: bool):
    from actors.pipeline import Pipeline

    config = PipelineConfig(sources=(str(VIDEO / "crossing_faces.mp4"),), gallery=str(directory),
                            enrol_unknown=enrol_unknown)
    pipeline = Pipeline(config, out)
    pipeline.start()
    return pipeline.run(), list(read_events(out / "events.msgpack"))


@pytest.fixture(scope="module")
def gallery_run(local_ray, analyzer, tmp_path_factory):
    directory = tmp_path_factory.mktemp("gallery")
    build_gallery(analyzer, directory)
    result, events = run_pipeline(directory, tmp_path_factory.mktemp("run"), enrol_unknown=True)
    return result, events, directory


@pytest.fixture(scope="module")
def lookalike_run(local_ray, analyzer, tmp_path_factory):
    """What `make demo` shows: the bundled gallery, nobody enrolled from the stream."""
    directory = tmp_path_factory.mktemp("gallery")
    build_gallery(analyzer, directory)
    out = tmp_path_factory.mktemp("run")
    result, events = run_pipeline(directory, out, enrol_unknown=False)
    return result, events, directory


def test_gallery_people_carry_their_names(gallery_run):
    result, events, _ = gallery_run
    known = {p.name for p in GALLERY.iterdir() if p.is_dir()}
    score = score_tracks(events, VIDEO / "crossing_faces.gt.txt", VIDEO / "crossing_faces.truth.json",
                         known_names=known)
    named = {t.name: t.fused_identity for t in score.tracks}
    assert {k: v for k, v in named.items() if k in known} == {k: k for k in named if k in known}
    assert score.idf1 >= 0.9 and score.id_switches <= 3
    assert all(t.gender_ok for t in score.tracks)


def test_unknown_face_enrolled_once(gallery_run):
    _, events, directory = gallery_run
    enrols = [e for e in events if e["type"] == "enrol"]
    assert [e["name"] for e in enrols] == ["unknown-1"]
    from core.gallery import GalleryIndex

    assert "unknown-1" in GalleryIndex.load(directory).names()


def test_watchlisted_person_raises_one_alarm(gallery_run):
    _, events, _ = gallery_run
    alarms = [e for e in events if e["type"] == "alarm"]
    assert [a["name"] for a in alarms] == ["obama"]


def confirmed_faces(events):
    for event in events:
        if event["type"] == "frame":
            for face in event["faces"]:
                if face["track_id"] != -1:
                    yield event["seq"], face


def test_each_track_keeps_one_lookalike(lookalike_run):
    """The face shown beside a track does not flicker: one look-alike for >= 90 % of its frames."""
    _, events, _ = lookalike_run
    shown: dict[int, list] = {}
    for _, face in confirmed_faces(events):
        shown.setdefault(face["track_id"], []).append(face["lookalike"] and face["lookalike"]["name"])
    assert len(shown) >= 5
    for track_id, names in shown.items():
        top, count = Counter(names).most_common(1)[0]
        assert top is not None and count >= 0.9 * len(names), (track_id, Counter(names))


def test_the_stranger_is_only_a_lookalike_and_named_people_are_named(lookalike_run):
    _, events, _ = lookalike_run
    known = {p.name for p in GALLERY.iterdir() if p.is_dir()}
    score = score_tracks(events, VIDEO / "crossing_faces.gt.txt", VIDEO / "crossing_faces.truth.json",
                         known_names=known)
    [stranger] = [t for t in score.tracks if t.name == "unknown_a"]
    faces = [face for _, face in confirmed_faces(events) if face["track_id"] == stranger.main]
    assert faces and all(face["identity"] is None for face in faces)
    assert sum(face["lookalike"] is not None for face in faces) >= 0.9 * len(faces)
    assert all(face["lookalike"]["distance"] > 0.55 for face in faces if face["lookalike"])
    named = {t.name: t.fused_identity for t in score.tracks if t.name in known}
    assert named == {name: name for name in named} and len(named) == 5
    ends = [e for e in events if e["type"] == "track_end" and e["track_id"] == stranger.main]
    assert ends[0]["identity"] is None and ends[0]["lookalike"]["name"] in known


def test_the_drawn_thumbnail_is_the_stored_one(lookalike_run):
    """Pixel check: where a track's look-alike is shown, the annotated video holds that person's
    stored thumbnail (up to the video codec's loss), closer than any other stored face."""
    import cv2
    import numpy as np

    from core.draw import thumbnail_origin
    from core.gallery import THUMBNAIL_SIZE as SIDE
    from core.gallery import GalleryIndex

    result, events, directory = lookalike_run
    stored = GalleryIndex.load(directory).export()
    thumbs = [(name, t.astype(np.int16)) for name, t in zip(stored.names, stored.thumbnails)]
    frames = {e["seq"]: e["faces"] for e in events if e["type"] == "frame"}
    video = cv2.VideoCapture(next(iter(result.videos.values())))
    checked = close = 0
    for seq in range(max(frames) + 1):
        ok, frame = video.read()
        assert ok
        image = frame[:, :, ::-1].astype(np.int16)
        boxes = [tuple(int(round(v)) for v in face["box"]) for face in frames.get(seq, ())]
        for face, box in zip(frames.get(seq, ()), boxes):
            # Left of the box, where it goes whenever there is room, its place does not depend on
            # the labels' width (2 px spare: event boxes are rounded to 0.1 px); the watchlist
            # banner covers the top rows for a few seconds.
            if face["track_id"] == -1 or not face["lookalike"] or box[0] < SIDE + 6 or box[1] < 40:
                continue
            x, y = thumbnail_origin(box, SIDE, image.shape[:2])
            # faces drawn near it (boxes, their labels, their thumbnails) may cover it: not checked
            if any(other != box and other[0] - SIDE - 8 < x + SIDE and x < other[2] + 200
                   and other[1] - 30 < y + SIDE and y < other[3] + 80 for other in boxes):
                continue
            # the event's box is rounded: the drawn one may lie a pixel off
            diff, name = min((float(np.abs(image[y + dy:y + dy + SIDE, x + dx:x + dx + SIDE] - t).mean()), name)
                             for name, t in thumbs for dx in (-1, 0, 1) for dy in (-1, 0, 1))
            checked += 1
            # measured (2026-11-27): the shown face's own thumbnail 4-6 grey levels off on
            # average after the codec, every other stored face 40 or more
            close += name == face["lookalike"]["name"] and diff < 16
    assert checked >= 50 and close >= 0.97 * checked, (close, checked)
