"""Overload (issue 8, item 3): a live run fed `factor` times faster than the pipeline's measured
capacity for minutes, sampling every actor's memory, the object store and end-to-end latency, to
show all three stay bounded and that every captured frame is counted as processed or dropped."""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import psutil
import ray
from ray._private import internal_api  # object-store use, as `ray memory` reports it
from ray.exceptions import GetTimeoutError, RayActorError

from bench.cpu import RAY_OWN_CLASS, CpuByClass, CpuMeter, process_class
from core.config import PipelineConfig
from schedulers.scheduler import RunSummary

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "media" / "video" / "crossing_faces.mp4"
MB = 2**20


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds since the overload run started
    summary: RunSummary | None  # None: the scheduler did not answer in time
    latencies_ms: tuple[float, ...]  # end-to-end, of the frames finished since the previous answer
    rss: dict[str, tuple[int, ...]]  # actor class -> bytes, one per process
    store_used: int  # object store bytes
    # actor class -> bytes of RSS that are object-store pages the process has touched, one per
    # process: shared with the store (counted in `store_used`), not the process's own memory
    store_pages: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # bytes of primary copies: objects pinned for a live reference. `store_used` also counts
    # objects already freed, which the raylet deletes in batches once a second
    # (`free_objects_period_milliseconds`), so one read of it lands anywhere in that cycle
    # (bench/store_audit.py)
    store_pinned: int = 0

    def own(self, name: str) -> int:
        """The class's RSS without object-store pages."""
        return sum(self.rss.get(name, ())) - sum(self.store_pages.get(name, ()))


@dataclass(frozen=True, slots=True)
class ClassMemory:
    actor_class: str
    processes: int
    first_mb: float  # mean over the first window of the class's summed RSS
    last_mb: float  # the same over the last window
    peak_mb: float  # the largest summed RSS of any sample
    largest_process_mb: float


@dataclass(frozen=True, slots=True)
class Window:
    start_s: float
    end_s: float
    captured: int
    processed: int
    dropped: int
    p50_ms: float
    p95_ms: float
    actors_mb: float  # the largest summed RSS of all actors in the window
    store_mb: float  # the largest object store use in the window


@dataclass(frozen=True, slots=True)
class OverloadResult:
    capture_s: float  # how long the source was read
    seconds: float  # wall time of the overload run, set-up and drain included
    interval_s: float  # between samples
    capacity_fps: float  # lossless, unpaced: what the pipeline processes when never starved
    header_fps: float  # the rate the input file is paced at
    summary: RunSummary
    window_s: float  # length of the first/last windows compared
    latency_first: tuple[float, float]  # end-to-end p50, p95 ms over the first window
    latency_last: tuple[float, float]  # the same over the last window
    windows: tuple[Window, ...]
    memory: tuple[ClassMemory, ...]
    store_peak_mb: float
    store_capacity_mb: float
    spilled_mb: float
    samples: tuple[Sample, ...]

    @property
    def input_fps(self) -> float:
        return self.summary.captured / self.capture_s

    @property
    def processed_fps(self) -> float:
        return self.summary.processed / self.capture_s

    @property
    def overload(self) -> float:
        return self.summary.captured / max(self.summary.processed, 1)

    @property
    def balanced(self) -> bool:
        return self.summary.captured == self.summary.processed + sum(self.summary.dropped.values())


def _scheduler_probe(scheduler, seen: int) -> tuple[RunSummary, list[float]]:
    """Runs in the scheduler's process (`__ray_call__`): its summary, and the end-to-end latencies
    (s) of the frames finished after the first `seen`. The summary's percentiles cover the whole run,
    so telling the last minute from the first needs the raw latencies, which only its stats hold."""
    summary = scheduler.summary()
    done = summary.stages["end_to_end"].count if "end_to_end" in summary.stages else 0
    latencies = scheduler.stats._latency.get("end_to_end", ())
    fresh = min(done - seen, len(latencies))
    return summary, list(latencies)[len(latencies) - fresh:]


def store_pages(pid: int) -> int:
    """Bytes of `pid`'s RSS in its mapping of the object store (plasma's shared file): pages of
    objects the process has read or written. They grow as the store hands out fresh addresses,
    up to the store's own footprint, and belong to the store, not the process."""
    total, in_store = 0, False
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                in_store = "/plasma" in line
            elif in_store and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total


