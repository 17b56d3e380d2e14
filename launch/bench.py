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

from bench.models import format_costs, model_costs  # noqa: E402
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="launch/bench.py", description=__doc__)
    p.add_argument("--video", default=str(SAMPLE), help="video for the baseline (default: the bundled sample)")
    p.add_argument("--frames", type=int, default=300, help="frames of the baseline run (default 300)")
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="report file (default BENCHMARKS.md)")
    args = p.parse_args(argv)

    sections = [f"# facelive benchmarks\n\nMachine: {machine()}. Date: {datetime.date.today()}. "
                "Absolute numbers hold for this machine only; compare ratios within one run."]
    pinned = FaceAnalyzer(threads=1)
    sections.append("## Cost per model (one thread per library)\n\n" + format_costs(model_costs(args.video, pinned)))
    rows = ["| loop | frames | faces | frames/s | CPU s per frame |", "|---|---|---|---|---|"]
    for label, analyzer in (("library defaults", FaceAnalyzer(threads=os.cpu_count() or 1)), ("one thread per library", pinned)):
        with tqdm(total=args.frames, desc=f"baseline, {label}", unit="frame", file=sys.stderr) as bar:
            r = run_sequential(args.video, analyzer, args.frames, bar.update)
        rows.append(f"| {label} | {r.frames} | {r.faces} | {r.fps:.2f} | {r.cpu_seconds / r.frames:.3f} |")
    sections.append(f"## Sequential baseline on {Path(args.video).name}\n\nEvery model on every face of every "
                    "frame, one process (`models/baseline.py`).\n\n" + "\n".join(rows))
    report = "\n\n".join(sections) + "\n"
    print(report)
    args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
