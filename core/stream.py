"""`StreamTracker`: everything a stream's tracker does, with no Ray in it. It puts detections back
in frame order, tracks faces, plans recognition jobs with the budget, fuses their results per
track, and says what each frame shows once its jobs are in."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from core.draw import FaceLabel
from core.events import frame_event, track_event
from core.fusion import FusedAttributes, FusionConfig, TrackFusion, face_quality
from core.messages import FaceBoxes, IdentityMatch, Recognised
from core.motion import FaceFlow, MotionConfig
from core.need import NeedConfig, detection_need
from core.records import face_record
from core.geometry import covered
from core.tracking import UNCONFIRMED, Tracker, TrackerConfig
from core.budget import BudgetConfig, RecognitionBudget, Task, VisibleTrack


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Recognition of some faces of one frame for one task."""

    task: str
    indices: tuple[int, ...]  # face indices in the frame's detections
    track_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FrameWork:
    """A frame now in order: its faces' tracks, the jobs it asks for, and track events it caused.
    `faces` is None for a frame that was dropped before detection (only its order matters). A
    carried frame was not detected: its faces are the tracks' predicted boxes; on a detected
    frame, faces marked in `predicted` are tracks the detector missed, at their predicted boxes
    (they come after the detections, so job indices still point at the frame's detections)."""

    seq: int
    t_capture: float
    faces: FaceBoxes | None
    track_ids: tuple[int, ...]
    jobs: tuple[JobSpec, ...]
    events: tuple[dict, ...]
    t: float = 0.0  # the stream's clock (video time for files), which tracking runs on
    carried: bool = False
    predicted: tuple[bool, ...] = ()


@dataclass(frozen=True, slots=True)
class FrameOutput:
    labels: tuple[FaceLabel, ...]
    event: dict
    extra_events: tuple[dict, ...] = ()  # alarms and enrolments since the previous frame
    banner: str | None = None


@dataclass(frozen=True, slots=True)
class EnrolRequest:
    track_id: int
    vectors: np.ndarray  # the track's embeddings that matched nobody


