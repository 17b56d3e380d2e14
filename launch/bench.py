"""facelive benchmarks: per-model cost on real faces, the sequential baseline, and (where built)
the pipeline and gallery figures. Prints a markdown report and writes it to --out."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm  # noqa: E402

from bench.gallery import format_gallery_table, gallery_benchmark  # noqa: E402
from bench.models import format_costs, model_costs  # noqa: E402
from bench.overload import format_overload, format_soak, overload_benchmark, soak_run  # noqa: E402
from bench.pipeline import (EVERY_FRAME, cpu_table, format_live, format_mixed, format_ray_costs,  # noqa: E402
                            format_streams, hop_cost_ms, live_run, media_cost_ms, mixed_run, ray_costs_ms,
                            run_pipeline, streams_run)
from bench.report import replace_section  # noqa: E402
from models.analyzer import FaceAnalyzer  # noqa: E402
from models.baseline import run_sequential  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "media" / "video" / "crossing_faces.mp4"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def start_local_ray() -> None:
    """A local Ray on 127.0.0.1 with this machine's CPUs, its workers set up as the demo's are."""
    import ray

    from actors.cluster import local_only_environment, worker_env

    local_only_environment()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="warning",
             runtime_env={"env_vars": worker_env()})


def pipeline_section(args, baseline_fps: float, baseline_s_per_frame: float) -> list[str]:
    """The actor pipeline on a local Ray with this machine's CPUs, in the same run as the baseline
    it is divided by: lossless runs, live runs at the camera's rate, CPU by actor class, and the
    overload and soak runs."""
    import ray

    start_local_ray()
    sections = []
    try:
        runs = []
        # "events only": what the sequential loop puts out too (no annotated video to draw and encode)
        for label, budget, video in (("every face every frame", EVERY_FRAME, True), ("per-track budget", None, True),
                                     ("every face every frame, events only", EVERY_FRAME, False),
                                     ("per-track budget, events only", None, False)):
            print(f"pipeline: {label} (lossless)", file=sys.stderr)
            runs.append(run_pipeline(args.video, args.work / re.sub(r"\W+", "-", label), label, budget, video_out=video))
        truth = Path(args.video).with_suffix(".gt.txt")
        lives = []
        if args.live_seconds:
            for streams in (1, 2):
                label = f"live, {streams} stream{'s' if streams > 1 else ''} at 25 fps"
                print(f"pipeline: {label}, {args.live_seconds:.0f} s", file=sys.stderr)
                seconds = args.live_seconds if streams == 1 else min(args.live_seconds, 120)
                lives.append(live_run(args.video, args.work / f"live-{streams}", label, seconds, streams, truth))
        hop = hop_cost_ms()
        media = media_cost_ms(args.video)
        ray_costs = ray_costs_ms()
        rows = ["| run (lossless) | frames | frames/s | ÷ baseline | capture→annotated p50 / p95 ms | dropped "
                "| attributes < 0.5 s old |", "|---|---|---|---|---|---|---|"]
        for r in runs:
            rows.append(f"| {r.label} | {r.frames} | {r.fps:.2f} | {r.fps / baseline_fps:.2f}× | {r.p50_ms:.0f} / "
                        f"{r.p95_ms:.0f} | {r.dropped} | {r.fresh_share:.0%} |")
        sections.append(
            "## Actor pipeline vs. the sequential baseline (same run)\n\n"
            f"Lossless runs over {Path(args.video).name}, divided by the faster baseline loop ({baseline_fps:.2f} "
            "frames/s). The loop puts out each face's attributes and nothing else; the pipeline also tracks, "
            "fuses and writes events, and by default draws and encodes an annotated video. \"Events only\" "
            "(`--no-video`) leaves the video out, so its trackers never fetch a frame.\n\n" + "\n".join(rows) +
            f"\n\nObject-store hop (ray.put of a 640×480 frame + a task that ray.get()s it): {hop:.2f} ms = "
            f"{hop / (1000 * baseline_s_per_frame):.3f} of the per-frame model time ({1000 * baseline_s_per_frame:.0f} ms).")
        if lives:
            sections.append(
                "## Live: the sample played as a looping camera at 25 fps\n\n"
                "Processed frames include those the detector could not take in time: they are shown with the "
                "tracks' predicted boxes (\"carried\"), as DeepStream's detection interval does, but chosen by "
                "load. Latency is capture to annotated frame; \"expression ≤ 0.5 s old\" counts shown faces of "
                "confirmed tracks whose expression came from a frame at most 0.5 s older (and whose age/gender "
                "is known).\n\n" + format_live(lives))
        cpu_runs = [(r.label, r.cpu, r.frames) for r in runs] + [
            (live.label, live.run.cpu, live.run.result.summary.processed) for live in lives]
        sections.append("## CPU by actor class, ms per processed frame\n\n"
                        "psutil over every process of the run (`bench/cpu.py`), from the moment the model pools "
                        "were up; \"Ray's own\" is raylet, GCS, agents and idle workers.\n\n" + cpu_table(cpu_runs, media)
                        + "\n\n" + format_ray_costs(ray_costs))
        if args.overload_seconds:
            print(f"overload: capacity, then {args.overload_seconds:.0f} s live at 4x it", file=sys.stderr)
            sections.append(format_overload(overload_benchmark(args.overload_seconds, args.work / "overload",
                                                               args.video)))
        if args.soak_seconds:
            print(f"soak: {args.soak_seconds:.0f} s live with --enrol-unknown", file=sys.stderr)
            sections.append(format_soak(soak_run(args.video, args.work / "soak", args.soak_seconds)))
        if args.streams:
            sections.append(streams_section(args))
    finally:
        ray.shutdown()
    return sections


CROSSING = Path(__file__).resolve().parent.parent / "tests" / "media" / "video" / "crossing_faces.mp4"


def streams_section(args) -> str:
    """Cameras per box: the crossing video, which has ground truth, on 1..N cameras at once."""
    runs, gt, truth = [], CROSSING.with_suffix(".gt.txt"), CROSSING.with_suffix(".truth.json")
    for streams in args.streams:
        print(f"streams per box: {streams} live stream(s) of {CROSSING.name}, events only", file=sys.stderr)
        runs.append(streams_run(str(CROSSING), gt, truth, args.work / f"streams-{streams}", streams))
    mixed = []
    for need in (False, True):
        print(f"streams per box: {CROSSING.name} among 3 empty cameras, detection {'by need' if need else 'in turn'}",
              file=sys.stderr)
        mixed.append(mixed_run(str(CROSSING), gt, truth, args.work / "mixed", 3, need))
    return ("## Streams per box: live cameras at 25 fps on this machine\n\n"
            f"{machine()}, {datetime.date.today()}. Each stream plays {CROSSING.name} once at its 25 fps, live and "
            "events only (`--no-video`); every "
            "stream's tracks are scored against the video's ground truth over every frame, so frames left "
            "unannotated count as misses and carried boxes count where they lie. \"Detected\" is the share of "
            "captured frames the detector saw; the rest of the annotated ones show tracked boxes. Ray calls and "
            "fetches are the run's own count (`ray_per_frame` in summary.json).\n\n"
            + format_streams(runs)
            + "\n\nCameras that need detection unequally: the crossing video on one camera, three cameras "
            "showing its scene with nobody in it (its frames before the first face, back and forth). Served in "
            "turn, every camera gets the same share of the detector; by need (`need` in the config, "
            "core/need.py), a camera with nobody in view waits about three times as long, one with fast, new "
            "or missed faces less. \"First face confirmed\" is from the first face's frame in the ground "
            "truth to the first frame showing a confirmed box on that camera.\n\n"
            + format_mixed(mixed))


def streams_only(args) -> int:
    """The streams-per-box table alone, its section replaced in `args.out`."""
    import ray

    from bench.charts import write_charts

    start_local_ray()
    try:
        section = streams_section(args)
    finally:
        ray.shutdown()
    print(section)
    args.out.write_text(replace_section(args.out.read_text() if args.out.exists() else "", section))
    for chart in write_charts(section, args.out.resolve().parent / "docs"):
        print(f"chart: {chart}", file=sys.stderr)
    return 0


def kept_sections(path: Path) -> list[str]:
    """Sections of the previous report that this machine cannot measure (headed "## GPU", taken
    on a lent GPU machine with its card named): carried over as they are."""
    if not path.exists():
        return []
    parts = re.split(r"(?m)^(?=## )", path.read_text())
    return [part.strip() for part in parts if part.startswith("## GPU")]


def soak_only(args) -> int:
    """The soak alone, its section replaced in `args.out`; every other section stays as it is."""
    import ray

    from bench.charts import write_charts

    start_local_ray()
    try:
        print(f"soak: {args.soak_seconds:.0f} s live with --enrol-unknown", file=sys.stderr)
        section = format_soak(soak_run(args.video, args.work / "soak", args.soak_seconds))
    finally:
        ray.shutdown()
    print(section)
    args.out.write_text(replace_section(args.out.read_text() if args.out.exists() else "", section))
    for chart in write_charts(section, args.out.resolve().parent / "docs"):
        print(f"chart: {chart}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="launch/bench.py", description=__doc__)
    p.add_argument("--video", default=str(SAMPLE), help="video for the baseline (default: the bundled sample)")
    p.add_argument("--frames", type=int, default=300, help="frames of the baseline run (default 300)")
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="report file (default BENCHMARKS.md)")
    p.add_argument("--gallery-size", type=int, default=1_000_000, help="embeddings in the gallery benchmark (0: skip)")
    p.add_argument("--live-seconds", type=float, default=300,
                   help="seconds of the live run at the sample's 25 fps (default 300; 0: skip; two streams: at most 120)")
    p.add_argument("--overload-seconds", type=float, default=120,
                   help="seconds of the live run fed 4x its capacity (default 120; 0: skip)")
    p.add_argument("--soak-seconds", type=float, default=600,
                   help="seconds of the live soak with --enrol-unknown, memory sampled (default 600; 0: skip)")
    p.add_argument("--work", type=Path, default=Path("out/bench"), help="folder for the pipeline runs' outputs")
    p.add_argument("--streams", type=lambda text: [int(n) for n in text.split(",") if n], default=[1, 2, 3, 4],
                   help="camera counts of the streams-per-box table, comma-separated (default 1,2,3,4; empty: skip)")
    p.add_argument("--only", choices=("soak", "streams"),
                   help="run only this section and replace it in --out, keeping the rest of the file")
    args = p.parse_args(argv)
    if args.only == "soak":
        return soak_only(args)
    if args.only == "streams":
        return streams_only(args)

    sections = [f"# facelive benchmarks\n\nMachine: {machine()}. Date: {datetime.date.today()}. "
                "Absolute numbers hold for this machine only; compare ratios within one run."]
    pinned = FaceAnalyzer(threads=1)
    sections.append("## Cost per model (one thread per library)\n\n" + format_costs(model_costs(args.video, pinned)))
    rows = ["| loop | frames | faces | frames/s | CPU s per frame |", "|---|---|---|---|---|"]
    baseline = {}
    for label, analyzer in (("library defaults", FaceAnalyzer(threads=os.cpu_count() or 1)), ("one thread per library", pinned)):
        with tqdm(total=args.frames, desc=f"baseline, {label}", unit="frame", file=sys.stderr) as bar:
            r = baseline[label] = run_sequential(args.video, analyzer, args.frames, bar.update)
        rows.append(f"| {label} | {r.frames} | {r.faces} | {r.fps:.2f} | {r.cpu_seconds / r.frames:.3f} |")
    sections.append(f"## Sequential baseline on {Path(args.video).name}\n\nEvery model on every face of every "
                    "frame, one process (`models/baseline.py`).\n\n" + "\n".join(rows))
    sections += pipeline_section(args, max(b.fps for b in baseline.values()),
                                 baseline["one thread per library"].seconds / baseline["one thread per library"].frames)
    if args.gallery_size:
        print(f"gallery benchmark: {args.gallery_size:,} embeddings (a few minutes)", file=sys.stderr)
        sections.append(f"## Gallery ({args.gallery_size:,} x 128)\n\n" +
                        format_gallery_table(gallery_benchmark(n=args.gallery_size)))
    sections += kept_sections(args.out)
    report = "\n\n".join(sections) + "\n"
    print(report)
    args.out.write_text(report)
    from bench.charts import write_charts

    for chart in write_charts(report, args.out.resolve().parent / "docs"):
        print(f"chart: {chart}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