def actor_memory() -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """RSS of every Ray worker this process started and the object-store pages in it, by actor
    class. Descendants only: another Ray on the same machine (a test run) is not ours. A worker's
    title is `ray::Class`, or `ray::Class.method` while it runs one."""
    rss: dict[str, list[int]] = {}
    pages: dict[str, list[int]] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
            if not title.startswith("ray::"):
                continue
            name = process_class(proc)
            if name == RAY_OWN_CLASS:
                continue
            process_rss, process_pages = proc.memory_info().rss, store_pages(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError, ProcessLookupError):
            continue
        rss.setdefault(name, []).append(process_rss)
        pages.setdefault(name, []).append(process_pages)
    return ({name: tuple(v) for name, v in rss.items()}, {name: tuple(v) for name, v in pages.items()})


def paced_copy(video: str, fps: float, path: Path) -> Path:
    """The video re-encoded with `fps` in its header: live capture plays a file at its header rate,
    so this turns the sample into a camera faster than the pipeline."""
    source = cv2.VideoCapture(video)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        while True:
            ok, frame = source.read()
            if not ok:
                break
            if writer is None:
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         (frame.shape[1], frame.shape[0]))
            writer.write(frame)
    finally:
        source.release()
        if writer is not None:
            writer.release()
    if writer is None:
        raise ValueError(f"{video}: no frames to copy")
    return path


def measure_capacity(video: str, out: Path, seconds: float = 30.0) -> float:
    """Frames/s the pipeline processes in lossless mode with the source never making it wait."""
    from actors.pipeline import Pipeline

    pipeline = Pipeline(PipelineConfig(sources=(video,), mode="lossless", realtime=False, loop=True,
                                       duration=seconds), out)
    pipeline.start()
    start = time.monotonic()
    result = pipeline.run()
    return result.summary.processed / (time.monotonic() - start)


class _Sampler(threading.Thread):
    def __init__(self, scheduler, interval_s: float):
        super().__init__(daemon=True)
        self.scheduler, self.interval_s = scheduler, interval_s
        self.samples: list[Sample] = []
        self.stop = threading.Event()
        self.start_time = time.monotonic()
        self._state = internal_api.get_state_from_address(ray.get_runtime_context().gcs_address)
        self.store_capacity = self.spilled = 0
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self._sample()
        except Exception as error:  # noqa: BLE001 -- a thread's exception would otherwise only be printed
            self.error = error

    def _sample(self) -> None:
        seen = 0
        while not self.stop.is_set():
            t = time.monotonic() - self.start_time
            try:
                summary, latencies = ray.get(self.scheduler.__ray_call__.remote(_scheduler_probe, seen),
                                             timeout=self.interval_s)
                seen += len(latencies)
            except (GetTimeoutError, RayActorError):
                summary, latencies = None, []
            store = internal_api.get_memory_info_reply(self._state).store_stats
            self.store_capacity, self.spilled = store.object_store_bytes_avail, store.spilled_bytes_total
            rss, pages = actor_memory()
            self.samples.append(Sample(t, summary, tuple(1000 * s for s in latencies), rss,
                                       store.object_store_bytes_used, pages, store.object_store_bytes_primary_copy))
            self.stop.wait(max(0.0, self.start_time + len(self.samples) * self.interval_s - time.monotonic()))


def _percentiles(group: list[Sample]) -> tuple[float, float]:
    latencies = [ms for s in group for ms in s.latencies_ms]
    return tuple(float(v) for v in np.percentile(latencies, [50, 95])) if latencies else (math.nan, math.nan)


def _windows(samples: list[Sample], window_s: float, end_s: float) -> tuple[Window, ...]:
    """Consecutive windows of `window_s`, the last stretched to `end_s` (it holds the drain)."""
    out = []
    previous = RunSummary(0, 0, {}, {}, 0, 0.0)
    count = max(1, round(end_s / window_s))
    for k in range(count):
        start, end = k * window_s, (k + 1) * window_s if k < count - 1 else math.inf
        inside = [s for s in samples if start <= s.t < end]
        answered = [s.summary for s in inside if s.summary is not None]
        current = answered[-1] if answered else previous
        out.append(Window(start, min(end, end_s), current.captured - previous.captured,
                          current.processed - previous.processed,
                          sum(current.dropped.values()) - sum(previous.dropped.values()), *_percentiles(inside),
                          max((sum(sum(v) for v in s.rss.values()) for s in inside), default=0) / MB,
                          max((s.store_used for s in inside), default=0) / MB))
        previous = current
    return tuple(out)


