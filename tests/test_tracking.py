from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from core.geometry import iou_matrix
from core.tracking import UNCONFIRMED, Tracker, TrackerConfig

FPS = 25.0
GT_FILE = Path(__file__).parent / "media" / "video" / "crossing_faces.gt.txt"


def box(cx: float, cy: float, size: float = 40.0) -> list[float]:
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def feed(tracker: Tracker, frame: int, boxes: list[list[float]]):
    return tracker.update(frame / FPS, np.array(boxes, float).reshape(-1, 4), np.full(len(boxes), 0.9))


def test_a_track_shows_its_id_only_once_confirmed():
    tracker = Tracker(TrackerConfig(confirm_hits=3))
    first = feed(tracker, 0, [box(100, 100)])
    second = feed(tracker, 1, [box(102, 100)])
    third = feed(tracker, 2, [box(104, 100)])
    assert first.track_ids == second.track_ids == (UNCONFIRMED,)
    assert third.track_ids == (1,) and third.started == (1,)


def test_a_one_frame_false_detection_never_gets_an_id():
    tracker = Tracker()
    feed(tracker, 0, [box(300, 300)])
    updates = [feed(tracker, f, []) for f in range(1, 5)]
    assert all(not u.started and not u.ended for u in updates)
    assert feed(tracker, 5, [box(100, 100)]).track_ids == (UNCONFIRMED,)


def ids_of_two_crossing_faces(boxes_a, boxes_b) -> tuple[set[int], set[int]]:
    """Feeds both faces (None where hidden) in a random order per frame, as a detector lists
    them, and collects the ids each was given once confirmed."""
    rng = np.random.default_rng(0)
    tracker = Tracker()
    ids: tuple[set[int], set[int]] = (set(), set())
    for f, pair in enumerate(zip(boxes_a, boxes_b)):
        shown = [(face, b) for face, b in enumerate(pair) if b is not None]
        order = rng.permutation(len(shown))
        update = feed(tracker, f, [shown[k][1] for k in order])
        for k, track_id in zip(order, update.track_ids):
            if f >= 2:
                ids[shown[k][0]].add(track_id)
    return ids


def test_crossing_faces_keep_their_ids():
    # A walks right, B walks left on nearly the same line; B is behind A for ten frames and
    # comes out 60 px from where it went in: only its predicted motion leads back to it.
    xs_a = [100 + 6 * f for f in range(60)]
    xs_b = [460 - 6 * f for f in range(60)]
    ids_a, ids_b = ids_of_two_crossing_faces(
        [box(x, 200) for x in xs_a],
        [None if abs(xb - xa) < 60 else box(xb, 206) for xa, xb in zip(xs_a, xs_b)],
    )
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b


def test_faces_missed_while_they_overlap_keep_their_ids():
    # The detector loses both faces where they overlap and finds them again once each has passed
    # where the other was last seen: nearest-position matching would swap them.
    xs_a = [100 + 6 * f for f in range(60)]
    xs_b = [460 - 6 * f for f in range(60)]
    overlapping = [abs(xb - xa) < 40 for xa, xb in zip(xs_a, xs_b)]
    ids_a, ids_b = ids_of_two_crossing_faces(
        [None if o else box(x, 200) for x, o in zip(xs_a, overlapping)],
        [None if o else box(x, 203) for x, o in zip(xs_b, overlapping)],
    )
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b


def test_crossing_faces_of_different_sizes_keep_their_ids():
    ids_near, ids_far = ids_of_two_crossing_faces(
        [box(80 + 7 * f, 240, 60) for f in range(60)], [box(480 - 7 * f, 230, 34) for f in range(60)]
    )
    assert len(ids_near) == 1 and len(ids_far) == 1 and ids_near != ids_far


def test_a_face_hidden_for_ten_frames_keeps_its_id():
    tracker = Tracker()
    ids = set()
    for f in range(40):
        hidden = 15 <= f < 25
        update = feed(tracker, f, [] if hidden else [box(100 + 5 * f, 200)])
        assert not update.ended
        if f >= 2 and not hidden:
            ids.add(update.track_ids[0])
    assert ids == {1}


def test_a_lost_face_that_comes_back_where_it_left_gets_its_id_back():
    tracker = Tracker(TrackerConfig(coast_s=0.4, reid_window_s=2.0))
    for f in range(10):
        feed(tracker, f, [box(200, 200)])
    events = [feed(tracker, f, []) for f in range(10, 40)]  # 1.2 s away: lost, not ended
    assert [u.lost for u in events if u.lost] == [(1,)]
    back = feed(tracker, 40, [box(205, 203)])
    assert back.track_ids == (1,) and back.recovered == (1,)


