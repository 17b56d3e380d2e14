"""`PoolManager`: the actors behind each task. It checks a pool can be placed at all, starts its
actors through the factory it is handed (it never imports actors/), registers each with the
policy only once it answers, and grows, shrinks or swaps a pool while frames flow."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from itertools import count
from typing import Any

import ray

from core.config import TASKS, ConfigError, PipelineConfig, PoolSpec
from schedulers.policy import SchedulingPolicy, Worker

# (spec, config, name) -> a started Ray actor handle for that pool
ActorFactory = Callable[[PoolSpec, PipelineConfig, str], Any]


def check_feasible(spec: PoolSpec, cluster: dict[str, float]) -> None:
    """An actor asking for what no node has stays pending forever in Ray: refuse it up front."""
    for name, amount in _asks(spec).items():
        if amount > 0 and cluster.get(name, 0) < amount:
            hint = ("run without --gpu, or on a machine with a GPU" if name == "GPU" else
                    f"start a node with `ray start --address=HEAD:6379 --resources='{{\"{name}\": N}}'`")
            raise ConfigError(f"pool {spec.task!r} asks for {name}={amount:g} per actor but the cluster has "
                              f"{cluster.get(name, 0):g}; {hint}")


def check_fits(specs: list[PoolSpec], cluster: dict[str, float]) -> None:
    """Actors that each fit but together ask for more than the whole cluster has: Ray leaves the
    last ones pending, and the run would wait out the start timeout (300 s) with no word. A
    cluster that others use may still be short; this catches the request that can never fit."""
    for name in {name for spec in specs for name in _asks(spec)}:
        shares = [(spec, _asks(spec).get(name, 0.0)) for spec in specs]
        amount = sum(spec.count * each for spec, each in shares)
        if amount > cluster.get(name, 0) + 1e-9:
            pools = ", ".join(f"{spec.task} {spec.count} x {each:g}" for spec, each in shares if spec.count * each)
            hint = ", e.g. --pool detection=2:num_cpus=0.25" if name == "CPU" else ""
            raise ConfigError(f"the pools ask for {name}={amount:g} in all ({pools}) but the cluster has "
                              f"{cluster.get(name, 0):g}; ask for fewer actors or less each{hint}")


def _asks(spec: PoolSpec) -> dict[str, float]:
    """What one actor of the pool asks Ray for."""
    return {"CPU": spec.num_cpus, "GPU": spec.num_gpus, **spec.resources}


class PoolManager:
    def __init__(self, config: PipelineConfig, policy: SchedulingPolicy, factory: ActorFactory):
        self.config, self.policy, self.factory = config, policy, factory
        self.specs = {s.task: s for s in config.all_pools()}
        self._ids = count(1)
        self.devices: dict[str, dict[str, str]] = {}  # worker id -> model name -> where it runs

    async def start(self, timeout_s: float) -> None:
        cluster = ray.cluster_resources()
        for spec in self.specs.values():
            check_feasible(spec, cluster)
        check_fits(list(self.specs.values()), cluster)
        await self._start([spec for spec in self.specs.values() for _ in range(spec.count)], timeout_s)

    async def resize(self, task: str, size: int, timeout_s: float) -> None:
        """New actors join once ready; surplus ones finish the batch they hold and leave."""
        live = self.workers(task)
        if size > len(live):
            await self._start([self.specs[task]] * (size - len(live)), timeout_s)
        for worker in live[size:]:
            self.retire(worker)

    async def swap(self, task: str, timeout_s: float, reroute: Callable[[], Awaitable[None]],
                   model: str | None = None, config: PipelineConfig | None = None) -> None:
        """The new pool starts beside the old one and takes over; the old one drains. Where the
        cluster has no room for both (the default pools fill a 2-core box), the old actors retire
        first (`reroute` sends the trackers' jobs away from them) and the new ones start in the
        CPUs they free: the task pauses for a model load (live frames are carried or go stale,
        lossless ones wait) instead of the start waiting out its timeout for CPUs that never free.
        `config`: the one the new actors start with (a new detector threshold). A new model that
        fails to start leaves the old one running, started again where it had retired."""
        spec = replace(self.specs[task], model=model or self.specs[task].model)
        old, previous = self.workers(task), self.config
        beside = self._free_for(spec, max(1, len(old)))
        if not beside:
            for worker in old:
                self.retire(worker)
            await reroute()
        self.config = config or previous
        try:
            await self._start([spec] * max(1, len(old)), timeout_s)
        except ConfigError:
            self.config = previous
            if not beside:
                await self._start([self.specs[task]] * len(old), timeout_s)
            raise
        self.specs[task] = spec
        if beside:
            for worker in old:
                self.retire(worker)

    @staticmethod
    def _free_for(spec: PoolSpec, actors: int) -> bool:
        """The cluster has free now what `actors` more of the pool's actors ask for."""
        free = ray.available_resources()
        return all(free.get(name, 0) + 1e-9 >= actors * amount for name, amount in _asks(spec).items() if amount > 0)

    async def _start(self, specs: list[PoolSpec], timeout_s: float) -> None:
        """Start actors and register those that answer within `timeout_s` (with the devices their
        models run on); none gets work before it is ready, and one that never answers, or fails to
        load its models where it was asked to, is killed, not left to swallow work."""
        started = []
        for spec in specs:
            number = next(self._ids)
            started.append((Worker(f"{spec.task}-{number}", spec.task),
                            self.factory(spec, self.config, f"{spec.task}-{number}")))
        results = await asyncio.gather(*[asyncio.wait_for(h.devices.remote(), timeout_s) for _, h in started],
                                       return_exceptions=True)
        failed = []
        for (worker, handle), result in zip(started, results):
            if isinstance(result, BaseException):
                failed.append((worker.worker_id, result))
                ray.kill(handle)
            else:
                worker.handle = handle
                self.devices[worker.worker_id] = result
                self.policy.add_worker(worker)
        if failed:
            timed_out = any(isinstance(e, asyncio.TimeoutError) for _, e in failed)
            why = (f"not running after {timeout_s:.0f} s: the cluster lacks the resources they ask for "
                   f"({ray.available_resources()} available)" if timed_out else f"failed to start: {failed[0][1]}")
            raise ConfigError(f"pool actor(s) {', '.join(w for w, _ in failed)} {why}")

    def workers(self, task: str) -> list[Worker]:
        return [w for w in self.policy.workers.values() if w.task == task and not w.retired]

    def retire(self, worker: Worker) -> None:
        worker.retired = True
        # a recognition actor's calls come from the trackers: it stops once they are routed away
        # from it and their calls to it are answered (release_retired)
        if worker.task == "detection" and not worker.busy:
            self.release(worker)

    def release_retired(self) -> None:
        for worker in [w for w in self.policy.workers.values() if w.retired and w.task != "detection"]:
            self.release(worker)

    def release(self, worker: Worker) -> None:
        self.policy.remove_worker(worker.worker_id)
        self.devices.pop(worker.worker_id, None)
        ray.kill(worker.handle)

    def restart(self, worker: Worker) -> None:
        """An actor that overran its call deadline: kill it; Ray restarts it (max_restarts) with
        fresh state, and the worker gets work again once the new process is up."""
        ray.kill(worker.handle, no_restart=False)

    def placement(self) -> dict[str, dict[str, str]]:
        """task -> model -> the devices its live actors run it on ("cpu", "cuda:0", ...)."""
        out: dict[str, dict[str, set[str]]] = {}
        for worker in self.policy.workers.values():
            if not worker.retired:
                for model, device in self.devices.get(worker.worker_id, {}).items():
                    out.setdefault(worker.task, {}).setdefault(model, set()).add(device)
        return {task: {m: ", ".join(sorted(d)) for m, d in models.items()} for task, models in out.items()}

    def sizes(self) -> dict[str, int]:
        return {t: len(self.workers(t)) for t in TASKS}

    def shutdown(self) -> None:
        for worker in list(self.policy.workers.values()):
            self.release(worker)

