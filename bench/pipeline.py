"""The actor pipeline against the sequential baseline, and live mode at a camera's frame rate,
measured in one run on one machine, with CPU by actor class for each run."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.cpu import CpuByClass, CpuMeter
from bench.overload import SampledRun, _percentiles, sampled_run
from core.budget import BudgetConfig
from core.config import PipelineConfig
from core.events import read_events

# every task on every face of every frame: the same work as the sequential baseline
EVERY_FRAME = BudgetConfig(expression_interval_s=0.0, age_gender_interval_s=0.0, age_gender_refresh_s=0.0,
                           identity_refresh_s=0.0, identity_unknown_refresh_s=0.0, identity_per_frame=0)
# the models' own processes; everything else is orchestration
MODEL_CLASSES = ("DetectorActor", "ExpressionActor", "AgeGenderActor", "IdentityActor")


@dataclass(frozen=True, slots=True)
class PipelineFigures:
    label: str
    frames: int
    seconds: float
    fresh_share: float
    p50_ms: float
    p95_ms: float
    dropped: int
    cpu: CpuByClass

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def run_pipeline(video: str, out: Path, label: str, budget: BudgetConfig | None = None, mode: str = "lossless",
                 realtime: bool = False, video_out: bool = True) -> PipelineFigures:
    from actors.pipeline import Pipeline

    config = PipelineConfig(sources=(video,), mode=mode, realtime=realtime, video=video_out)
    if budget is not None:
        config = replace(config, budget=budget)
    pipeline = Pipeline(config, out)
    pipeline.start()
    with CpuMeter() as meter:
        start = time.perf_counter()
        result = pipeline.run()
        seconds = time.perf_counter() - start
    e2e = result.summary.stages.get("end_to_end")
    return PipelineFigures(label, result.summary.processed, seconds, result.fresh_share,
                           e2e.p50_ms if e2e else 0.0, e2e.p95_ms if e2e else 0.0,
                           sum(result.summary.dropped.values()), meter.result())


@dataclass(frozen=True, slots=True)
class LiveFigures:
    label: str
    streams: int
    run: SampledRun
    boxed_share: float  # output frames with at least one box drawn
    truth_boxed_share: float  # frames of the source where the ground truth has a face

    @property
    def processed_share(self) -> float:
        s = self.run.result.summary
        return s.processed / max(s.captured, 1)


def live_run(video: str, out: Path, label: str, seconds: float, streams: int = 1,
             truth: Path | None = None) -> LiveFigures:
    """`streams` copies of the video played as looping cameras at their frame rate, in live mode."""
    config = PipelineConfig(sources=(video,) * streams, mode="live", realtime=True, loop=True, duration=seconds)
    run = sampled_run(config, out)
    frames = [e for e in read_events(run.result.events) if e["type"] == "frame"]
    boxed = sum(1 for e in frames if e["faces"]) / max(len(frames), 1)
    truth_share = math.nan
    if truth is not None and truth.exists():
        rows = np.loadtxt(truth, delimiter=",", ndmin=2)
        total = int(rows[:, 0].max()) if len(rows) else 1
        truth_share = len(set(rows[:, 0].astype(int))) / total
    return LiveFigures(label, streams, run, boxed, truth_share)


def cpu_table(runs: list[tuple[str, CpuByClass, int]], media: dict[str, float] | None = None) -> str:
    """ms of CPU per processed frame by actor class, one column per run; orchestration is every
    process but the models'."""
    classes = sorted({c for _, cpu, _ in runs for c in cpu.seconds},
                     key=lambda c: (c not in MODEL_CLASSES, c))
    rows = ["| process | " + " | ".join(label for label, _, _ in runs) + " |",
            "|---|" + "---|" * len(runs)]
    per_frame = [cpu.per_frame_ms(frames) for _, cpu, frames in runs]
    for name in classes:
        rows.append(f"| {name} | " + " | ".join(f"{pf.get(name, 0.0):.1f}" for pf in per_frame) + " |")
    models = [sum(v for k, v in pf.items() if k in MODEL_CLASSES) for pf in per_frame]
    other = [sum(v for k, v in pf.items() if k not in MODEL_CLASSES) for pf in per_frame]
    rows.append("| **models** | " + " | ".join(f"**{v:.1f}**" for v in models) + " |")
    rows.append("| **orchestration** (all but the models) | " + " | ".join(f"**{v:.1f}**" for v in other) + " |")
    if media:
        total = sum(media.values())
        rows.append("\nOf orchestration, media work any design does (one process, ms a frame): "
                    + ", ".join(f"{k} {v:.1f}" for k, v in media.items()) + f"; {total:.1f} in all.")
    return "\n".join(rows)