def test_a_face_gone_longer_than_the_reid_window_ends_and_a_newcomer_gets_a_new_id():
    tracker = Tracker(TrackerConfig(reid_window_s=1.0))
    for f in range(10):
        feed(tracker, f, [box(200, 200)])
    ended = [e for f in range(10, 40) for e in feed(tracker, f, []).ended]
    assert [e.track_id for e in ended] == [1] and ended[0].hits == 10
    updates = [feed(tracker, f, [box(200, 200)]) for f in range(40, 43)]
    assert updates[-1].started == (2,)


def test_the_appearance_check_keeps_a_stranger_from_taking_a_lost_id():
    rng = np.random.default_rng(0)
    known, stranger = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 128)))
    tracker = Tracker(TrackerConfig(coast_s=0.2))
    for f in range(10):
        feed(tracker, f, [box(200, 200)])
    tracker.set_embedding(1, known)
    for f in range(10, 20):
        feed(tracker, f, [])
    scores = np.array([0.9])
    other = tracker.update(20 / FPS, np.array([box(200, 200)]), scores, [stranger])
    assert other.track_ids == (UNCONFIRMED,) and not other.recovered
    same = tracker.update(21 / FPS, np.array([box(200, 200), box(203, 201)]), np.full(2, 0.9),
                          [stranger, known])
    assert same.track_ids == (UNCONFIRMED, 1)


def test_assignment_is_global_not_greedy():
    # Both faces jump right. The cheapest single pair is track 2 with the left detection, which
    # a greedy loop takes first, leaving track 1 nothing within its gate; the optimal assignment
    # keeps both.
    tracker = Tracker()
    for f in range(5):
        feed(tracker, f, [box(100, 100), box(140, 100)])
    update = feed(tracker, 5, [box(125, 100), box(165, 100)])
    assert update.track_ids == (1, 2)


def test_weak_detections_continue_tracks_but_do_not_start_them():
    tracker = Tracker(TrackerConfig(min_start_score=0.5))
    for f in range(3):
        feed(tracker, f, [box(100, 100)])
    update = tracker.update(3 / FPS, np.array([box(102, 100), box(400, 400)]), np.array([0.3, 0.3]))
    assert update.track_ids == (1, UNCONFIRMED)
    assert feed(tracker, 4, [box(400, 400)]).track_ids == (UNCONFIRMED,)


def test_end_all_ends_confirmed_tracks_only():
    tracker = Tracker()
    for f in range(3):
        feed(tracker, f, [box(100, 100)])
    feed(tracker, 3, [box(102, 100), box(400, 400)])
    assert [e.track_id for e in tracker.end_all()] == [1]


# --- realistic: the ground truth of tests/media/video/crossing_faces.mp4 --------------------------


def load_gt() -> dict[int, list[tuple[int, np.ndarray]]]:
    rows = np.loadtxt(GT_FILE, delimiter=",", ndmin=2)
    frames: dict[int, list[tuple[int, np.ndarray]]] = {}
    for frame, gt_id, x, y, w, h, *_ in rows:
        frames.setdefault(int(frame), []).append((int(gt_id), np.array([x, y, x + w, y + h])))
    return frames


def score_ids(gt: dict[int, list[tuple[int, np.ndarray]]], out: dict[int, list[tuple[int, np.ndarray]]]):
    """IDF1 and ID switches. Per frame, GT and output boxes pair up by IoU >= 0.5; each GT id is
    then given at most one output id (globally, the most co-occurrences); IDF1 is 2 IDTP over all
    GT boxes plus all output boxes. A switch is a GT id matched to another output id than at its
    previous match."""
    co: dict[tuple[int, int], int] = {}
    last_match: dict[int, int] = {}
    switches = 0
    for frame, truth in gt.items():
        shown = out.get(frame, [])
        if not shown:
            continue
        iou = iou_matrix(np.stack([b for _, b in truth]), np.stack([b for _, b in shown]))
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols):
            if iou[r, c] < 0.5:
                continue
            g, o = truth[r][0], shown[c][0]
            co[(g, o)] = co.get((g, o), 0) + 1
            switches += int(last_match.get(g, o) != o)
            last_match[g] = o
    gt_ids = sorted({g for g, _ in co})
    out_ids = sorted({o for _, o in co})
    matrix = np.zeros((len(gt_ids), len(out_ids)))
    for (g, o), n in co.items():
        matrix[gt_ids.index(g), out_ids.index(o)] = n
    rows, cols = linear_sum_assignment(-matrix)
    idtp = matrix[rows, cols].sum()
    n_gt = sum(len(v) for v in gt.values())
    n_out = sum(len(v) for v in out.values())
    return 2 * idtp / (n_gt + n_out), switches


