"""facelive evaluation against ground truth.

`track VIDEO GT.txt`: runs the actor pipeline on VIDEO in lossless mode (every frame) and scores
its tracks against MOTChallenge ground truth (rows frame,id,x,y,w,h,...; frames from 1) with
motmetrics: MOTA, IDF1, ID switches; with --truth, also the fused gender and identity of each
ground-truth track's main predicted track. With --events it scores an existing events.msgpack
instead of running the pipeline. Prints a table and writes OUT/score.json; exit status 1 when
IDF1 is below --min-idf1, 2 on bad input."""
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
from core.events import EventFormatError, read_events  # noqa: E402
from core.media import MediaError  # noqa: E402
from core.trackscore import format_score, score_tracks  # noqa: E402


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
    return p.parse_args(argv)


def run_pipeline(args) -> tuple[Path, str]:
    """Runs the pipeline on args.video in lossless mode; returns its events file and stream name."""
    import ray

    from actors.cluster import connect
    from actors.pipeline import Pipeline
    from core.sources import stream_name
    from launch import demo

    demo_args = ["--source", str(args.video), "--mode", "lossless", "--no-realtime", "--out", str(args.out)]
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


def main(argv=None) -> int:
    args = parse_args(argv)
    for label, path in (("video", args.video), ("ground truth", args.gt), ("truth", args.truth),
                        ("events", args.events), ("gallery", args.gallery)):
        if path is not None and not path.exists():
            print(f"error: {label} {path} does not exist", file=sys.stderr)
            return 2
    stream = args.stream
    try:
        if args.events is None:
            events, stream = run_pipeline(args)
        else:
            events = args.events
        known = {d.name for d in args.gallery.iterdir() if d.is_dir()} if args.gallery else None
        score = score_tracks(read_events(events), args.gt, args.truth, stream=stream, known_names=known)
    except (ConfigError, MediaError, EventFormatError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    data = {"video": str(args.video), "gt": str(args.gt), "truth": args.truth and str(args.truth),
            "events": str(events), **asdict(score)}
    (args.out / "score.json").write_text(json.dumps(data, indent=1))
    print(format_score(score))
    if args.min_idf1 is not None and score.idf1 < args.min_idf1:
        print(f"IDF1 {score.idf1:.3f} is below --min-idf1 {args.min_idf1}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
