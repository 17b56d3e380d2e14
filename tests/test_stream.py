"""StreamTracker without Ray: frame order, tracks, recognition jobs, fusion and the events it emits."""
import random

import msgpack
import numpy as np

from core.messages import AgeEstimates, ClassScores, FaceBoxes, IdentityMatch, Recognised
from core.stream import StreamTracker
from core.tracking import UNCONFIRMED, TrackerConfig

FPS = 25.0
AGE_BINS = np.arange(81.0)
GENDERS = ("female", "male")
EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
ALL_TASKS = {"expression", "age_gender", "identity"}
FACE = (100.0, 100.0, 160.0, 170.0)
OTHER_FACE = (400.0, 100.0, 460.0, 170.0)


def stream(**tracker) -> StreamTracker:
    return StreamTracker("cam", AGE_BINS, GENDERS, EXPRESSIONS, TrackerConfig(**tracker))


def faces(*boxes) -> FaceBoxes:
    b = np.array(boxes, np.float32).reshape(-1, 4)
    landmarks = np.repeat(((b[:, None, :2] + b[:, None, 2:]) / 2), 5, axis=1)
    return FaceBoxes(b, np.full(len(b), 0.9, np.float32), landmarks)


def feed(tracker: StreamTracker, seqs, *boxes):
    """Frames `seqs` in order, each showing `boxes`; the frames that came out, in order."""
    return [work for seq in seqs for work in tracker.add(seq, seq / FPS, faces(*boxes))]


def one_hot(size: int, hot: int, p: float = 1.0) -> np.ndarray:
    row = np.full(size, (1.0 - p) / (size - 1))
    row[hot] = p
    return row[None]


def age_gender(track_id: int, age: int, male: float) -> Recognised:
    return Recognised("age_gender", (track_id,), age=AgeEstimates(np.array([float(age)]), one_hot(81, age)),
                      gender=ClassScores(GENDERS, np.array([[1.0 - male, male]])))


def expression(track_id: int, label: str, p: float = 0.8) -> Recognised:
    return Recognised("expression", (track_id,),
                      expression=ClassScores(EXPRESSIONS, one_hot(len(EXPRESSIONS), EXPRESSIONS.index(label), p)))


def identity(track_id: int, name: str, distance: float) -> Recognised:
    embedding = np.zeros((1, 128), np.float32)
    embedding[0, 0] = 1.0
    return Recognised("identity", (track_id,), embeddings=embedding, matches=(IdentityMatch(name, distance),))


def confirmed(tracker: StreamTracker, box=FACE):
    """Feeds frames until the face in `box` becomes a track; that frame's work."""
    cfg = tracker.tracker.config
    start = tracker.next_seq
    *_, work = feed(tracker, range(start, start + cfg.confirm_hits), box)
    return work


# ---- frame order


def test_shuffled_detections_come_out_in_order_exactly_once():
    for run in range(20):
        rng = random.Random(run)
        tracker = stream()
        arrivals = list(range(60))
        rng.shuffle(arrivals)
        dropped = set(rng.sample(range(60), 10))
        out = []
        for seq in arrivals:
            out += tracker.add(seq, seq / FPS, None if seq in dropped else faces(FACE))
        assert [work.seq for work in out] == list(range(60))
        assert {work.seq for work in out if work.faces is None} == dropped
        assert tracker.next_seq == 60 and not tracker._waiting


def test_a_frame_waits_for_the_ones_before_it():
    tracker = stream()
    assert tracker.add(2, 2 / FPS, faces(FACE)) == []
    assert tracker.add(1, 1 / FPS, faces(FACE)) == []
    assert [w.seq for w in tracker.add(0, 0.0, faces(FACE))] == [0, 1, 2]


def test_a_dropped_frame_advances_the_order_and_asks_for_nothing():
    tracker = stream()
    assert tracker.add(1, 1 / FPS, faces(FACE)) == []
    gone, after = tracker.add(0, 0.0, None)
    assert (gone.seq, gone.faces, gone.track_ids, gone.jobs, gone.events) == (0, None, (), (), ())
    assert after.seq == 1 and after.faces is not None


# ---- tracks and jobs