def test_ground_truth_of_crossing_faces_keeps_ids():
    gt = load_gt()
    rng = np.random.default_rng(5)
    tracker = Tracker(TrackerConfig(confirm_hits=3))
    out: dict[int, list[tuple[int, np.ndarray]]] = {}
    for frame in range(1, max(gt) + 1):
        faces = [b for _, b in gt.get(frame, []) if rng.random() >= 0.05]
        jittered = [b + rng.normal(0.0, 1.5, 4) for b in faces]
        boxes = np.array(jittered).reshape(-1, 4)
        update = tracker.update((frame - 1) / FPS, boxes, rng.uniform(0.6, 1.0, len(boxes)))
        out[frame] = [(i, b) for i, b in zip(update.track_ids, boxes) if i != UNCONFIRMED]
    idf1, switches = score_ids(gt, out)
    assert idf1 >= 0.9, idf1
    assert switches <= 3, switches


# --- appearance: identity embeddings (L2-normalised; distances on dlib's scale) ----------------


def person(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128)
    return v / np.linalg.norm(v)


def seen_as(v: np.ndarray, rng: np.random.Generator, spread: float = 0.012) -> np.ndarray:
    """Another frame of the same person: about 0.2 away on dlib's scale."""
    w = v + rng.normal(0.0, spread, v.shape)
    return w / np.linalg.norm(w)


def test_a_face_back_after_five_seconds_elsewhere_and_larger_is_recognised_by_appearance():
    rng = np.random.default_rng(0)
    ada = person(1)
    tracker = Tracker()
    for f in range(10):
        tracker.update(f / FPS, np.array([box(100, 200)]), np.array([0.9]), [seen_as(ada, rng)])
    gone = [tracker.update(f / FPS, np.zeros((0, 4)), np.zeros(0), []) for f in range(10, 135)]
    assert not any(u.ended for u in gone)
    back = tracker.update(135 / FPS, np.array([box(500, 300, 70)]), np.array([0.9]), [seen_as(ada, rng)])
    assert back.track_ids == (1,) and back.recovered == (1,)


def test_a_returning_face_takes_its_id_back_when_its_embedding_arrives_later():
    # the pipeline's case: detections carry no embedding; the identity pool answers per track
    rng = np.random.default_rng(1)
    ada = person(1)
    tracker = Tracker()
    for f in range(10):
        feed(tracker, f, [box(100, 200)])
    tracker.set_embedding(1, seen_as(ada, rng))
    for f in range(10, 110):  # away 4 s: lost, too long for position alone
        feed(tracker, f, [])
    returned = [feed(tracker, f, [box(480, 260, 60)]) for f in range(110, 114)]
    assert returned[-1].track_ids == (2,)
    tracker.set_embedding(2, seen_as(ada, rng))
    merged = feed(tracker, 114, [box(482, 260, 60)])
    assert merged.track_ids == (1,) and merged.recovered == (1,)
    assert [(e.track_id, e.hits) for e in merged.ended] == [(2, 4)]


def test_tracks_seen_at_the_same_time_are_never_merged():
    rng = np.random.default_rng(2)
    ada = person(1)
    tracker = Tracker()
    for f in range(10):
        feed(tracker, f, [box(100, 200), box(400, 200)])
    tracker.set_embedding(1, seen_as(ada, rng))
    for f in range(10, 60):
        feed(tracker, f, [box(400, 200)])
    tracker.set_embedding(2, seen_as(ada, rng))  # a look-alike, or a wrong embedding
    assert feed(tracker, 60, [box(400, 200)]).track_ids == (2,)


def test_a_stranger_does_not_take_an_id_by_appearance_and_a_faceless_track_ends_sooner():
    rng = np.random.default_rng(3)
    tracker = Tracker(TrackerConfig(reid_by_position_s=2.0, reid_window_s=10.0))
    for f in range(10):
        tracker.update(f / FPS, np.array([box(100, 200), box(400, 200)]), np.full(2, 0.9),
                       [seen_as(person(1), rng), None])
    ended = [e.track_id for f in range(10, 80) for e in feed(tracker, f, []).ended]
    assert ended == [2]  # no appearance: nothing can bring it back after the position window
    stranger = tracker.update(80 / FPS, np.array([box(100, 200)]), np.array([0.9]), [seen_as(person(9), rng)])
    assert stranger.track_ids == (UNCONFIRMED,) and not stranger.recovered