class StreamTracker:
    def __init__(self, stream: str, age_bins, gender_labels, expression_labels,
                 tracker: TrackerConfig = TrackerConfig(), fusion: FusionConfig = FusionConfig(),
                 budget: BudgetConfig = BudgetConfig(), tasks: tuple[str, ...] = tuple(Task),
                 alarm_cooldown_s: float = 30.0, enrol_after: int | None = None, names_faces: bool = False,
                 motion: MotionConfig = MotionConfig(), need: NeedConfig = NeedConfig()):
        self.stream = stream
        self.need_config = need
        self.tracker = Tracker(tracker)
        self.flow = FaceFlow(motion) if motion.flow else None
        # the latest frame in order that had pixels, and its stream time: carried frames are
        # moved on from it by the image's motion
        self._seen: tuple[np.ndarray, float] | None = None
        # the boxes flow put faces at on the latest carried frame, and its stream time. They are
        # shown, never fed to the tracker: on crossing_faces, where faces glide at steady speed,
        # flow-moved track boxes made a face dragged along by one passing in front take over its
        # id at the next detection (IDF1 0.873 -> 0.704 detecting one frame in 8)
        self._followed: tuple[float, dict[int, np.ndarray]] = (-1.0, {})
        self._looks: dict[int, np.ndarray | None] = {}  # each track's face as last detected
        self.budget = RecognitionBudget(budget)
        self.fusion_config = fusion
        self.labels = (np.asarray(age_bins), tuple(gender_labels), tuple(expression_labels))
        self.tasks = set(tasks)
        self.fusions: dict[int, TrackFusion] = {}
        self.next_seq = 0
        self._waiting: dict[int, tuple[float, FaceBoxes | None]] = {}
        self.tracks_started = 0  # less those merged into an earlier track: the tracks a viewer saw
        # freshness: capture time of the frame behind each track's latest result, per task
        self.fresh_within_s = 0.5
        self._result_t: dict[int, dict[str, float]] = {}
        self.faces_shown = 0
        self.faces_fresh = 0
        self.alarm_cooldown_s, self.enrol_after = alarm_cooldown_s, enrol_after
        self.names_faces = names_faces  # a gallery is searched: unnamed tracks retry identity sooner
        self._watched: set[str] = set()
        self._last_alarm: dict[str, float] = {}
        self._alarmed: set[int] = set()
        self._unmatched: dict[int, list[np.ndarray]] = {}
        self._matched: set[int] = set()
        self._named: dict[int, str] = {}  # tracks enrolled from this stream, shown at once
        self._enrolling: set[int] = set()
        self._events: list[dict] = []
        self._banner: tuple[str, float] | None = None
        # quality of the face each track's latest age/gender job was cut from (fusion weight)
        self._quality: dict[int, float] = {}
        # the box of the face each track's latest identity job was cut from: the tracker trusts
        # an embedding only from a whole face, not one cut by the frame's edge
        self._identity_box: dict[int, np.ndarray] = {}

    def add(self, seq: int, t: float, faces: FaceBoxes | None, t_capture: float | None = None,
            carried: bool = False, image: np.ndarray | None = None) -> list[FrameWork]:
        """Detections of frame `seq` (None: the frame was dropped, or with `carried` it was not
        detected and shows the tracks' boxes moved on by the image's motion, or predicted where
        there is no `image`) at stream time `t`, captured at wall-clock `t_capture` (default
        `t`); returns the frames now in order, oldest first. Tracking runs on stream time: for a
        file, wall-clock gaps follow processing speed, not motion, and would throw the motion
        model off."""
        self._waiting[seq] = (t, faces, t if t_capture is None else t_capture, carried, image)
        ready = []
        while self.next_seq in self._waiting:
            t, found, wall, carry, pixels = self._waiting.pop(self.next_seq)
            if carry:
                ready.append(self._carry(self.next_seq, t, wall, pixels))
            else:
                ready.append(self._step(self.next_seq, t, found, wall))
            if pixels is not None and self.flow is not None and (carry or found is not None):
                if not carry:
                    self._remember_looks(ready[-1], pixels)
                self._seen = (pixels, t)
            self.next_seq += 1
        return ready

    def _carry(self, seq: int, t: float, t_capture: float, image: np.ndarray | None) -> FrameWork:
        track_ids, boxes = self.tracker.predict(t)
        if self.flow is not None and image is not None and self._seen is not None and track_ids:
            before, t_before = self._seen
            then = dict(zip(*self._followable(t_before)))
            known = [i for i, tid in enumerate(track_ids) if tid in then]
            if known:
                moved = self.flow.move(before, image, np.stack([then[track_ids[i]] for i in known]), boxes[known],
                                       [self._looks.get(track_ids[i]) for i in known])
                boxes[known] = moved.boxes
                self._followed = (t, {track_ids[i]: moved.boxes[j] for j, i in enumerate(known) if moved.followed[j]})
        return FrameWork(seq, t_capture, _predicted_faces(boxes), track_ids, (), (), t, carried=True)

    def detection_need(self) -> float:
        """How much this stream needs its next detection, as of the frames put out so far."""
        return detection_need(self.tracker.motions(), self.need_config)

    def _remember_looks(self, work: FrameWork, image: np.ndarray) -> None:
        for i, track_id in enumerate(work.track_ids):
            if track_id != UNCONFIRMED and not work.predicted[i]:
                self._looks[track_id] = self.flow.look(image, work.faces.boxes[i])

    def _followable(self, t: float) -> tuple[tuple[int, ...], np.ndarray]:
        """Faces whose pixels at `t` can be followed into the next frame: detected or followed
        at `t`, and clear of the others. Where two faces overlap the one behind is unknown, and
        its pixels would move with the one in front: both keep their predicted boxes."""
        track_ids, boxes = self.tracker.detected(t)
        if self._followed[0] == t:
            track_ids = tuple(self._followed[1]) + track_ids
            boxes = np.concatenate([np.array(list(self._followed[1].values())).reshape(-1, 4), boxes])
        if len(boxes) < 2:
            return track_ids, boxes
        cover = covered(boxes, boxes)
        np.fill_diagonal(cover, 0.0)
        clear = cover.max(axis=1) <= self.flow.config.max_cover
        return tuple(tid for tid, c in zip(track_ids, clear) if c), boxes[clear]

    def _step(self, seq: int, t: float, faces: FaceBoxes | None, t_capture: float) -> FrameWork:
        if faces is None:
            return FrameWork(seq, t_capture, None, (), (), (), t)
        update = self.tracker.update(t, faces.boxes, faces.scores)
        events = []
        for track_id in update.started:
            self.fusions[track_id] = TrackFusion(self.fusion_config, *self.labels)
            self.tracks_started += 1
            events.append(track_event("track_start", self.stream, track_id, t))
        events += self._end(update.ended, t)
        index_of = {tid: i for i, tid in enumerate(update.track_ids) if tid != UNCONFIRMED}
        snapshots = {tid: self.fusions[tid].snapshot() for tid in index_of}
        # a track waiting for its first look retries identity as soon as an unnamed one does
        visible = [VisibleTrack(tid, float(np.prod(faces.boxes[i, 2:] - faces.boxes[i, :2])),
                                snapshots[tid].age_gender_converged,
                                identified=(not self.tracker.awaiting_look(tid) and (
                                    not self.names_faces or snapshots[tid].identity is not None
                                    or tid in self._named)))
                   for tid, i in index_of.items()]
        by_task: dict[str, list[int]] = {}
        for job in self.budget.plan(t, visible):
            if job.task in self.tasks:
                by_task.setdefault(str(job.task), []).append(job.track_id)
        for tid in self._whole_again(index_of, faces, by_task.get(str(Task.IDENTITY), [])):
            by_task.setdefault(str(Task.IDENTITY), []).append(tid)
        for tid in by_task.get(str(Task.AGE_GENDER), ()):
            i = index_of[tid]
            self._quality[tid] = face_quality(faces.boxes[i], faces.scores[i], faces.landmarks[i], self.fusion_config)
        for tid in by_task.get(str(Task.IDENTITY), ()):
            self._identity_box[tid] = faces.boxes[index_of[tid]]
        jobs = tuple(JobSpec(task, tuple(index_of[tid] for tid in tids), tuple(tids)) for task, tids in by_task.items())
        predicted = (False,) * len(faces) + (True,) * len(update.coasting)
        if update.coasting:
            coasting = _predicted_faces(update.coasting_boxes)
            faces = FaceBoxes(*(np.concatenate([a, b]) for a, b in zip(
                (faces.boxes, faces.scores, faces.landmarks), (coasting.boxes, coasting.scores, coasting.landmarks))))
        return FrameWork(seq, t_capture, faces, tuple(update.track_ids) + update.coasting, jobs, tuple(events), t,
                         predicted=predicted)

    def _whole_again(self, index_of: dict[int, int], faces: FaceBoxes, planned: list[int]) -> list[int]:
        """Tracks waiting for their first look whose identity crop so far was cut by the edge and
        whose face is now whole: one look at it says who they are, where the budget would wait
        for its next refresh and keep their id hidden until then."""
        if str(Task.IDENTITY) not in self.tasks:
            return []
        return [tid for tid, i in index_of.items()
                if tid not in planned and self.tracker.awaiting_look(tid) and tid in self._identity_box
                and not self.tracker.whole_face(self._identity_box[tid]) and self.tracker.whole_face(faces.boxes[i])]

    def _end(self, ended, t: float) -> list[dict]:
        events = []
        for end in ended:
            fusion = self.fusions.pop(end.track_id, None)
            summary = _fused_record(fusion.snapshot()) if fusion else {}
            if end.merged_into is not None:
                # it was an earlier track all along: one person, one track
                summary["merged_into"] = end.merged_into
                self.tracks_started -= 1
            events.append(track_event("track_end", self.stream, end.track_id, t, t_first=end.t_first,
                                      t_last_seen=end.t_last_seen, hits=end.hits, **summary))
        self.budget.forget([e.track_id for e in ended])
        for end in ended:
            # per-track state goes with its track: a long run must not grow with every face seen
            for state in (self._result_t, self._unmatched, self._named, self._quality, self._identity_box,
                          self._looks):
                state.pop(end.track_id, None)
            for state in (self._matched, self._alarmed, self._enrolling):
                state.discard(end.track_id)
        return events

    def finish(self, t: float) -> list[dict]:
        """End every track (the stream is over)."""
        return self._end(self.tracker.end_all(), t)

    def fuse(self, result: Recognised, t_frame: float | None = None) -> None:
        """Fold a job's results into its tracks; `t_frame` is the capture time of the frame the
        job's faces came from (it dates the result for the freshness figure)."""
        for row, track_id in enumerate(result.track_ids):
            fusion = self.fusions.get(track_id)
            if fusion is None:  # the track ended while its job ran
                continue
            if t_frame is not None:
                self._result_t.setdefault(track_id, {})[result.task] = t_frame
            weight = self._quality.get(track_id, 1.0)
            if result.age is not None:
                fusion.add_age(result.age.posteriors[row], weight)
            if result.gender is not None:
                fusion.add_gender(result.gender.probs[row], weight)
            if result.expression is not None:
                fusion.add_expression(result.expression.probs[row])
            if result.embeddings is not None:
                self.tracker.set_embedding(track_id, result.embeddings[row], self._identity_box.get(track_id))
            if result.matches:
                match = result.matches[row]
                # a look-alike votes "unknown": it is who the face resembles, not who it is
                known = match is not None and not match.lookalike
                fusion.add_identity(match.name if known else None, match.distance if match else float("inf"))
                if match is not None:
                    fusion.add_nearest(match)
                self._note_match(track_id, match if known else None, result.embeddings[row], fusion, t_frame)

    def _note_match(self, track_id: int, match, embedding: np.ndarray, fusion: TrackFusion, t: float | None) -> None:
        if match is None:  # nobody, or only a look-alike
            self._unmatched.setdefault(track_id, []).append(embedding)
            return
        self._matched.add(track_id)
        if match.watched:
            self._watched.add(match.name)
        fused = fusion.snapshot()
        name = fused.identity
        t = t if t is not None else 0.0
        if (name in self._watched and track_id not in self._alarmed
                and t - self._last_alarm.get(name, -1e18) >= self.alarm_cooldown_s):
            # one alarm per appearance: once per track, and not again for the cooldown
            self._alarmed.add(track_id)
            self._last_alarm[name] = t
            self._events.append(track_event("alarm", self.stream, track_id, t, name=name,
                                            distance=round(float(fused.identity_distance), 3)))
            self._banner = (f"WATCHLIST: {name} (track {track_id})", t + 3.0)

    def enrol_requests(self) -> list[EnrolRequest]:
        """Confirmed tracks that matched nobody `enrol_after` times and were never matched."""
        if self.enrol_after is None:
            return []
        ready = [tid for tid, vecs in self._unmatched.items()
                 if len(vecs) >= self.enrol_after and tid not in self._matched and tid not in self._enrolling and tid not in self._named
                 and tid in self.fusions]
        self._enrolling.update(ready)
        return [EnrolRequest(tid, np.stack(self._unmatched[tid])) for tid in ready]

    def enrolled(self, track_id: int, name: str, t: float) -> None:
        self._enrolling.discard(track_id)
        if track_id in self.fusions:  # the track may have ended while it was being enrolled
            self._named[track_id] = name
        self._events.append(track_event("enrol", self.stream, track_id, t, name=name))

    def output(self, work: FrameWork) -> FrameOutput:
        """What frame `work` shows, with the tracks' fused attributes as they are now."""
        faces, labels = [], []
        for i, tracked_as in enumerate(work.track_ids):
            # as things stand now: a face tracked under an id that has since merged into an
            # earlier one shows that one, and a track still waiting for its first look no id
            track_id = self.tracker.shown_id(tracked_as) if tracked_as != UNCONFIRMED else UNCONFIRMED
            box = work.faces.boxes[i]
            fusion = self.fusions.get(track_id)
            fused = fusion.snapshot() if fusion else None
            if fused is not None and fused.identity is None and track_id in self._named:
                fused = replace(fused, identity=self._named[track_id], identity_distance=0.0)
            record = face_record(box, work.faces.scores[i], work.faces.landmarks[i], *(
                _attributes(fused) if fused else (None,) * 7))
            record["track_id"] = track_id
            record["lookalike"] = _lookalike(fused)
            if work.carried or (work.predicted and work.predicted[i]):
                record["predicted"] = True  # the box is the track's motion, not a detection
            faces.append(record)
            if track_id != UNCONFIRMED:
                self.faces_shown += 1
                # fresh: the fast-changing attribute (expression) at most 0.5 s old, and age and
                # gender estimated (the budget refreshes those slowly once they have converged)
                dated = self._result_t.get(track_id, {})
                if (work.t - dated.get("expression", -1e18) <= self.fresh_within_s
                        and "age_gender" in dated):
                    self.faces_fresh += 1
            shown = fused.lookalike if fused is not None and track_id != UNCONFIRMED else None
            labels.append(FaceLabel(tuple(float(v) for v in box), _label_lines(track_id, fused), key=max(track_id, 0),
                                    thumbnail=shown.thumbnail if shown else None,
                                    thumbnail_caption=_lookalike_caption(shown) if shown else ""))
        extra, self._events = tuple(self._events), []
        banner = self._banner[0] if self._banner and work.t <= self._banner[1] else None
        return FrameOutput(tuple(labels), frame_event(self.stream, work.seq, work.t_capture, faces), extra, banner)