def test_a_face_seen_for_confirm_hits_frames_starts_a_track_with_every_task():
    tracker = stream(confirm_hits=3)
    before = feed(tracker, range(2), FACE)
    assert all(w.track_ids == (UNCONFIRMED,) and not w.jobs and not w.events for w in before)
    [work] = feed(tracker, [2], FACE)
    [track_id] = work.track_ids
    assert track_id != UNCONFIRMED
    [event] = work.events
    assert event == {"v": 1, "type": "track_start", "stream": "cam", "track_id": track_id, "t": 2 / FPS}
    assert {job.task for job in work.jobs} == ALL_TASKS
    assert all(job.indices == (0,) and job.track_ids == (track_id,) for job in work.jobs)
    assert tracker.tracks_started == 1


def test_a_new_track_gets_every_task_next_to_an_older_one():
    tracker = stream()
    old = confirmed(tracker).track_ids[0]
    feed(tracker, range(tracker.next_seq, tracker.next_seq + 20), FACE)
    # the new face is detection 0, the old one detection 1: job indices must follow the detections
    *_, work = feed(tracker, range(tracker.next_seq, tracker.next_seq + 3), OTHER_FACE, FACE)
    new = work.track_ids[0]
    assert work.track_ids == (new, old) and new != old
    jobs = {job.task: job for job in work.jobs}
    assert set(jobs) == ALL_TASKS
    assert jobs["identity"].track_ids == (new,) and jobs["identity"].indices == (0,)
    assert set(jobs["expression"].track_ids) == {new, old}
    assert all(work.track_ids[i] == tid for job in work.jobs for i, tid in zip(job.indices, job.track_ids))


def test_tasks_left_out_get_no_jobs():
    tracker = StreamTracker("cam", AGE_BINS, GENDERS, EXPRESSIONS, tasks=("expression",))
    assert {job.task for job in confirmed(tracker).jobs} == {"expression"}


# ---- fusion and output


def test_results_show_in_the_frame_output_fused():
    tracker = stream()
    work = confirmed(tracker)
    track_id = work.track_ids[0]
    tracker.fuse(age_gender(track_id, 30, male=0.9))
    tracker.fuse(age_gender(track_id, 40, male=0.7))
    tracker.fuse(expression(track_id, "happy"))
    tracker.fuse(identity(track_id, "ada", 0.3))
    output = tracker.output(work)

    event = output.event
    assert (event["v"], event["type"], event["stream"], event["seq"], event["t_capture"]) == (
        1, "frame", "cam", work.seq, work.t_capture)
    [face] = event["faces"]
    assert face["track_id"] == track_id
    assert face["box"] == list(FACE)
    assert (face["age"], face["gender"], face["gender_score"]) == (35.0, "male", 0.8)
    # one frame said 30, one 40: the 10th-90th percentile interval spans both
    assert face["age_interval"] == [29.7, 40.3]
    assert face["expression"] == "happy"
    assert set(face["expression_scores"]) == set(EXPRESSIONS) and face["expression_scores"]["happy"] == 0.8
    assert face["identity"] == {"name": "ada", "distance": 0.3}
    # the event log writes it as is: nothing numpy may be left in it
    assert msgpack.unpackb(msgpack.packb(event)) == event

    [label] = output.labels
    assert label.box == FACE and label.key == track_id
    assert label.lines == (f"#{track_id} ada 0.30", "male 80% 35 (30-40)", "happy")


def test_a_face_before_its_results_is_labelled_by_track_only():
    tracker = stream()
    work = confirmed(tracker)
    [label] = tracker.output(work).labels
    assert label.lines == (f"#{work.track_ids[0]}",)
    [face] = tracker.output(work).event["faces"]
    assert face["age"] is face["gender"] is face["expression"] is face["identity"] is None


def test_an_unconfirmed_face_has_no_label_lines():
    tracker = stream()
    [work] = feed(tracker, [0], FACE)
    [label] = tracker.output(work).labels
    assert label.lines == () and tracker.output(work).event["faces"][0]["track_id"] == UNCONFIRMED


