"""facelive evaluation against ground truth.

`track VIDEO GT.txt`: runs the actor pipeline on VIDEO in lossless mode (every frame; --live: live
mode at the video's frame rate, scored on the frames it processed) and scores its tracks against
MOTChallenge ground truth (rows frame,id,x,y,w,h,...; frames from 1) with motmetrics: MOTA, IDF1,
ID switches; with --truth, also the fused gender and identity of each ground-truth track's main
predicted track. With --events it scores an existing events.msgpack instead of running the
pipeline; with --offline it tracks without Ray, every detection with its identity embedding at
once (--no-appearance: without), which measures the tracker apart from the identity pool's timing.
Prints a table and writes OUT/score.json; exit status 1 when IDF1 is below --min-idf1, 2 on bad
input.

`steadiness DIR`: the resolution series (tests/resolution_series.py writes DIR/<photo>@<height>.png):
per photo, how far age, gender probability and expression move across its resolutions. Exit
status 1 when a spread passes --max-age-spread or --max-gender-spread or a label changes."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core.config import ConfigError  # noqa: E402
from core.fusion import FusionConfig  # noqa: E402
from core.events import EventFormatError, read_events  # noqa: E402
from core.media import MediaError  # noqa: E402
from core.trackscore import format_score, score_tracks, tracked_events  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(prog="launch/evaluate.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("track", help="score tracking (and fused attributes) against MOTChallenge ground truth",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("video", type=Path, help="the video the ground truth describes")
    t.add_argument("gt", type=Path, help="MOTChallenge ground truth (gt.txt)")
    t.add_argument("--truth", type=Path, help="truth.json: each ground-truth track id's name, gender, first and last frame")
    t.add_argument("--gallery", type=Path, help="gallery folder (one subfolder per person): people not in it "
                   "should stay unnamed (default: everyone in --truth is expected to be named)")
    t.add_argument("--events", type=Path, help="score this events.msgpack instead of running the pipeline")
    t.add_argument("--stream", help="stream to score when the events hold several (default: the only one)")
    t.add_argument("--out", type=Path, default=Path("out"), help="output folder for score.json "
                   "(and the pipeline's outputs when it runs; default: out/)")
    t.add_argument("--min-idf1", type=float, help="exit 1 when IDF1 is below this")
    t.add_argument("--config", type=Path, help="pipeline TOML config (tracker, fusion, budget, pools)")
    t.add_argument("--pool", action="append", default=[], metavar="TASK=COUNT[:RESOURCES]",
                   help="pool size and resources, as in launch/demo.py (repeatable)")
    t.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, a running cluster, or a new local one)")
    t.add_argument("--num-cpus", type=int, help="CPUs of a locally started Ray (default: all)")
    t.add_argument("--live", action="store_true", help="run in live mode at the video's frame rate; "
                   "frames it dropped are left out of the score")
    t.add_argument("--offline", action="store_true", help="track here without Ray, with every detection's "
                   "identity embedding")
    t.add_argument("--appearance", action=argparse.BooleanOptionalAction, default=True,
                   help="with --offline: compute embeddings for the tracker (default on)")
    t.add_argument("--threshold", type=float, default=0.5, help="with --offline: detection threshold (default 0.5)")
    r = sub.add_parser("steadiness", help="how much estimates move with resolution alone",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("series", type=Path, help="folder of <photo>@<height>.png (tests/resolution_series.py)")
    r.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="test-time views, as launch/analyze.py (default on)")
    r.add_argument("--min-face", type=float, default=FusionConfig().min_face_px,
                   help="faces smaller than this (pixels, square root of the box area) are listed, "
                        "not scored: fusion counts them only while a track has nothing better (default %(default)s)")
    r.add_argument("--max-age-spread", type=float, default=4.0)
    r.add_argument("--max-gender-spread", type=float, default=0.1)
    r.add_argument("--out", type=Path, default=Path("out"), help="output folder for steadiness.json")
    return p.parse_args(argv)


def run_pipeline(args) -> tuple[Path, str]:
    """Runs the pipeline on args.video in lossless mode; returns its events file and stream name."""
    import ray

    from actors.cluster import connect
    from actors.pipeline import Pipeline
    from core.sources import stream_name
    from launch import demo

    timing = ["--mode", "live", "--realtime"] if args.live else ["--mode", "lossless", "--no-realtime"]
    demo_args = ["--source", str(args.video), *timing, "--out", str(args.out)]
    for flag, value in (("--config", args.config), ("--address", args.address), ("--num-cpus", args.num_cpus)):
        if value is not None:
            demo_args += [flag, str(value)]
    for pool in args.pool:
        demo_args += ["--pool", pool]
    demo_args = demo.parse_args(demo_args)
    config = demo.build_config(demo_args)
    print(connect(demo_args.address, demo_args.num_cpus), file=sys.stderr)
    try:
        pipeline = Pipeline(config, args.out)
        pipeline.start()
        result = pipeline.run()
    except ray.exceptions.RayTaskError as error:
        # a bad video or model config fails inside an actor: report it like one found here
        if isinstance(error.cause, (ConfigError, MediaError)):
            raise error.cause from None
        raise
    for report in result.captures:
        for error in report.errors:
            print(f"warning: {error}", file=sys.stderr)
    return Path(result.events), stream_name(str(args.video), 0)


def track_offline(args) -> list[dict]:
    from core.config import PipelineConfig
    from core.sources import stream_name
    from models.analyzer import FaceAnalyzer
    from models.detector import DetectorConfig

    # the detector as the pipeline runs it, so offline and pipeline scores compare
    analyzer = FaceAnalyzer(tasks=("identity",) if args.appearance else (),
                            config=DetectorConfig(threshold=args.threshold, max_side=PipelineConfig().detector_max_side))
    return tracked_events(stream_name(str(args.video), 0), analyzer.video_detections(args.video))


def steadiness(args) -> int:
    from core.media import load_image
    from models.align import PLAIN, TTA_VIEWS
    from models.analyzer import FaceAnalyzer

    series: dict[str, dict[int, Path]] = {}
    for path in args.series.glob("*@*.png"):
        name, height = path.stem.rsplit("@", 1)
        series.setdefault(name, {})[int(height)] = path
    if not series:
        print(f"error: no <photo>@<height>.png in {args.series}", file=sys.stderr)
        return 2
    analyzer = FaceAnalyzer(tasks=("age", "gender", "expression"), views=TTA_VIEWS if args.tta else (PLAIN,))
    spreads, failed = [], False
    print(f"{'photo':<16} {'age spread':>10} {'gender':>7} {'expr':>5}  ages by height (face px); expressions")
    for name in sorted(series):
        versions = {f"{h}": load_image(series[name][h]) for h in sorted(series[name])}
        s = analyzer.series_spread(name, versions, args.min_face)
        if s is None:
            print(f"{name:<16} no face in some version")
            failed = True
            continue
        spreads.append(s)
        ok = (s.age_spread is not None and s.age_spread <= args.max_age_spread
              and s.gender_spread <= args.max_gender_spread and s.same_expression)
        failed |= not ok
        ages = " ".join(f"{v}:{a:.1f}({side:.0f}{'' if i in s.used else ', too small'})"
                        for i, (v, a, side) in enumerate(zip(s.versions, s.ages, s.sides)))
        print(f"{name:<16} {s.age_spread:>10.1f} {s.gender_spread:>7.3f} {'same' if s.same_expression else 'DIFF':>5}  "
              f"{ages}; {' '.join(s.expressions)}")
    worst = max(s.age_spread for s in spreads) if spreads else float("nan")
    labels = sum(bool(s.same_expression) for s in spreads)
    print(f"worst age spread {worst:.1f} years, worst gender spread {max(s.gender_spread for s in spreads):.3f}, "
          f"same expression on {labels} of {len(spreads)} photos (tta {'on' if args.tta else 'off'})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "steadiness.json").write_text(json.dumps(
        [asdict(s) | {"age_spread": s.age_spread, "gender_spread": s.gender_spread,
                      "same_expression": s.same_expression} for s in spreads], indent=1))
    return 1 if failed else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.command == "steadiness":
        if not args.series.is_dir():
            print(f"error: series folder {args.series} does not exist", file=sys.stderr)
            return 2
        return steadiness(args)
    for label, path in (("video", args.video), ("ground truth", args.gt), ("truth", args.truth),
                        ("events", args.events), ("gallery", args.gallery)):
        if path is not None and not path.exists():
            print(f"error: {label} {path} does not exist", file=sys.stderr)
            return 2
    stream = args.stream
    try:
        if args.offline:
            events = None
            tracked = track_offline(args)
        elif args.events is None:
            events, stream = run_pipeline(args)
        else:
            events = args.events
        known = {d.name for d in args.gallery.iterdir() if d.is_dir()} if args.gallery else None
        score = score_tracks(tracked if args.offline else read_events(events), args.gt, args.truth, stream=stream,
                             known_names=known, processed_only=args.live)
    except (ConfigError, MediaError, EventFormatError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    data = {"video": str(args.video), "gt": str(args.gt), "truth": args.truth and str(args.truth),
            "events": events and str(events), **asdict(score)}
    (args.out / "score.json").write_text(json.dumps(data, indent=1))
    print(format_score(score))
    if args.min_idf1 is not None and score.idf1 < args.min_idf1:
        print(f"IDF1 {score.idf1:.3f} is below --min-idf1 {args.min_idf1}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