def _predicted_faces(boxes: np.ndarray) -> FaceBoxes:
    """Tracks' predicted boxes as faces: no detector score, no landmarks."""
    n = len(boxes)
    return FaceBoxes(np.asarray(boxes, np.float32).reshape(-1, 4), np.zeros(n, np.float32), np.zeros((n, 5, 2), np.float32))


def _attributes(f: FusedAttributes):
    identity = {"name": f.identity, "distance": round(float(f.identity_distance), 3)} if f.identity else None
    return f.age, f.gender, f.gender_score, f.expression, f.expression_scores, identity, f.age_interval


def _fused_record(f: FusedAttributes) -> dict:
    age, gender, gender_score, expression, _, identity, interval = _attributes(f)
    return {"age": None if age is None else round(float(age), 1), "gender": gender,
            "gender_score": None if gender_score is None else round(float(gender_score), 3),
            "expression": expression, "identity": identity, "lookalike": _lookalike(f),
            "age_interval": None if interval is None else [round(float(v), 1) for v in interval]}


def _lookalike(f: FusedAttributes | None) -> dict | None:
    """The event form of the face a track resembles most (for a named track, its own gallery face)."""
    m = f.lookalike if f is not None else None
    if m is None:
        return None
    return {"name": m.name, "distance": round(float(m.distance), 3), "similarity": round(float(m.similarity), 2)}


def _lookalike_caption(m: IdentityMatch) -> str:
    percent = f"{m.similarity * 100:.0f} %"
    return f"looks like {m.name} {percent}" if m.lookalike else f"{m.name} {percent}"


def _label_lines(track_id: int, fused: FusedAttributes | None) -> tuple[str, ...]:
    if track_id == UNCONFIRMED or fused is None:
        return ()
    head = f"#{track_id}"
    if fused.identity:
        head += f" {fused.identity} {fused.identity_distance:.2f}"
    lines = [head]
    gender = f"{fused.gender} {fused.gender_score:.0%}" if fused.gender else ""
    age = f"{fused.age:.0f} ({fused.age_interval[0]:.0f}-{fused.age_interval[1]:.0f})" if fused.age is not None else ""
    if age or gender:
        lines.append(" ".join(p for p in (gender, age) if p))
    if fused.expression:
        lines.append(fused.expression)
    return tuple(lines)
