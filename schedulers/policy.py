"""The scheduling policy: which frames are admitted, which work runs next on which worker, and the
ledger that makes every frame end exactly once. Plain Python: the `PriorityScheduler` actor
applies it, unit tests drive it directly."""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class WorkItem:
    task: str
    stream: str
    seq: int
    t_enqueue: float
    payload: Any = None


@dataclass(slots=True)
class Worker:
    worker_id: str
    task: str
    handle: Any = None
    busy: bool = False
    retired: bool = False  # takes no new work; removed once idle (hot swap, shrink)


@dataclass(frozen=True, slots=True)
class Dispatch:
    worker: Worker
    items: tuple[WorkItem, ...]


@dataclass(frozen=True, slots=True)
class Admission:
    accepted: bool  # False: the caller must wait (lossless backpressure) and offer again
    dropped: tuple[WorkItem, ...] = ()  # frames that became stale because of this one (live)
    carried: tuple[WorkItem, ...] = ()  # frames that go on undetected, boxes carried by tracking (live)


class FrameLedger:
    """Every captured frame ends as processed or dropped with one reason, exactly once."""

    def __init__(self):
        self.captured = 0
        self.processed = 0
        self.dropped: Counter[str] = Counter()
        self._open: set[tuple[str, int]] = set()

    def capture(self, stream: str, seq: int) -> None:
        self.captured += 1
        self._open.add((stream, seq))

    def finish(self, stream: str, seq: int, dropped_reason: str | None = None) -> bool:
        """Close a frame; False (and no count) if it was already closed."""
        if (stream, seq) not in self._open:
            return False
        self._open.discard((stream, seq))
        if dropped_reason is None:
            self.processed += 1
        else:
            self.dropped[dropped_reason] += 1
        return True

    def open_frames(self, stream: str | None = None) -> int:
        return sum(1 for s, _ in self._open if stream is None or s == stream)


@dataclass
class SchedulingPolicy:
    """`priorities`: task -> number, higher runs first when workers are free. `mode`: in live,
    the newest work of a task goes first and a stream keeps at most `max_in_flight` frames open,
    the oldest waiting frame giving way; in lossless, FIFO, and a full stream waits. With `carry`
    (live), a stream keeps at most one frame waiting for detection: a newer frame takes its place
    and the older one goes on undetected, its boxes carried by the tracker, so the detector
    runs as often as it can and every frame is still shown."""

    priorities: dict[str, int]
    mode: str = "lossless"
    max_in_flight: int = 6
    batch_sizes: dict[str, int] = field(default_factory=dict)
    carry: bool = False
    batch_waits: dict[str, float] = field(default_factory=dict)
    queues: dict[str, deque[WorkItem]] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    # (task, stream) -> when the task last took one of the stream's items (live), and a count that
    # orders the takes of one batch
    served: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    # stream -> how much it needs its next detection (core/need.py; 1 where not said)
    needs: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        for task in self.priorities:
            self.queues.setdefault(task, deque())

    def admit(self, item: WorkItem, open_frames: int) -> Admission:
        """Offer a new frame's first work item; `open_frames` of its stream are open now."""
        carried: tuple[WorkItem, ...] = ()
        if self.carry and self.mode == "live":
            carried = tuple(w for w in self.queues[item.task] if w.stream == item.stream)
            for w in carried:
                self.queues[item.task].remove(w)
        if open_frames < self.max_in_flight:
            self.push(item)
            return Admission(True, carried=carried)
        if self.mode == "lossless":
            return Admission(False)
        waiting = [w for w in self.queues[item.task] if w.stream == item.stream]
        if not waiting:
            # every open frame of the stream is past this stage: the new one is the stale-to-be
            return Admission(True, (item,), carried)
        oldest = waiting[0]
        self.queues[item.task].remove(oldest)
        self.push(item)
        return Admission(True, (oldest,), carried)

    def push(self, item: WorkItem) -> None:
        self.queues[item.task].append(item)

    def add_worker(self, worker: Worker) -> None:
        self.workers[worker.worker_id] = worker

    def remove_worker(self, worker_id: str) -> Worker | None:
        return self.workers.pop(worker_id, None)

    def expire(self, now: float, max_age_s: float, task: str) -> list[WorkItem]:
        """Live mode: items of `task` that waited longer than `max_age_s` leave the queue."""
        if self.mode != "live":
            return []
        queue = self.queues[task]
        stale = [w for w in queue if now - w.t_enqueue > max_age_s]
        for w in stale:
            queue.remove(w)
        return stale

    def _held(self, task: str, now: float) -> bool:
        """A short queue waits for a fuller batch while its oldest item is younger than the wait."""
        queue, wait = self.queues[task], self.batch_waits.get(task, 0.0)
        return bool(queue) and wait > 0 and len(queue) < self.batch_sizes.get(task, 1) and now - queue[0].t_enqueue < wait

    def next_wake(self, now: float) -> float | None:
        """Seconds until a held batch must go out anyway; None if nothing is held."""
        waits = [self.batch_waits[t] - (now - self.queues[t][0].t_enqueue) for t in self.queues if self._held(t, now)]
        return max(0.0, min(waits)) if waits else None

    def next_dispatches(self, now: float = 0.0) -> list[Dispatch]:
        """Give every free worker a batch, highest-priority task first (`now` for batch waits)."""
        out = []
        for task in sorted(self.queues, key=lambda t: -self.priorities[t]):
            queue = self.queues[task]
            if self._held(task, now):
                continue
            for worker in self.workers.values():
                if not queue:
                    break
                if worker.task != task or worker.busy or worker.retired:
                    continue
                batch = self._take(task, self.batch_sizes.get(task, 1), now)
                worker.busy = True
                out.append(Dispatch(worker, batch))
        return out

    def _take(self, task: str, n: int, now: float) -> tuple[WorkItem, ...]:
        """Lossless: the oldest items. Live: each stream's newest item, the stream that has waited
        longest since the task last served it first, its wait weighed by its need for detection.
        Newest-first alone starves streams: with one detector call at a time and cameras in step,
        the camera whose frame lands last each period took every call, and the others' tracks
        were carried on guesses alone."""
        queue = self.queues[task]
        if self.mode != "live":
            return tuple(queue.popleft() for _ in range(min(n, len(queue))))
        batch = []
        never = (float("-inf"), 0)

        def urgency(item: WorkItem) -> tuple[float, int, float]:
            served_at, order = self.served.get((task, item.stream), never)
            need = self.needs.get(item.stream, 1.0) if task == "detection" else 1.0
            return -(now - served_at) * need, order, -item.t_enqueue

        for _ in range(min(n, len(queue))):
            newest = {item.stream: item for item in queue}  # the queue is in arrival order
            item = min(newest.values(), key=urgency)
            queue.remove(item)
            self.served[(task, item.stream)] = (now, len(batch))
            batch.append(item)
        return tuple(batch)

    def done(self, worker_id: str) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.busy = False

    def queue_depth(self, task: str) -> int:
        return len(self.queues[task])

    def busy(self, task: str) -> int:
        return sum(1 for w in self.workers.values() if w.task == task and w.busy)