def test_appearance_keeps_two_same_size_faces_apart_where_motion_cannot():
    # head-on on one line, both missed for 0.4 s while they meet, found again having turned back:
    # motion says each went on past the other, appearance says who is who
    def run(with_appearance: bool) -> tuple[int, ...]:
        rng = np.random.default_rng(4)
        ada, bob = person(1), person(2)
        tracker = Tracker()

        def looks():
            return [seen_as(ada, rng), seen_as(bob, rng)] if with_appearance else None

        for f in range(25):
            x = 100 + 6 * f
            tracker.update(f / FPS, np.array([box(x, 200), box(600 - x, 200)]), np.full(2, 0.9), looks())
        for f in range(25, 35):
            feed(tracker, f, [])
        return tracker.update(35 / FPS, np.array([box(280, 200), box(320, 200)]), np.full(2, 0.9), looks()).track_ids

    assert run(with_appearance=False) == (2, 1)
    assert run(with_appearance=True) == (1, 2)


def test_a_face_cut_by_the_edge_is_not_judged_by_its_embedding_and_gets_its_id_once_whole():
    rng = np.random.default_rng(5)
    ada = person(1)
    tracker = Tracker()
    for f in range(10):
        tracker.update(f / FPS, np.array([box(500, 200, 60)]), np.array([0.9]), [seen_as(ada, rng)])
    for f in range(10, 110):
        feed(tracker, f, [])
    # back at the right edge: a box 32 px wide for a 60 px face, whose embedding is off
    edge = [612, 170, 644, 230]
    cut = [tracker.update(f / FPS, np.array([edge]), np.array([0.9]), [person(7)]) for f in range(110, 113)]
    assert cut[-1].track_ids == (2,)  # a stranger's look on half a face neither vetoes nor names
    whole = tracker.update(113 / FPS, np.array([box(600, 200, 60)]), np.array([0.9]), [seen_as(ada, rng)])
    assert whole.track_ids == (1,) and whole.recovered == (1,)
    assert [e.track_id for e in whole.ended] == [2]


def test_a_look_at_a_cut_face_names_a_lost_track_only_when_very_close():
    rng = np.random.default_rng(6)
    ada = person(1)
    for look, same in ((seen_as(ada, rng, 0.008), True), (seen_as(ada, rng, 0.03), False)):
        tracker = Tracker()
        for f in range(10):
            feed(tracker, f, [box(500, 200, 60)])
        tracker.set_embedding(1, seen_as(ada, rng, 0.004))
        for f in range(10, 110):
            feed(tracker, f, [])
        for f in range(110, 113):
            feed(tracker, f, [box(620, 200, 60)])
        # the identity job's crop came from a face half out of the picture
        tracker.set_embedding(2, look, box=np.array([612.0, 170.0, 644.0, 230.0]))
        assert feed(tracker, 113, [box(620, 200, 60)]).track_ids == ((1,) if same else (2,))


# --- what is shown: coasting through detector misses, ids held for a returning person's look ---


def test_a_confirmed_face_the_detector_misses_briefly_is_reported_where_it_went():
    tracker = Tracker(TrackerConfig(show_coasting_s=0.22))
    for f in range(10):
        feed(tracker, f, [box(100 + 4 * f, 200)])
    missed = [feed(tracker, f, []) for f in range(10, 18)]
    coasted = [u for u in missed if u.coasting]
    assert [u.coasting for u in coasted] == [(1,)] * 5  # 5 frames at 25 fps, then not any more
    first = coasted[0].coasting_boxes[0]
    np.testing.assert_allclose((first[0] + first[2]) / 2, 140, atol=1.0)  # moved on at 4 px a frame
    assert feed(tracker, 18, [box(172, 200)]).track_ids == (1,)


def test_a_tentative_face_and_a_detected_one_never_coast():
    tracker = Tracker()
    for f in range(3):
        feed(tracker, f, [box(100, 200)])
    feed(tracker, 3, [box(100, 200), box(400, 200)])
    update = feed(tracker, 4, [box(100, 200)])  # the tentative face at 400 is missed
    assert update.track_ids == (1,) and update.coasting == ()


def away_and_back(tracker: Tracker, rng) -> None:
    """Ada is seen with her look, leaves for 4 s (too long to come back by position) and a face
    is seen elsewhere for confirm_hits frames: track 2, with no look yet."""
    for f in range(10):
        feed(tracker, f, [box(100, 200)])
    tracker.set_embedding(1, seen_as(person(1), rng))
    for f in range(10, 110):
        feed(tracker, f, [])
    for f in range(110, 110 + tracker.config.confirm_hits):
        feed(tracker, f, [box(480, 260, 60)])


