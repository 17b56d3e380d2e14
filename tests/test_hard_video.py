"""The hard tracking video (tests/hard_video.py): its truth shows what it promises, and the tracker,
fed that truth as a detector would report it, keeps every person's id through it."""
import cv2
import numpy as np
import pytest

from core.trackscore import load_mot_gt, score_tracks, tracked_events
from core.tracking import TrackerConfig
from tests import hard_video

FPS = hard_video.FPS


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return hard_video.make(tmp_path_factory.mktemp("hard"))


def frames_of(gt) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for frame, targets in gt.items():
        for gt_id, _ in targets:
            out.setdefault(gt_id, []).append(frame)
    return out


def longest_gap(frames: list[int]) -> int:
    return max(b - a - 1 for a, b in zip(frames, frames[1:]))


def test_the_video_and_its_truth_show_what_the_script_promises(made):
    video, gt_path, _ = made
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == hard_video.FRAMES
    assert capture.read()[1].shape == (hard_video.HEIGHT, hard_video.WIDTH, 3)
    gt = load_mot_gt(gt_path)
    seen = frames_of(gt)
    assert set(seen) == {1, 2, 3, 4, 5}
    # obama (1) and biden (2): the same size, head-on; obama is hidden behind biden as they pass
    boxes = {frame: dict(targets) for frame, targets in gt.items()}
    assert boxes[1][1][2] - boxes[1][1][0] == boxes[1][2][2] - boxes[1][2][0]
    assert 5 <= longest_gap(seen[1]) <= 20
    # rose_leslie (3) hidden behind kit_harington (4) for 2-3 s; kit grows as he comes nearer
    assert 2 * FPS <= longest_gap(seen[3]) <= 3 * FPS
    kit = [boxes[f][4] for f in seen[4]]
    assert (kit[-1][2] - kit[-1][0]) / (kit[0][2] - kit[0][0]) >= 1.2
    # alex_lacamoire (5) away for more than 5 s, back larger
    assert 5 * FPS <= longest_gap(seen[5]) <= 10 * FPS
    first, last = boxes[seen[5][0]][5], boxes[seen[5][-1]][5]
    assert (last[2] - last[0]) / (first[2] - first[0]) >= 1.3


@pytest.fixture(scope="module")
def faces_of_people(registry):
    """Each person's real identity embedding, from the photo the video cuts them from."""
    from core.media import load_image
    from models.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer(registry, tasks=("identity",))
    out = {}
    for p in hard_video.PEOPLE:
        results = analyzer.analyze(load_image(hard_video.MEDIA / p.photo))
        largest = int(np.argmax(np.prod(results.faces.boxes[:, 2:] - results.faces.boxes[:, :2], axis=1)))
        out[p.gt_id] = results.identity.vectors[largest].astype(np.float64)
    return out


def detections_from_truth(gt_path, embeddings, seed=0):
    """The truth as a detector reports it: jittered boxes, 5% of faces missed, each face with its
    person's embedding moved by frame noise (about 0.2 on dlib's scale), or none at all."""
    rng = np.random.default_rng(seed)
    gt = load_mot_gt(gt_path)
    for frame in range(1, hard_video.FRAMES + 1):
        kept = [(gt_id, np.array(b)) for gt_id, b in gt.get(frame, []) if rng.random() >= 0.05]
        boxes = np.array([b + rng.normal(0.0, 1.5, 4) for _, b in kept]).reshape(-1, 4)
        looks = None
        if embeddings is not None:
            looks = [embeddings[gt_id] + rng.normal(0.0, 0.012, 128) for gt_id, _ in kept]
        yield (frame - 1) / FPS, boxes, rng.uniform(0.6, 1.0, len(kept)), looks


def test_with_appearance_every_person_keeps_one_id_through_the_hard_video(made, faces_of_people):
    _, gt_path, truth = made
    events = tracked_events("hard", detections_from_truth(gt_path, faces_of_people), TrackerConfig())
    score = score_tracks(events, gt_path, truth)
    assert score.id_switches == 0 and score.idf1 >= 0.95, score
    assert all(len(t.predicted) == 1 for t in score.tracks), [t.predicted for t in score.tracks]

    # without appearance the same tracker gives alex, back after 5 s, a new id
    blind = score_tracks(tracked_events("hard", detections_from_truth(gt_path, None), TrackerConfig()),
                         gt_path, truth)
    assert len({t.gt_id: t for t in blind.tracks}[5].predicted) == 2 and blind.idf1 < score.idf1