def _class_memory(first: list[Sample], last: list[Sample], samples: list[Sample]) -> tuple[ClassMemory, ...]:
    def mean_mb(group: list[Sample], name: str) -> float:
        sums = [sum(s.rss[name]) for s in group if name in s.rss]
        return sum(sums) / len(sums) / MB if sums else math.nan

    names = sorted({name for s in samples for name in s.rss})
    return tuple(ClassMemory(name, max(len(s.rss.get(name, ())) for s in samples), mean_mb(first, name),
                             mean_mb(last, name), max(sum(s.rss.get(name, ())) for s in samples) / MB,
                             max(max(s.rss.get(name, (0,))) for s in samples) / MB) for name in names)


@dataclass(frozen=True, slots=True)
class SampledRun:
    """A pipeline run with the scheduler, memory and object store sampled while it went on."""

    result: object  # actors.pipeline.RunResult
    seconds: float
    interval_s: float
    samples: tuple[Sample, ...]
    store_capacity_mb: float
    spilled_mb: float
    cpu: CpuByClass

    def window_s(self) -> float:
        return min(60.0, self.seconds / 3)

    def first(self) -> list[Sample]:
        return [s for s in self.samples if s.t <= self.window_s()]

    def last(self) -> list[Sample]:
        return [s for s in self.samples if s.t >= self.samples[-1].t - self.window_s()]

    def windows(self) -> tuple[Window, ...]:
        return _windows(list(self.samples), self.window_s(), self.seconds)

    def memory(self) -> tuple[ClassMemory, ...]:
        return _class_memory(self.first(), self.last(), list(self.samples))


def sampled_run(config: PipelineConfig, out: Path, interval_s: float = 5.0) -> SampledRun:
    """Run `config` on the connected local Ray, sampling every `interval_s`; CPU by actor class
    is counted from the moment the pools are up."""
    from actors.pipeline import Pipeline

    pipeline = Pipeline(config, out)
    pipeline.start()
    sampler = _Sampler(pipeline.scheduler, interval_s)
    with CpuMeter() as meter:
        sampler.start()
        try:
            result = pipeline.run()
        finally:
            elapsed = time.monotonic() - sampler.start_time
            sampler.stop.set()
            sampler.join()
    if sampler.error is not None:
        raise sampler.error
    return SampledRun(result, elapsed, interval_s, tuple(sampler.samples), sampler.store_capacity / MB,
                      sampler.spilled / MB, meter.result())


def overload_benchmark(seconds: float = 300, work_dir: Path = Path("out/bench/overload"), video: str = str(SAMPLE),
                       factor: float = 4.0, capacity_seconds: float = 30.0, interval_s: float = 5.0) -> OverloadResult:
    """Measure capacity, then feed a live run `factor` times that for `seconds` (on the connected
    local Ray, so every worker it measures is a child of this process)."""
    work_dir = Path(work_dir)
    capacity = measure_capacity(video, work_dir / "capacity", capacity_seconds)
    header_fps = math.ceil(factor * capacity)
    fast = paced_copy(video, header_fps, work_dir / f"input-{header_fps}fps.mp4")
    run = sampled_run(PipelineConfig(sources=(str(fast),), mode="live", realtime=True, loop=True, duration=seconds),
                      work_dir / "run", interval_s)
    samples = list(run.samples)
    return OverloadResult(seconds, run.seconds, interval_s, capacity, header_fps, run.result.summary, run.window_s(),
                          _percentiles(run.first()), _percentiles(run.last()), run.windows(), run.memory(),
                          max(s.store_used for s in samples) / MB, run.store_capacity_mb, run.spilled_mb,
                          tuple(samples))


def _growth(first: float, last: float) -> str:
    return f"{last - first:+.0f} MB ({(last - first) / first:+.0%})" if first > 0 else "n/a"