def test_a_face_confirmed_while_someone_is_away_shows_no_id_until_its_look_names_it():
    rng = np.random.default_rng(7)
    tracker = Tracker()
    away_and_back(tracker, rng)
    assert tracker.shown_id(2) == UNCONFIRMED and tracker.awaiting_look(2)
    tracker.set_embedding(2, seen_as(person(1), rng))
    assert tracker.shown_id(2) == 1  # frames tracked as 2 show who it was
    update = feed(tracker, 114, [box(482, 260, 60)])
    assert update.track_ids == (1,)
    assert [(e.track_id, e.merged_into) for e in update.ended] == [(2, 1)]


def test_a_stranger_waiting_for_a_look_shows_its_own_id_once_the_look_answers_or_time_runs_out():
    rng = np.random.default_rng(8)
    tracker = Tracker()
    away_and_back(tracker, rng)
    tracker.set_embedding(2, seen_as(person(2), rng))
    assert tracker.shown_id(2) == 2 and not tracker.awaiting_look(2)

    slow = Tracker(TrackerConfig(look_wait_s=0.4))
    away_and_back(slow, rng)
    waited = [slow.shown_id(2) for f in range(113, 125) if feed(slow, f, [box(480, 260, 60)])]
    assert waited[:9] == [UNCONFIRMED] * 9 and waited[10:] == [2, 2]  # 0.4 s at 25 fps


def test_with_nobody_away_a_new_face_shows_its_id_at_once():
    rng = np.random.default_rng(9)
    tracker = Tracker()
    for f in range(3):
        tracker.update(f / FPS, np.array([box(100, 200), box(400, 200)]), np.full(2, 0.9),
                       [seen_as(person(1), rng), None])
    assert tracker.shown_id(1) == 1 and tracker.shown_id(2) == 2


def test_a_face_gone_behind_another_or_leaving_is_not_shown_where_it_might_be():
    tracker = Tracker()
    for f in range(10):
        feed(tracker, f, [box(100 + 4 * f, 200), box(300, 200)])
    behind = feed(tracker, 10, [box(140, 200, 44)])  # a face now stands where the first went
    assert behind.track_ids == (1,) and behind.coasting == (2,) and 1 not in behind.coasting

    leaving = Tracker()
    for f in range(10):
        feed(leaving, f, [[0, 175, 40, 225]])
    cut = feed(leaving, 10, [[0, 175, 26, 225]])  # cut by the picture's edge: 26 px of a 40 px face
    assert cut.track_ids == (1,) and feed(leaving, 11, []).coasting == ()


def test_a_weak_detection_only_continues_a_track_no_strong_one_took_and_that_it_overlaps():
    tracker = Tracker(TrackerConfig(min_start_score=0.5, weak_min_iou=0.3))
    for f in range(5):
        feed(tracker, f, [box(100, 100)])
    # a weak box right on the track and a strong one a little off: the strong one is the face
    both = tracker.update(5 / FPS, np.array([box(100, 100), box(108, 100)]), np.array([0.3, 0.9]))
    assert both.track_ids == (UNCONFIRMED, 1)
    near = tracker.update(6 / FPS, np.array([box(104, 100)]), np.array([0.3]))
    assert near.track_ids == (1,)
    # within the motion gate, but overlapping the track's box too little to be its face
    far = tracker.update(7 / FPS, np.array([box(135, 100)]), np.array([0.3]))
    assert far.track_ids == (UNCONFIRMED,)


def test_detection_need_rises_with_speed_and_unsettled_tracks():
    from core.need import NeedConfig, TrackMotion, detection_need

    idle = detection_need(())
    steady = detection_need((TrackMotion(0.1, True),))
    fast = detection_need((TrackMotion(0.1, True), TrackMotion(1.5, True)))
    entering = detection_need((TrackMotion(1.5, True), TrackMotion(0.0, False)))
    assert idle < 1 < steady < fast < entering
    assert detection_need((TrackMotion(9.0, False),), NeedConfig(enabled=False)) == 1.0


def test_motions_are_in_face_widths_a_second():
    tracker = Tracker()
    for k in range(4):  # a 50 px face moving 5 px a frame at 25 fps: 2.5 widths a second
        tracker.update(k / 25, np.array([[100 + 5 * k, 100, 150 + 5 * k, 160]], float), np.array([0.9]))
    [motion] = tracker.motions()
    assert motion.settled and abs(motion.speed - 2.5) < 0.1