def test_results_for_an_ended_track_are_ignored():
    tracker = stream(reid_window_s=2.0)
    track_id = confirmed(tracker).track_ids[0]
    tracker.fuse(expression(track_id, "sad"))
    # no face for longer than the re-identification window: the track ends
    gone = feed(tracker, range(tracker.next_seq, tracker.next_seq + int(2.5 * FPS)))
    [end] = [e for w in gone for e in w.events]
    assert (end["type"], end["track_id"], end["expression"]) == ("track_end", track_id, "sad")

    tracker.fuse(age_gender(track_id, 30, male=0.9))
    tracker.fuse(expression(track_id, "happy"))
    work = confirmed(tracker)
    assert work.track_ids[0] != track_id
    [face] = tracker.output(work).event["faces"]
    assert face["age"] is face["expression"] is None
    assert tracker.finish(work.t_capture)[0]["track_id"] != track_id


def test_finish_ends_every_track_with_its_fused_attributes():
    tracker = stream()
    first = confirmed(tracker).track_ids[0]
    *_, work = feed(tracker, range(tracker.next_seq, tracker.next_seq + 3), FACE, OTHER_FACE)
    second = work.track_ids[1]
    tracker.fuse(age_gender(first, 52, male=0.2))
    tracker.fuse(expression(first, "surprise"))
    tracker.fuse(identity(first, "grace", 0.25))

    ends = {e["track_id"]: e for e in tracker.finish(work.t_capture)}
    assert set(ends) == {first, second}
    end = ends[first]
    assert end["type"] == "track_end" and end["v"] == 1 and end["stream"] == "cam"
    assert (end["age"], end["gender"], end["gender_score"], end["expression"]) == (52.0, "female", 0.8, "surprise")
    assert end["identity"] == {"name": "grace", "distance": 0.25}
    assert end["age_interval"] == [51.6, 52.4]
    assert end["t"] == work.t_capture and end["t_first"] == 0.0 and end["t_last_seen"] == work.t_capture
    assert end["hits"] == work.seq + 1
    assert ends[second]["age"] is ends[second]["gender"] is ends[second]["expression"] is None
    assert msgpack.unpackb(msgpack.packb(list(ends.values()))) == list(ends.values())
    assert tracker.finish(work.t_capture) == []


# ---- look-alikes: the nearest gallery face beyond the threshold


def nearest(track_id: int, name: str, distance: float, *, lookalike: bool, watched: bool = False,
            thumbnail: np.ndarray | None = None) -> Recognised:
    embedding = np.zeros((1, 128), np.float32)
    embedding[0, 1] = 1.0
    match = IdentityMatch(name, distance, watched=watched, lookalike=lookalike,
                          similarity=1 - distance / 1.4, thumbnail=thumbnail)
    return Recognised("identity", (track_id,), embeddings=embedding, matches=(match,))


def test_a_lookalike_is_shown_but_never_named_alarmed_or_counted_as_matched():
    tracker = StreamTracker("cam", AGE_BINS, GENDERS, EXPRESSIONS, enrol_after=2, names_faces=True)
    work = confirmed(tracker)
    track_id = work.track_ids[0]
    picture = np.full((64, 64, 3), 77, np.uint8)
    # Even a result wrongly flagged as watched raises nothing while it is only a look-alike.
    for _ in range(2):
        tracker.fuse(nearest(track_id, "obama", 0.62, lookalike=True, watched=True, thumbnail=picture), work.t)
    output = tracker.output(work)
    [face] = output.event["faces"]
    assert face["identity"] is None
    assert face["lookalike"] == {"name": "obama", "distance": 0.62, "similarity": 0.56}
    assert output.extra_events == () and output.banner is None
    [label] = output.labels
    assert label.lines == (f"#{track_id}",)
    assert label.thumbnail is picture and label.thumbnail_caption == "looks like obama 56 %"
    # Nobody matched it: it is enrolled like any stranger.
    [request] = tracker.enrol_requests()
    assert request.track_id == track_id and len(request.vectors) == 2
    [end] = tracker.finish(1.0)
    assert end["identity"] is None and end["lookalike"]["name"] == "obama"


def test_a_named_track_resembles_its_own_gallery_face():
    tracker = stream()
    work = confirmed(tracker)
    track_id = work.track_ids[0]
    tracker.fuse(nearest(track_id, "ada", 0.3, lookalike=False))
    tracker.fuse(nearest(track_id, "bob", 0.58, lookalike=True))
    tracker.fuse(nearest(track_id, "ada", 0.35, lookalike=False))
    [face] = tracker.output(work).event["faces"]
    assert face["identity"]["name"] == face["lookalike"]["name"] == "ada"
    [label] = tracker.output(work).labels
    assert label.thumbnail is None and label.thumbnail_caption == "ada 77 %"