def format_live(runs: list[LiveFigures]) -> str:
    rows = ["| run | streams | seconds | captured | processed | of which carried | dropped | capture→annotated "
            "p50 / p95 ms | p95 first / last minute ms | expression ≤ 0.5 s old | frames with boxes (truth) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for live in runs:
        s = live.run.result.summary
        e2e = s.stages.get("end_to_end")
        first, last = _percentiles(live.run.first()), _percentiles(live.run.last())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.dropped.items())) or "0"
        rows.append(f"| {live.label} | {live.streams} | {live.run.seconds:.0f} | {s.captured} | "
                    f"{s.processed} ({live.processed_share:.1%}) | {s.carried} ({s.carried / max(s.processed, 1):.0%}) | "
                    f"{reasons} | {e2e.p50_ms:.0f} / {e2e.p95_ms:.0f} | {first[1]:.0f} / {last[1]:.0f} | "
                    f"{live.run.result.fresh_share:.1%} | {live.boxed_share:.1%} ({live.truth_boxed_share:.1%}) |"
                    if e2e else f"| {live.label} | {live.streams} | no frame processed |")
    return "\n".join(rows)


def media_cost_ms(video: str, frames: int = 100, out: Path = Path("/tmp")) -> dict[str, float]:
    """CPU ms a frame of the media work every pipeline does whatever its design: decoding the
    source, putting the frame into the object store, drawing three labelled faces, encoding the
    annotated video. Measured in this one process, one step at a time."""
    import tempfile
    import cv2
    import ray

    from core.draw import FaceLabel, draw_faces

    labels = [FaceLabel((100.0 + 150 * i, 100.0, 200.0 + 150 * i, 220.0), (f"#{i}", "male 34", "happy"), i)
              for i in range(3)]
    totals = dict.fromkeys(("decode", "object store put", "draw", "encode"), 0.0)
    source = cv2.VideoCapture(video)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        writer = None
        for _ in range(frames):
            t0 = time.process_time()
            ok, image = source.read()
            if not ok:
                source.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, image = source.read()
            image = image[:, :, ::-1]
            t1 = time.process_time()
            ray.put(image)
            t2 = time.process_time()
            drawn = draw_faces(image, labels)
            t3 = time.process_time()
            writer = writer or cv2.VideoWriter(str(Path(tmp) / "m.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25,
                                               (image.shape[1], image.shape[0]))
            writer.write(drawn[:, :, ::-1])
            t4 = time.process_time()
            for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                totals[key] += dt
        writer.release()
    return {key: 1000 * v / frames for key, v in totals.items()}


def hop_cost_ms(shape=(480, 640, 3), repeats: int = 100) -> float:
    """ms to put one frame into the object store and get it back in another process's view."""
    import ray

    @ray.remote(num_cpus=0)
    def touch(frames):
        return ray.get(frames[0]).shape[0]

    frame = np.random.default_rng(0).integers(0, 255, shape, np.uint8)
    ray.get(touch.remote([ray.put(frame)]))
    start = time.perf_counter()
    for _ in range(repeats):
        ray.get(touch.remote([ray.put(frame)]))
    return 1000 * (time.perf_counter() - start) / repeats


def ray_costs_ms(repeats: int = 400) -> dict[str, float]:
    """CPU ms, summed over every process of the run (both actors, the raylet, the GCS), of the
    operations a frame handle pipeline is made of, measured between two actors on this machine with
    the cluster's idle CPU taken off: an actor call with small arguments, putting a 640×480 frame
    into the object store, and passing a frame's handle in a call whose callee fetches the frame."""
    import psutil
    import ray

    @ray.remote(num_cpus=0)
    class Callee:
        def small(self, seq: int) -> None:
            return None

        def fetch(self, boxed: list) -> None:
            ray.get(boxed[0])

    @ray.remote(num_cpus=0)
    class Caller:
        def __init__(self, callee):
            self.callee = callee

        def go(self, kind: str, n: int) -> None:
            frame = np.zeros((480, 640, 3), np.uint8)
            pending = []
            for seq in range(n):
                if kind == "actor call":
                    pending.append(self.callee.small.remote(seq))
                elif kind == "frame put":
                    pending.append(ray.put(frame))
                else:
                    pending.append(self.callee.fetch.remote([ray.put(frame)]))
                if len(pending) > 16:
                    ray.get(pending[:8])
                    pending = pending[8:]
            ray.get(pending)

    def cpu_s() -> float:
        total = 0.0
        for process in psutil.Process().children(recursive=True):
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total

    caller = Caller.remote(Callee.remote())
    ray.get(caller.go.remote("actor call", 50))
    idle_from, idle_start = cpu_s(), time.perf_counter()
    time.sleep(3.0)  # the cluster's own idle CPU, to take off each measurement
    idle_per_s = (cpu_s() - idle_from) / (time.perf_counter() - idle_start)
    costs = {}
    for kind in ("actor call", "frame put", "frame put + handle passed + fetched"):
        before, start = cpu_s(), time.perf_counter()
        ray.get(caller.go.remote(kind, repeats))
        spent = cpu_s() - before - idle_per_s * (time.perf_counter() - start)
        costs[kind] = 1000 * spent / repeats
    ray.kill(caller)
    return costs


# what one frame needs of Ray in this design: admit, detect, detections to the tracker, its
# recognition jobs to the scheduler and on to two pools, a share of the batched reports; the frame
# put once and fetched by the detector, the tracker and two pools (which cut their chips from it)
FRAME_NEEDS = {"actor call": 5.5, "frame put": 1, "frame put + handle passed + fetched": 4}


def format_ray_costs(costs: dict[str, float]) -> str:
    """The floor Ray's own operations put under orchestration in this design."""
    fetched = costs["frame put + handle passed + fetched"] - costs["frame put"]
    floor = (FRAME_NEEDS["actor call"] * costs["actor call"] + FRAME_NEEDS["frame put"] * costs["frame put"]
             + FRAME_NEEDS["frame put + handle passed + fetched"] * fetched)
    return ("What Ray's operations cost here, CPU ms summed over every process, cluster idle taken off "
            f"(`bench/pipeline.py` ray_costs_ms): an actor call {costs['actor call']:.2f}, putting a 640×480 frame "
            f"{costs['frame put']:.2f}, passing its handle to an actor that fetches it {fetched:.2f} more. A frame "
            f"here needs about {FRAME_NEEDS['actor call']:g} calls, {FRAME_NEEDS['frame put']} put (the frame) "
            f"and {FRAME_NEEDS['frame put + handle passed + fetched']} fetches (detector, tracker, two pools): "
            f"{floor:.1f} ms a frame before any work of ours.")


@dataclass(frozen=True, slots=True)
class StreamsFigures:
    """`streams` copies of one video played live at once, each scored against its ground truth."""

    streams: int
    captured: int
    processed: int
    carried: int
    p95_ms: float
    idf1: tuple[float, ...]  # per stream
    switches: tuple[int, ...]
    calls_per_frame: float = math.nan  # Ray actor calls a captured frame, the run's own count
    fetches_per_frame: float = math.nan

    @property
    def annotated_share(self) -> float:
        return self.processed / max(self.captured, 1)

    @property
    def detected_share(self) -> float:
        return (self.processed - self.carried) / max(self.captured, 1)


def camera_run(sources: tuple[str, ...], out: Path, **changes):
    """`sources` played once as live cameras at their frame rate, events only (`changes`: config
    fields set otherwise): the run's result, its events and its capture→annotated p95 in ms."""
    from actors.pipeline import Pipeline

    config = PipelineConfig(sources=sources, mode="live", realtime=True, loop=False, video=False, **changes)
    result = Pipeline(config, out).run()
    e2e = result.summary.stages.get("end_to_end")
    return result, list(read_events(result.events)), e2e.p95_ms if e2e else math.nan


def streams_run(video: str, gt: Path, truth: Path | None, out: Path, streams: int) -> StreamsFigures:
    """One pass of `video` on `streams` cameras at its frame rate, live, events only; every stream's
    tracks scored over every frame (frames it did not annotate are misses)."""
    from core.sources import stream_name
    from core.trackscore import score_tracks

    result, events, p95 = camera_run((video,) * streams, out)
    scores = [score_tracks(events, gt, truth, stream=stream_name(video, i)) for i in range(streams)]
    s = result.summary
    return StreamsFigures(streams, s.captured, s.processed, s.carried, p95,
                          tuple(sc.idf1 for sc in scores), tuple(sc.id_switches for sc in scores),
                          *result.traffic.per_frame(s.captured))


def format_streams(runs: list[StreamsFigures]) -> str:
    rows = ["| streams | annotated | detected (not carried) | capture→annotated p95 ms | IDF1 worst stream "
            "| IDF1 mean | id switches (all streams) | Ray calls a frame | frame fetches a frame |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        rows.append(f"| {r.streams} | {r.annotated_share:.1%} | {r.detected_share:.1%} | {r.p95_ms:.0f} | "
                    f"{min(r.idf1):.3f} | {np.mean(r.idf1):.3f} | {sum(r.switches)} | {r.calls_per_frame:.2f} | "
                    f"{r.fetches_per_frame:.2f} |")
    return "\n".join(rows)


@dataclass(frozen=True, slots=True)
class MixedFigures:
    """One camera with people crossing among cameras with nobody in view, on one detector."""

    need: bool  # detection weighed by need (core/need.py), or streams served in turn
    empties: int
    idf1: float  # of the camera with people
    detected_share: float  # of its frames the detector saw
    empty_detected_share: float  # of the empty cameras' frames, on average
    first_face_s: float  # from the first face in view to its first confirmed box on the busy camera
    p95_ms: float


def faceless_video(video: str, frames: int, path: Path) -> str:
    """`video`'s frames before its first face (crossing_faces: 0-49), played back and forth for
    `frames` frames: a camera with the scene and nobody in it."""
    import cv2

    capture, still = cv2.VideoCapture(video), []
    while len(still) < 50:
        ok, image = capture.read()
        if not ok:
            break
        still.append(image)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, still[0].shape[1::-1])
    cycle = still + still[-2:0:-1]
    for k in range(frames):
        writer.write(cycle[k % len(cycle)])
    writer.release()
    return str(path)


