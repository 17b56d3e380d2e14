"""facelive benchmarks: per-model cost on real faces, the sequential baseline, and (where built)
the pipeline and gallery figures. Prints a markdown report and writes it to --out."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm  # noqa: E402

from bench.gallery import format_gallery_table, gallery_benchmark  # noqa: E402
from bench.models import format_costs, model_costs  # noqa: E402
from bench.overload import format_overload, overload_benchmark  # noqa: E402
from bench.pipeline import EVERY_FRAME, hop_cost_ms, run_pipeline  # noqa: E402
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


def pipeline_section(args, baseline_fps: float, baseline_s_per_frame: float) -> str:
    """The actor pipeline on a local 2-CPU Ray, in the same run as the baseline it is divided by."""
    import ray

    from actors.cluster import local_only_environment

    local_only_environment()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="warning",
             runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}})
    try:
        runs = []
        for label, budget, mode, realtime in (
                ("every face every frame (lossless)", EVERY_FRAME, "lossless", False),
                ("per-track budget (lossless)", None, "lossless", False),
                ("per-track budget, live at the video's 25 fps", None, "live", True)):
            print(f"pipeline: {label}", file=sys.stderr)
            runs.append(run_pipeline(args.video, args.work / label.split(" (")[0].replace(" ", "-"), label, budget,
                                     mode, realtime))
        hop = hop_cost_ms()
    finally:
        ray.shutdown()
    rows = ["| run | frames | frames/s | ÷ baseline | capture→annotated p50 / p95 ms | dropped | attributes < 0.5 s old |",
            "|---|---|---|---|---|---|---|"]
    for r in runs:
        rows.append(f"| {r.label} | {r.frames} | {r.fps:.2f} | {r.fps / baseline_fps:.2f}× | {r.p50_ms:.0f} / {r.p95_ms:.0f} "
                    f"| {r.dropped} | {r.fresh_share:.0%} |")
    return ("## Actor pipeline vs. the sequential baseline (same run)\n\n"
            f"Divided by the faster baseline loop ({baseline_fps:.2f} frames/s). Live mode reads the file as a "
            "camera at its own frame rate, so its frames/s is capped at 25.\n\n" + "\n".join(rows) +
            f"\n\nObject-store hop (ray.put of a 640×480 frame + a task that ray.get()s it): {hop:.2f} ms = "
            f"{hop / (1000 * baseline_s_per_frame):.3f} of the per-frame model time ({1000 * baseline_s_per_frame:.0f} ms).")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="launch/bench.py", description=__doc__)
    p.add_argument("--video", default=str(SAMPLE), help="video for the baseline (default: the bundled sample)")
    p.add_argument("--frames", type=int, default=300, help="frames of the baseline run (default 300)")
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="report file (default BENCHMARKS.md)")
    p.add_argument("--gallery-size", type=int, default=1_000_000, help="embeddings in the gallery benchmark (0: skip)")
    p.add_argument("--overload-seconds", type=float, default=300,
                   help="seconds of the live run fed 4x its capacity (default 300; 0: skip)")
    p.add_argument("--work", type=Path, default=Path("out/bench"), help="folder for the pipeline runs' outputs")
    args = p.parse_args(argv)

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
    sections.append(pipeline_section(args, max(b.fps for b in baseline.values()),
                                     baseline["one thread per library"].seconds / baseline["one thread per library"].frames))
    if args.overload_seconds:
        print(f"overload: capacity, then {args.overload_seconds:.0f} s live at 4x it", file=sys.stderr)
        sections.append(format_overload(overload_benchmark(args.overload_seconds, args.work / "overload", args.video)))
    if args.gallery_size:
        print(f"gallery benchmark: {args.gallery_size:,} embeddings (a few minutes)", file=sys.stderr)
        sections.append(f"## Gallery ({args.gallery_size:,} x 128)\n\n" +
                        format_gallery_table(gallery_benchmark(n=args.gallery_size)))
    report = "\n\n".join(sections) + "\n"
    print(report)
    args.out.write_text(report)
    from bench.charts import write_charts

    for chart in write_charts(report, args.out.resolve().parent / "docs"):
        print(f"chart: {chart}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