def format_overload(r: OverloadResult) -> str:
    s, w = r.summary, r.window_s
    dropped = sum(s.dropped.values())
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(s.dropped.items())) or "none"
    e2e = s.stages.get("end_to_end")
    timeline = [("| seconds | captured | processed | dropped | capture→annotated p50 / p95 ms "
                 "| all actors' RSS MB | object store MB |"), "|---|---|---|---|---|---|---|"]
    for win in r.windows:
        timeline.append(f"| {win.start_s:.0f}–{win.end_s:.0f} | {win.captured} | {win.processed} | {win.dropped} "
                        f"| {win.p50_ms:.0f} / {win.p95_ms:.0f} | {win.actors_mb:.0f} | {win.store_mb:.0f} |")
    memory = [(f"| actor class | processes | RSS first {w:.0f} s MB | RSS last {w:.0f} s MB | change | peak MB "
               "| largest process MB |"), "|---|---|---|---|---|---|---|"]
    for m in r.memory:
        memory.append(f"| {m.actor_class} | {m.processes} | {m.first_mb:.0f} | {m.last_mb:.0f} "
                      f"| {_growth(m.first_mb, m.last_mb)} | {m.peak_mb:.0f} | {m.largest_process_mb:.0f} |")
    total_first = sum(m.first_mb for m in r.memory if not math.isnan(m.first_mb))
    total_last = sum(m.last_mb for m in r.memory if not math.isnan(m.last_mb))
    return (f"## Overload: live input {r.overload:.1f}× what is processed, {r.capture_s:.0f} s\n\n"
            f"Capacity measured first (lossless, the source never waits): {r.capacity_fps:.2f} frames/s. The sample "
            f"video re-encoded with a {r.header_fps:.0f} fps header and played as a looping camera in live mode "
            f"(`bench/overload.py`). Every {r.interval_s:.0f} s: RSS of every actor process (it includes the "
            "object-store pages a process has touched), object-store use, the scheduler's ledger and latencies.\n\n"
            f"- Input {s.captured} frames = {r.input_fps:.2f} frames/s; processed {s.processed} = "
            f"{r.processed_fps:.2f} frames/s; input ÷ processed {r.overload:.2f}×.\n"
            f"- Dropped {dropped} ({reasons}); captured = processed + dropped: "
            f"{'yes' if r.balanced else 'NO'} ({s.captured} = {s.processed} + {dropped}).\n"
            f"- Capture→annotated latency, first {w:.0f} s: p50 {r.latency_first[0]:.0f} ms, p95 "
            f"{r.latency_first[1]:.0f} ms; last {w:.0f} s: p50 {r.latency_last[0]:.0f} ms, p95 {r.latency_last[1]:.0f} ms"
            + (f"; whole run p50 {e2e.p50_ms:.0f} ms, p95 {e2e.p95_ms:.0f} ms.\n" if e2e else ".\n") +
            f"- All actors' RSS, first {w:.0f} s {total_first:.0f} MB, last {w:.0f} s {total_last:.0f} MB "
            f"({_growth(total_first, total_last)}).\n"
            f"- Object store: peak {r.store_peak_mb:.0f} MB of {r.store_capacity_mb:.0f} MB; "
            f"spilled {r.spilled_mb:.0f} MB.\n\n" + "\n".join(timeline) + "\n\n" + "\n".join(memory))


def soak_run(video: str, work_dir: Path, seconds: float = 600, interval_s: float = 5.0) -> SampledRun:
    """A long live run of the looped sample with unknown faces enrolled into a fresh gallery: what
    grows with time (tracks, enrolments, events) must not grow the processes."""
    gallery = Path(work_dir) / "gallery"
    gallery.mkdir(parents=True, exist_ok=True)
    config = PipelineConfig(sources=(video,), mode="live", realtime=True, loop=True, duration=seconds,
                            gallery=str(gallery), enrol_unknown=True)
    return sampled_run(config, Path(work_dir) / "run", interval_s)


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, bytes) points, in MB a minute: a steady leak shows as a
    slope however the windows' means happen to fall; noise averages out."""
    if len(points) < 2 or len({t for t, _ in points}) < 2:
        return math.nan
    t, value = np.array(points, dtype=float).T
    return float(np.polyfit(t, value, 1)[0]) * 60 / MB


@dataclass(frozen=True, slots=True)
class SoakMemory:
    """One actor class over a soak: RSS, and its own memory (RSS without the object-store pages it
    maps), as means over the early and last windows and as a slope from the early window on."""

    actor_class: str
    rss_early_mb: float
    rss_late_mb: float
    rss_slope: float  # MB a minute
    store_pages_late_mb: float
    own_early_mb: float
    own_late_mb: float
    own_slope: float