def mixed_run(video: str, gt: Path, truth: Path | None, out: Path, empties: int, need: bool) -> MixedFigures:
    """`video` (with ground truth) on one camera and `empties` cameras of its empty scene, live,
    events only, at its frame rate."""
    import cv2

    from core.need import NeedConfig
    from core.sources import stream_name
    from core.trackscore import TENTATIVE, load_mot_gt, score_tracks

    capture = cv2.VideoCapture(video)
    frames, fps = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), capture.get(cv2.CAP_PROP_FPS) or 25.0
    empty = faceless_video(video, frames, out / "empty.mp4")
    result, events, p95 = camera_run((video, *(empty,) * empties), out / ("need" if need else "in-turn"),
                                     need=NeedConfig(enabled=need))
    busy = stream_name(video, 0)
    score = score_tracks(events, gt, truth, stream=busy)
    first_truth = min(load_mot_gt(gt)) - 1  # MOT frames count from 1
    confirmed = [e["seq"] for e in events if e["type"] == "frame" and e["stream"] == busy
                 and any(f["track_id"] != TENTATIVE for f in e["faces"])]
    s = result.summary
    empty_detected = [s.detected.get(stream_name(empty, i), 0) / frames for i in range(1, empties + 1)]
    return MixedFigures(need, empties, score.idf1, s.detected.get(busy, 0) / frames, float(np.mean(empty_detected)),
                        (min(confirmed) - first_truth) / fps if confirmed else math.nan, p95)


def format_mixed(runs: list[MixedFigures]) -> str:
    rows = ["| detection goes | cameras | IDF1, camera with people | its frames detected | empty cameras' frames "
            "detected | first face confirmed after s | capture→annotated p95 ms |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        rows.append(f"| {'by need' if r.need else 'in turn'} | 1 + {r.empties} empty | {r.idf1:.3f} | "
                    f"{r.detected_share:.1%} | {r.empty_detected_share:.1%} | {r.first_face_s:.2f} | {r.p95_ms:.0f} |")
    return "\n".join(rows)
