"""`PoolClient`: a tracker's own way to the recognition pools. Its jobs wait in `SchedulingPolicy`
queues (each task at its priority; live: newest first, and stale ones answered None) and go in
batches straight to the pool actors the scheduler routed to this tracker, at most one call to each
at a time from here. Results come back as the calls' answers: no actor in between."""
from __future__ import annotations

import asyncio
import logging
import time

import ray

from core.config import PipelineConfig
from core.messages import PoolCall, PoolRoute, Recognised, RecognitionJob
from core.stats import TrafficCounter
from schedulers.policy import Dispatch, SchedulingPolicy, WorkItem, Worker
from schedulers.wake import WakeTimer

log = logging.getLogger("facelive.pools")


class PoolClient:
    def __init__(self, config: PipelineConfig, traffic: TrafficCounter):
        specs = [s for s in config.all_pools() if s.task != "detection"]
        self.policy = SchedulingPolicy({s.task: s.priority for s in specs}, config.mode,
                                       batch_sizes={s.task: s.batch_size for s in specs},
                                       batch_waits={s.task: s.batch_wait_s for s in specs})
        self.max_age_s, self.timeout_s = config.max_age_s, config.call_timeout_s
        # identity actors check their gallery replica once per batch
        self.gallery_synced = bool(config.gallery or config.enrol_unknown)
        self.traffic = traffic
        self.calls: list[PoolCall] = []  # made since the last report
        self.waiting: frozenset[str] = frozenset()  # tasks whose jobs wait with no actor (route)
        self._in_flight: dict[str, set[asyncio.Task]] = {}  # worker id -> its calls from here
        self._wake = WakeTimer(self._pump)

    async def route(self, routes: tuple[PoolRoute, ...], waiting: frozenset[str] = frozenset()) -> None:
        """Send jobs to these actors from now on; returns once no call to an actor left out is in
        flight, so the scheduler may stop it. A task in `waiting` has no actor for a moment (its
        model is swapped in place): its jobs wait for the new ones instead of being answered None."""
        self.waiting = waiting
        kept = {r.worker_id for r in routes}
        for worker_id in [w for w in self.policy.workers if w not in kept]:
            self.policy.remove_worker(worker_id)
        for r in routes:
            if r.worker_id not in self.policy.workers:
                self.policy.add_worker(Worker(r.worker_id, r.task, r.handle))
        self._pump()
        leaving = [t for worker_id, calls in self._in_flight.items() if worker_id not in kept for t in calls]
        await asyncio.gather(*leaving, return_exceptions=True)

    async def run(self, jobs: list[RecognitionJob]) -> list[Recognised | None]:
        """Each job's result; None where it went stale (live), its actor failed, or its task has no
        actor now (a pool resized to 0)."""
        loop = asyncio.get_running_loop()
        futures = []
        for job in jobs:
            futures.append(loop.create_future())
            if job.task not in self.waiting and not any(w.task == job.task for w in self.policy.workers.values()):
                futures[-1].set_result(None)
                continue
            self.policy.push(WorkItem(job.task, job.stream, job.seq, time.monotonic(), (job, futures[-1])))
        self._pump()
        return list(await asyncio.gather(*futures))

    def take_calls(self) -> tuple[PoolCall, ...]:
        """The calls made since the last take."""
        calls, self.calls = tuple(self.calls), []
        return calls

    def load(self) -> tuple[tuple[str, int, int], ...]:
        """(task, jobs waiting, calls in flight) for each task."""
        return tuple((task, self.policy.queue_depth(task), self.policy.busy(task)) for task in self.policy.queues)

    def _pump(self) -> None:
        now = time.monotonic()
        for task in self.policy.queues:
            for item in self.policy.expire(now, self.max_age_s, task):
                item.payload[1].set_result(None)
        for dispatch in self.policy.next_dispatches(now):
            call = asyncio.get_running_loop().create_task(self._execute(dispatch))
            self._in_flight.setdefault(dispatch.worker.worker_id, set()).add(call)
            call.add_done_callback(self._in_flight[dispatch.worker.worker_id].discard)
        self._wake.within(self.policy.next_wake(now))

    async def _execute(self, dispatch: Dispatch) -> None:
        worker, items = dispatch.worker, dispatch.items
        jobs = [item.payload[0] for item in items]
        self.traffic.call(f"{worker.task}.run")
        self.traffic.fetch(worker.task, len(jobs))  # each job's frame, to cut its chips from
        if worker.task == "identity" and self.gallery_synced:
            self.traffic.call("gallery.version")  # the replica's check (IdentityActor._sync)
        started = time.monotonic()
        try:
            results = await asyncio.wait_for(worker.handle.run.remote(jobs), self.timeout_s)
        except asyncio.TimeoutError:
            # Ray restarts it (max_restarts) with fresh state; its next call waits for the new process
            log.warning("%s: no answer within %.0f s; restarting it", worker.worker_id, self.timeout_s)
            ray.kill(worker.handle, no_restart=False)
            results = [None] * len(jobs)
        except Exception as error:  # noqa: BLE001 - a failed batch gives no results, whatever the cause
            log.warning("%s failed on %d job(s): %s", worker.worker_id, len(jobs),
                        str(error).splitlines()[0] if str(error) else type(error).__name__)
            results = [None] * len(jobs)
        finally:
            self.policy.done(worker.worker_id)
        if len(results) != len(jobs):
            log.warning("%s answered %d results for %d jobs; discarding them", worker.worker_id, len(results), len(jobs))
            results = [None] * len(jobs)
        self.calls.append(PoolCall(worker.task, time.monotonic() - started, len(jobs)))
        for item, result in zip(items, results):
            if not item.payload[1].done():
                item.payload[1].set_result(result)
        self._pump()
