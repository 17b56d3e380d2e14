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


def detected_truth(gt_path, seed=0):
    """The truth as a detector reports it: jittered boxes, 5% of faces missed; per frame (t,
    boxes, scores, whose face each box is)."""
    rng = np.random.default_rng(seed)
    gt = load_mot_gt(gt_path)
    for frame in range(1, hard_video.FRAMES + 1):
        kept = [(gt_id, np.array(b)) for gt_id, b in gt.get(frame, []) if rng.random() >= 0.05]
        boxes = np.array([b + rng.normal(0.0, 1.5, 4) for _, b in kept]).reshape(-1, 4)
        yield (frame - 1) / FPS, boxes, rng.uniform(0.6, 1.0, len(kept)), [gt_id for gt_id, _ in kept]


def seen(embedding: np.ndarray, rng) -> np.ndarray:
    """Another frame's embedding of the same face: about 0.2 away on dlib's scale."""
    return embedding + rng.normal(0.0, 0.012, 128)


def detections_from_truth(gt_path, embeddings, seed=0):
    """`detected_truth` with each face's embedding, or none at all."""
    rng = np.random.default_rng(seed + 100)
    for t, boxes, scores, people in detected_truth(gt_path, seed):
        yield t, boxes, scores, None if embeddings is None else [seen(embeddings[p], rng) for p in people]


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


def events_with_identity_late(gt_path, embeddings, lag_frames: int, output_waits: bool) -> list[dict]:
    """The pipeline's timing on the truth, with no Ray: detections carry no embedding; a track's
    identity job answers `lag_frames` later; each frame is put out after its own jobs
    (`output_waits`, lossless) or at once (live, where identity never holds a frame back)."""
    from core.messages import FaceBoxes, Recognised
    from core.stream import StreamTracker

    rng = np.random.default_rng(7)
    tracker = StreamTracker("hard", np.arange(81.0), ("female", "male"), ("neutral",), tasks=("identity",))
    answers: dict[int, list[Recognised]] = {}
    events: list[dict] = []
    seq = -1
    for seq, (t, boxes, scores, people) in enumerate(detected_truth(gt_path)):
        faces = FaceBoxes(boxes.astype(np.float32), scores.astype(np.float32), np.zeros((len(boxes), 5, 2), np.float32))
        [work] = tracker.add(seq, t, faces)
        for job in work.jobs:
            looks = np.stack([seen(embeddings[people[i]], rng) for i in job.indices])
            answers.setdefault(seq + lag_frames, []).append(Recognised("identity", job.track_ids, embeddings=looks))
        if not output_waits:
            events += [*work.events, tracker.output(work).event]
        for result in answers.pop(seq, []):
            tracker.fuse(result, t)
        if output_waits:
            events += [*work.events, tracker.output(work).event]
    return events + tracker.finish(seq / FPS)


def test_a_person_back_keeps_one_id_with_identity_answering_late(made, faces_of_people):
    _, gt_path, truth = made
    # lossless: a frame goes out once its identity job is in
    lossless = score_tracks(events_with_identity_late(gt_path, faces_of_people, 0, output_waits=True), gt_path, truth)
    assert lossless.id_switches == 0 and lossless.idf1 >= 0.95, lossless
    assert lossless.predicted_tracks == lossless.gt_tracks == 5
    # live: frames go out before identity answers (8 frames, a third of a second, later here):
    # a returning face shows no id until then, instead of a new one it would lose
    live = score_tracks(events_with_identity_late(gt_path, faces_of_people, 8, output_waits=False), gt_path, truth)
    assert live.id_switches == 0 and live.predicted_tracks == 5, live
    assert live.idf1 >= 0.93, live