def test_an_unconfirmed_face_gets_no_thumbnail():
    tracker = stream()
    [work] = feed(tracker, [0], FACE)
    [label] = tracker.output(work).labels
    assert label.thumbnail is None and label.thumbnail_caption == ""


def test_a_person_back_after_seconds_gets_their_id_back_once_identity_answers():
    tracker = stream()
    first = confirmed(tracker).track_ids[0]
    tracker.fuse(age_gender(first, 40, male=0.9))
    tracker.fuse(identity(first, "ada", 0.3))
    away = [w for seq in range(tracker.next_seq, tracker.next_seq + 100) for w in tracker.add(seq, seq / FPS, faces())]
    assert not any(e["type"] == "track_end" for w in away for e in w.events)
    back = confirmed(tracker, OTHER_FACE)
    new = back.track_ids[0]
    assert new != first  # detections carry no embedding: nothing says who this is yet
    # ...so until identity answers, the face shows no id rather than one it may lose
    [waiting] = tracker.output(back).event["faces"]
    assert waiting["track_id"] == UNCONFIRMED
    assert "identity" in {job.task for job in back.jobs}
    tracker.fuse(identity(new, "ada", 0.3))
    # a frame tracked before the answer and put out after it shows who it was
    [face] = tracker.output(back).event["faces"]
    assert (face["track_id"], face["age"]) == (first, 40.0)
    [work] = feed(tracker, [tracker.next_seq], OTHER_FACE)
    assert work.track_ids == (first,)
    ends = [e for e in work.events if e["type"] == "track_end"]
    assert [(e["track_id"], e["merged_into"]) for e in ends] == [(new, first)]
    [face] = tracker.output(work).event["faces"]
    assert (face["track_id"], face["age"], face["identity"]["name"]) == (first, 40.0, "ada")
    assert tracker.tracks_started == 1


def test_a_face_the_detector_misses_for_a_frame_is_shown_where_its_track_went():
    tracker = stream()
    moving = [(100.0 + 4 * f, 100.0, 160.0 + 4 * f, 170.0) for f in range(12)]
    for f in range(10):
        feed(tracker, [f], moving[f], OTHER_FACE)
    [work] = feed(tracker, [10], OTHER_FACE)  # the moving face is missed
    assert work.predicted == (False, True) and work.track_ids == (2, 1)
    assert all(job.indices == (0,) for job in work.jobs)  # no crop, no job, for a guessed box
    shown = tracker.output(work).event["faces"]
    assert [(f["track_id"], f.get("predicted", False)) for f in shown] == [(2, False), (1, True)]
    np.testing.assert_allclose(shown[1]["box"], moving[10], atol=1.0)


def test_a_face_back_at_the_edge_gets_a_look_as_soon_as_it_is_whole():
    tracker = stream()
    first = confirmed(tracker).track_ids[0]
    tracker.fuse(identity(first, "ada", 0.3))
    for seq in range(tracker.next_seq, tracker.next_seq + 100):
        tracker.add(seq, seq / FPS, faces())
    cut = (604.0, 100.0, 640.0, 170.0)  # at the picture's edge, narrower than a whole face
    back = confirmed(tracker, cut)
    new = back.track_ids[0]
    assert [job.task for job in back.jobs if job.task == "identity"] == ["identity"]
    tracker.fuse(Recognised("identity", (new,), embeddings=np.eye(1, 128, 5, dtype=np.float32)))
    [still_cut] = feed(tracker, [tracker.next_seq], cut)
    assert "identity" not in {job.task for job in still_cut.jobs}  # a look at half a face says little
    # a little more of it: whole now, though not grown enough for the budget's own next look
    [whole] = feed(tracker, [tracker.next_seq], (600.0, 100.0, 640.0, 170.0))
    assert [job.track_ids for job in whole.jobs if job.task == "identity"] == [(new,)]
    tracker.fuse(identity(new, "ada", 0.3))
    [face] = tracker.output(whole).event["faces"]
    assert face["track_id"] == first
