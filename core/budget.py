"""Per-track recognition budget: which recognition task to run on which visible track now.

Model time goes where it changes the answer: expression every frame, or at an interval that the
tracks of a stream run in step (one pool call for all their faces); age and
gender until the track's fused estimate has converged, then a slow refresh; identity (by far the
dearest) when a track is confirmed, when its face has grown clearly larger than at its last
identity run (a bigger face gives a better embedding), and on a slow refresh.

When the caller caps the jobs per task, tracks that have never run a task go first, oldest track
first, then the most overdue: a new track is served on its first frame, and under a persistent
shortage every track takes its turn.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Task(StrEnum):
    EXPRESSION = "expression"
    AGE_GENDER = "age_gender"
    IDENTITY = "identity"


class JobReason(StrEnum):
    NEW = "new"
    GREW = "grew"
    DUE = "due"
    REFRESH = "refresh"
    # past half its interval: runs only beside a job of the same task that is due, so tracks that
    # started apart come into step and share one pool call rather than one each frame
    ALONG = "along"


_URGENCY = {JobReason.NEW: 0, JobReason.GREW: 1, JobReason.DUE: 2, JobReason.REFRESH: 2, JobReason.ALONG: 3}


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    # 0: every frame. None: every frame in lossless mode, LIVE_EXPRESSION_INTERVAL_S live
    # (`PipelineConfig.stream_budget`)
    expression_interval_s: float | None = None
    age_gender_interval_s: float = 0.0
    age_gender_refresh_s: float = 2.0
    identity_refresh_s: float = 5.0
    identity_unknown_refresh_s: float = 1.0  # while a track has no name yet
    # face area relative to the area at the last identity run that earns a new run
    identity_growth: float = 1.5
    # identity jobs planned per frame (0: no cap): a burst of new faces would otherwise put several
    # embeddings (6 ms each through ONNX, 60-90 through dlib) on one frame and hold back the frames
    # behind it
    identity_per_frame: int = 1


@dataclass(frozen=True, slots=True)
class VisibleTrack:
    """A confirmed track with a detection (and so a crop) in the current frame."""

    track_id: int
    area: float
    age_gender_converged: bool
    identified: bool = True  # has a name (or was enrolled); False retries identity sooner


@dataclass(frozen=True, slots=True)
class Job:
    track_id: int
    task: Task
    reason: JobReason
    t: float


class _TrackRecord:
    __slots__ = ("t_first", "last_run", "identity_area")

    def __init__(self, t: float) -> None:
        self.t_first = t
        self.last_run: dict[Task, float] = {}
        self.identity_area = 0.0


class RecognitionBudget:
    def __init__(self, config: BudgetConfig | None = None) -> None:
        self.config = config or BudgetConfig()
        self._records: dict[int, _TrackRecord] = {}

    def plan(
        self,
        t: float,
        tracks: Sequence[VisibleTrack],
        capacity: Mapping[Task, int] | None = None,
    ) -> tuple[Job, ...]:
        """The jobs to submit now, at most `capacity[task]` per task where a cap is given (by
        default the config's identity cap). They count as run from now on."""
        if capacity is None and self.config.identity_per_frame:
            capacity = {Task.IDENTITY: self.config.identity_per_frame}
        wanted: dict[Task, list[tuple[tuple[int, float, int], Job]]] = {task: [] for task in Task}
        for track in tracks:
            record = self._records.setdefault(track.track_id, _TrackRecord(t))
            for task in Task:
                reason = self._reason(t, task, track, record)
                if reason is None:
                    continue
                since = t - record.last_run.get(task, record.t_first)
                # within a reason, longest waiting first (for NEW: the oldest track)
                urgency = (_URGENCY[reason], -since, track.track_id)
                wanted[task].append((urgency, Job(track.track_id, task, reason, t)))
        chosen: list[Job] = []
        areas = {track.track_id: track.area for track in tracks}
        for task, candidates in wanted.items():
            if all(job.reason is JobReason.ALONG for _, job in candidates):
                continue  # nothing of this task is due for them to ride along with
            candidates.sort(key=lambda c: c[0])
            limit = len(candidates) if capacity is None else capacity.get(task, len(candidates))
            for _, job in candidates[:limit]:
                record = self._records[job.track_id]
                record.last_run[task] = t
                if task is Task.IDENTITY:
                    record.identity_area = areas[job.track_id]
                chosen.append(job)
        return tuple(chosen)

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drops ended tracks."""
        for track_id in track_ids:
            self._records.pop(track_id, None)

    def _reason(self, t: float, task: Task, track: VisibleTrack, record: _TrackRecord) -> JobReason | None:
        cfg = self.config
        last = record.last_run.get(task)
        if last is None:
            return JobReason.NEW
        since = t - last
        if task is Task.EXPRESSION:
            return _by_interval(since, cfg.expression_interval_s or 0.0)
        if task is Task.AGE_GENDER:
            if track.age_gender_converged:
                return JobReason.REFRESH if since >= cfg.age_gender_refresh_s else None
            return _by_interval(since, cfg.age_gender_interval_s)
        if track.area >= cfg.identity_growth * record.identity_area:
            return JobReason.GREW
        if not track.identified:
            # a face that enters at the border or turned away often matches nobody at first
            return JobReason.DUE if since >= cfg.identity_unknown_refresh_s else None
        return JobReason.REFRESH if since >= cfg.identity_refresh_s else None


def _by_interval(since: float, interval: float) -> JobReason | None:
    if since >= interval:
        return JobReason.DUE
    return JobReason.ALONG if since >= interval / 2 else None
