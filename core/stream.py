"""`StreamTracker`: everything a stream's tracker does, with no Ray in it. It puts detections back
in frame order, tracks faces, plans recognition jobs with the budget, fuses their results per
track, and says what each frame shows once its jobs are in."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.draw import FaceLabel
from core.events import frame_event, track_event
from core.fusion import FusedAttributes, FusionConfig, TrackFusion
from core.messages import AgeEstimates, ClassScores, FaceBoxes, IdentityMatch
from core.records import face_record
from core.tracking import UNCONFIRMED, Tracker, TrackerConfig
from schedulers.budget import BudgetConfig, RecognitionBudget, Task, VisibleTrack


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Recognition of some faces of one frame for one task."""

    task: str
    indices: tuple[int, ...]  # face indices in the frame's crops
    track_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FrameWork:
    """A frame now in order: its faces' tracks, the jobs it asks for, and track events it caused.
    `faces` is None for a frame that was dropped before detection (only its order matters)."""

    seq: int
    t_capture: float
    faces: FaceBoxes | None
    track_ids: tuple[int, ...]
    jobs: tuple[JobSpec, ...]
    events: tuple[dict, ...]


@dataclass(frozen=True, slots=True)
class Recognised:
    """Results of one job, row i for track_ids[i]."""

    task: str
    track_ids: tuple[int, ...]
    age: AgeEstimates | None = None
    gender: ClassScores | None = None
    expression: ClassScores | None = None
    embeddings: np.ndarray | None = None
    matches: tuple[IdentityMatch | None, ...] = ()


@dataclass(frozen=True, slots=True)
class FrameOutput:
    labels: tuple[FaceLabel, ...]
    event: dict


class StreamTracker:
    def __init__(self, stream: str, age_bins, gender_labels, expression_labels,
                 tracker: TrackerConfig = TrackerConfig(), fusion: FusionConfig = FusionConfig(),
                 budget: BudgetConfig = BudgetConfig(), tasks: tuple[str, ...] = tuple(Task)):
        self.stream = stream
        self.tracker = Tracker(tracker)
        self.budget = RecognitionBudget(budget)
        self.fusion_config = fusion
        self.labels = (np.asarray(age_bins), tuple(gender_labels), tuple(expression_labels))
        self.tasks = set(tasks)
        self.fusions: dict[int, TrackFusion] = {}
        self.next_seq = 0
        self._waiting: dict[int, tuple[float, FaceBoxes | None]] = {}
        self.tracks_started = 0

    def add(self, seq: int, t_capture: float, faces: FaceBoxes | None) -> list[FrameWork]:
        """Detections of frame `seq` (None: the frame was dropped); returns the frames that are
        now in order, oldest first."""
        self._waiting[seq] = (t_capture, faces)
        ready = []
        while self.next_seq in self._waiting:
            t, found = self._waiting.pop(self.next_seq)
            ready.append(self._step(self.next_seq, t, found))
            self.next_seq += 1
        return ready

    def _step(self, seq: int, t: float, faces: FaceBoxes | None) -> FrameWork:
        if faces is None:
            return FrameWork(seq, t, None, (), (), ())
        update = self.tracker.update(t, faces.boxes, faces.scores)
        events = []
        for track_id in update.started:
            self.fusions[track_id] = TrackFusion(self.fusion_config, *self.labels)
            self.tracks_started += 1
            events.append(track_event("track_start", self.stream, track_id, t))
        events += self._end(update.ended, t)
        index_of = {tid: i for i, tid in enumerate(update.track_ids) if tid != UNCONFIRMED}
        visible = [VisibleTrack(tid, float(np.prod(faces.boxes[i, 2:] - faces.boxes[i, :2])),
                                self.fusions[tid].snapshot().age_gender_converged)
                   for tid, i in index_of.items()]
        by_task: dict[str, list[int]] = {}
        for job in self.budget.plan(t, visible):
            if job.task in self.tasks:
                by_task.setdefault(str(job.task), []).append(job.track_id)
            self.budget.complete(job)
        jobs = tuple(JobSpec(task, tuple(index_of[tid] for tid in tids), tuple(tids)) for task, tids in by_task.items())
        return FrameWork(seq, t, faces, tuple(update.track_ids), jobs, tuple(events))

    def _end(self, ended, t: float) -> list[dict]:
        events = []
        for end in ended:
            fusion = self.fusions.pop(end.track_id, None)
            summary = _fused_record(fusion.snapshot()) if fusion else {}
            events.append(track_event("track_end", self.stream, end.track_id, t, t_first=end.t_first,
                                      t_last_seen=end.t_last_seen, hits=end.hits, **summary))
        self.budget.forget([e.track_id for e in ended])
        return events

    def finish(self, t: float) -> list[dict]:
        """End every track (the stream is over)."""
        return self._end(self.tracker.end_all(), t)

    def fuse(self, result: Recognised) -> None:
        for row, track_id in enumerate(result.track_ids):
            fusion = self.fusions.get(track_id)
            if fusion is None:  # the track ended while its job ran
                continue
            if result.age is not None:
                fusion.add_age(result.age.posteriors[row])
            if result.gender is not None:
                fusion.add_gender(result.gender.probs[row])
            if result.expression is not None:
                fusion.add_expression(result.expression.probs[row])
            if result.embeddings is not None:
                self.tracker.set_embedding(track_id, result.embeddings[row])
            if result.matches:
                match = result.matches[row]
                fusion.add_identity(match.name if match else None, match.distance if match else float("inf"))

    def output(self, work: FrameWork) -> FrameOutput:
        """What frame `work` shows, with the tracks' fused attributes as they are now."""
        faces, labels = [], []
        for i, track_id in enumerate(work.track_ids):
            box = work.faces.boxes[i]
            fusion = self.fusions.get(track_id)
            fused = fusion.snapshot() if fusion else None
            record = face_record(box, work.faces.scores[i], work.faces.landmarks[i], *(
                _attributes(fused) if fused else (None,) * 6))
            record["track_id"] = track_id
            faces.append(record)
            labels.append(FaceLabel(tuple(float(v) for v in box), _label_lines(track_id, fused), key=max(track_id, 0)))
        return FrameOutput(tuple(labels), frame_event(self.stream, work.seq, work.t_capture, faces))


def _attributes(f: FusedAttributes):
    identity = {"name": f.identity, "distance": round(float(f.identity_distance), 3)} if f.identity else None
    return f.age, f.gender, f.gender_score, f.expression, f.expression_scores, identity


def _fused_record(f: FusedAttributes) -> dict:
    age, gender, gender_score, expression, _, identity = _attributes(f)
    return {"age": None if age is None else round(float(age), 1), "gender": gender,
            "gender_score": None if gender_score is None else round(float(gender_score), 3),
            "expression": expression, "identity": identity}


def _label_lines(track_id: int, fused: FusedAttributes | None) -> tuple[str, ...]:
    if track_id == UNCONFIRMED or fused is None:
        return ()
    head = f"#{track_id}"
    if fused.identity:
        head += f" {fused.identity}"
    lines = [head]
    if fused.age is not None or fused.gender:
        lines.append(" ".join(p for p in (fused.gender or "", f"{fused.age:.0f}" if fused.age is not None else "") if p))
    if fused.expression:
        lines.append(fused.expression)
    return tuple(lines)