def soak_memory(samples: list[Sample], window_s: float) -> tuple[SoakMemory, ...]:
    """From `window_s` on (start-up and first enrolments done): the window after it against the
    last one, and the slope over everything in between."""
    early = [s for s in samples if window_s <= s.t < 2 * window_s]
    late = [s for s in samples if s.t >= samples[-1].t - window_s]
    steady = [s for s in samples if s.t >= window_s]

    def mean_mb(group: list[Sample], value) -> float:
        values = [value(s) for s in group]
        return sum(values) / len(values) / MB if values else math.nan

    out = []
    for name in sorted({name for s in samples for name in s.rss}):
        seen = [s for s in steady if name in s.rss]
        out.append(SoakMemory(
            name, mean_mb([s for s in early if name in s.rss], lambda s: sum(s.rss[name])),
            mean_mb([s for s in late if name in s.rss], lambda s: sum(s.rss[name])),
            slope_mb_per_min([(s.t, sum(s.rss[name])) for s in seen]),
            mean_mb([s for s in late if name in s.rss], lambda s: sum(s.store_pages.get(name, ()))),
            mean_mb([s for s in early if name in s.rss], lambda s: s.own(name)),
            mean_mb([s for s in late if name in s.rss], lambda s: s.own(name)),
            slope_mb_per_min([(s.t, s.own(name)) for s in seen])))
    return tuple(out)


def _per_min(slope: float) -> str:
    return f"{slope if abs(slope) >= 0.005 else 0.0:+.2f}"  # no "-0.00" for a flat line


def _change(first: float, last: float) -> float:
    return (last - first) / first if first > 0 else math.nan


def format_soak(run: SampledRun) -> str:
    """Memory of every actor class and the object store, from the second minute (start-up and
    first enrolments done) to the last."""
    samples = list(run.samples)
    window = min(60.0, run.seconds / 4)
    early = [s for s in samples if window <= s.t < 2 * window]
    late = [s for s in samples if s.t >= samples[-1].t - window]
    memory = soak_memory(samples, window)
    s = run.result.summary
    rows = [f"| actor class | RSS {window:.0f}–{2 * window:.0f} s MB | RSS last {window:.0f} s MB | change | MB/min "
            f"| object-store pages in RSS, last {window:.0f} s MB | without them: change | without them: MB/min |",
            "|---|---|---|---|---|---|---|---|"]
    for m in memory:
        rows.append(f"| {m.actor_class} | {m.rss_early_mb:.0f} | {m.rss_late_mb:.0f} "
                    f"| {_growth(m.rss_early_mb, m.rss_late_mb)} | {_per_min(m.rss_slope)} "
                    f"| {m.store_pages_late_mb:.0f} | {_growth(m.own_early_mb, m.own_late_mb)} "
                    f"| {_per_min(m.own_slope)} |")
    # the store holds the frames in flight: its use swings with load, so a window's mean, not its peak
    for label, bytes_of in (("object store use", lambda x: x.store_used),
                            ("object store pinned (live references)", lambda x: x.store_pinned)):
        store_early = sum(bytes_of(x) for x in early) / max(len(early), 1) / MB
        store_late = sum(bytes_of(x) for x in late) / max(len(late), 1) / MB
        store_slope = slope_mb_per_min([(x.t, bytes_of(x)) for x in samples if x.t >= window])
        rows.append(f"| {label} | {store_early:.1f} | {store_late:.1f} | "
                    f"{_growth(store_early, store_late)} | {_per_min(store_slope)} | - | - | - |")
    worst_rss = max(memory, key=lambda m: abs(_change(m.rss_early_mb, m.rss_late_mb)))
    worst_own = max(memory, key=lambda m: abs(_change(m.own_early_mb, m.own_late_mb)))
    return (f"## Soak: {run.seconds:.0f} s live with `--enrol-unknown`\n\n"
            f"The sample looped as a 25 fps camera, unknown faces enrolled into a fresh gallery; memory sampled every "
            f"{run.interval_s:.0f} s (`bench/overload.py`, `launch/bench.py --only soak`). Captured {s.captured}, "
            f"processed {s.processed}, dropped {sum(s.dropped.values())}; {run.result.tracks} tracks. Windows are "
            f"means over {window:.0f} s; MB/min is the least-squares slope of every sample from {window:.0f} s on. A "
            "process's RSS includes the object-store pages it has touched (frames it read): they are the "
            "store's memory, shared and already counted in the store's use, so each class is also shown without "
            "them. Largest change from the second window to the last: RSS "
            f"{_change(worst_rss.rss_early_mb, worst_rss.rss_late_mb):+.1%} ({worst_rss.actor_class}); without "
            f"object-store pages {_change(worst_own.own_early_mb, worst_own.own_late_mb):+.1%} "
            f"({worst_own.actor_class}). The store's use also counts objects already freed: the raylet deletes "
            "them in batches once a second, so a read lands anywhere between the pinned bytes and a second's "
            "worth of frames more (`bench/store_audit.py` reads it 24 times a second); the pinned bytes are what "
            "live references hold.\n\n" + "\n".join(rows))
