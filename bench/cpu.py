"""CPU seconds by actor class over a run: every process under this driver (Ray's workers, raylet,
GCS, agents) sampled with psutil while the run goes on, so processes killed at its end still count
up to their last sample."""
from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import psutil

# the process titles of Ray's own processes, by what a reader knows them as
RAY_OWN_CLASS = "Ray's own"
RAY_OWN = {"raylet", "gcs_server", "DashboardAgent", "RuntimeEnvAgent", "IDLE", "log_monitor", "dashboard",
           "monitor", "ray_client_server"}


def process_class(process: psutil.Process) -> str:
    """`ray::facelive:detection-1:DetectorActor.detect` -> DetectorActor; Ray's own processes ->
    "Ray's own"."""
    try:
        name = process.cmdline()[0] if process.cmdline() else process.name()
    except (psutil.Error, IndexError):
        return RAY_OWN_CLASS
    if name.startswith("ray::"):
        actor = name[5:].split(" ")[0].split(".")[0].rsplit(":", 1)[-1]
        return RAY_OWN_CLASS if actor in RAY_OWN else actor
    return RAY_OWN_CLASS


@dataclass(frozen=True, slots=True)
class CpuByClass:
    seconds: dict[str, float]  # class -> CPU seconds (user + system) over the run
    processes: dict[str, int]

    def per_frame_ms(self, frames: int) -> dict[str, float]:
        return {name: 1000 * s / max(frames, 1) for name, s in self.seconds.items()}


class CpuMeter:
    """`with CpuMeter() as meter: run()`, then `meter.result()`. The driver counts as "driver"."""

    def __init__(self, interval_s: float = 0.25):
        self.interval_s = interval_s
        self._me = psutil.Process(os.getpid())
        self._start: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._initial = False
        self._stop = threading.Event()
        self._own_s = 0.0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _cpu(self, process: psutil.Process) -> float:
        t = process.cpu_times()
        return t.user + t.system

    def _sample(self) -> None:
        try:
            children = self._me.children(recursive=True)
        except psutil.Error:
            return
        for process in [self._me, *children]:
            try:
                cpu = self._cpu(process)
                if process.pid not in self._last:
                    name = "driver" if process.pid == self._me.pid else process_class(process)
                    # a process that existed before the run counts from there; a later one from 0
                    self._start[process.pid] = cpu if self._initial else 0.0
                else:
                    name = self._last[process.pid][0]
                    if name == RAY_OWN_CLASS and process.pid != self._me.pid:
                        # an idle worker becomes an actor: its title changes after it starts
                        name = process_class(process)
                self._last[process.pid] = (name, cpu)
            except psutil.Error:
                continue

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()
        # the meter's own sampling is no part of the run: it is taken off the driver's count
        self._own_s = time.thread_time()

    def __enter__(self) -> CpuMeter:
        self._initial = True
        self._sample()
        self._initial = False
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def result(self) -> CpuByClass:
        seconds: dict[str, float] = defaultdict(float)
        processes: dict[str, int] = defaultdict(int)
        for pid, (name, cpu) in self._last.items():
            seconds[name] += cpu - self._start.get(pid, 0.0)
            processes[name] += 1
        seconds["driver"] = max(0.0, seconds["driver"] - self._own_s)
        return CpuByClass(dict(seconds), dict(processes))
