"""facelive demo: run the actor pipeline on video files, cameras, URLs or photo folders.

Joins the cluster `ray start --head` left running (or --address / RAY_ADDRESS); with none, starts
a local one. With no flags it analyses the bundled sample video and finishes. Writes, in --out:
annotated.mp4 per stream (unless --no-video), events.msgpack (see README) and summary.json, and
prints the summary."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core.config import ConfigError, load_config, parse_pool  # noqa: E402
from core.media import MediaError  # noqa: E402
from core.private import private_dir, write_private  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "media" / "video" / "crossing_faces.mp4"
# Where the sample video's default gallery (tests/media/gallery, obama watched) is built on first use.
SAMPLE_GALLERY = Path.home() / ".cache" / "facelive" / "sample-gallery"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="launch/demo.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append", default=[],
                   help="video file, image folder, camera index or rtsp/http URL (repeatable; default: the sample video)")
    p.add_argument("--mode", choices=["live", "lossless"], help="live: newest frames first, stale ones dropped; "
                   "lossless: every frame, with backpressure (default: lossless, or the config's)")
    p.add_argument("--config", type=Path, help="TOML config (pools, tracker, fusion, budget; [[model]] entries)")
    p.add_argument("--pool", action="append", default=[], metavar="TASK=COUNT[:RESOURCES]",
                   help="pool size and resources, e.g. identity=2:num_cpus=0.5,recognition=1 (repeatable)")
    p.add_argument("--gpu", action="store_true", help="pools that can use a GPU ask Ray for a GPU fraction")
    p.add_argument("--duration", type=float, help="stop capturing after this many seconds")
    p.add_argument("--loop", action="store_true", help="loop file sources (stop with --duration or Ctrl-C)")
    p.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                   help="play files at their frame rate, like a camera (default: on in live mode)")
    p.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out/)")
    p.add_argument("--video", action=argparse.BooleanOptionalAction, default=None,
                   help="write annotated.mp4 per stream (default: on); --no-video writes events only, and spares "
                        "the trackers fetching and drawing every frame")
    p.add_argument("--gallery", help="gallery directory (launch/gallery.py) to name faces from; watchlisted people raise alarms "
                   f"(default for the sample video: the bundled people, built on first use in {SAMPLE_GALLERY})")
    p.add_argument("--enrol-unknown", action="store_true",
                   help="enrol confirmed tracks nobody matches as unknown-N into the gallery (searchable at once)")
    p.add_argument("--address", help="Ray cluster address; 'local' starts a new local one (default: RAY_ADDRESS, a running cluster, "
                        "or a new local one)")
    p.add_argument("--num-cpus", type=int, help="CPUs of a locally started Ray (default: all)")
    p.add_argument("--view", nargs="?", const="127.0.0.1:8080", metavar="HOST:PORT",
                   help="serve a live web view of the run with hot swap controls (default 127.0.0.1:8080)")
    p.add_argument("--hold", type=float, default=0.0, metavar="SECONDS",
                   help="with --view: keep the page up this long after the run ends")
    p.add_argument("--verbose", action="store_true",
                   help="show the libraries' start-up logs in every actor (TensorFlow's are hidden by default)")
    return p.parse_args(argv)


def build_config(args):
    config = load_config(args.config)
    pools = {spec.task: spec for spec in config.pools}
    for text in args.pool:
        spec = parse_pool(text, config)
        pools[spec.task] = spec
    sources = tuple(args.source) or config.sources or (str(SAMPLE),)
    for source in sources:
        # files and folders fail here, before Ray and the model pools start
        if not (source.isdigit() or "://" in source or os.path.exists(source)):
            raise ConfigError(f"{source}: no such file or folder (sources are files, folders, camera indexes or URLs)")
    models_file = str(args.config.resolve()) if args.config else config.models_file
    return replace(config, sources=sources, mode=args.mode or config.mode, pools=tuple(pools.values()),
                   gpu=args.gpu or config.gpu, duration=args.duration or config.duration,
                   loop=args.loop or config.loop, realtime=args.realtime if args.realtime is not None else config.realtime,
                   models_file=models_file, gallery=args.gallery or config.gallery,
                   video=args.video if args.video is not None else config.video,
                   enrol_unknown=args.enrol_unknown or config.enrol_unknown).validate()


def summary_json(result) -> dict:
    s = result.summary
    return {"frames": {"captured": s.captured, "processed": s.processed, "dropped": s.dropped,
                       "carried": s.carried},
            "devices": s.devices or {},
            "stages": {name: {"fps": round(f.fps, 2), "latency_ms": {"p50": round(f.p50_ms, 1), "p95": round(f.p95_ms, 1)}}
                       for name, f in s.stages.items()},
            "tracks": result.tracks, "faces": s.faces, "fresh_attributes": round(result.fresh_share, 3),
            "seconds": round(s.seconds, 2), "ray_per_frame": ray_per_frame(result.traffic, s.captured)}


def ray_per_frame(traffic, frames: int) -> dict:
    """Ray operations per captured frame, in all and by kind."""
    n = max(frames, 1)
    calls, fetches = traffic.per_frame(frames)
    return {"calls": round(calls, 2), "fetches": round(fetches, 2), "puts": round(traffic.puts / n, 2),
            "calls_by_kind": {k: round(v / n, 2) for k, v in sorted(traffic.calls.items())},
            "fetches_by_kind": {k: round(v / n, 2) for k, v in sorted(traffic.fetches.items())}}


def summary_table(data: dict) -> str:
    f = data["frames"]
    dropped = ", ".join(f"{k} {v}" for k, v in f["dropped"].items()) or "none"
    lines = [f"frames: captured {f['captured']}, processed {f['processed']} ({f['carried']} with tracked boxes), "
             f"dropped {sum(f['dropped'].values())} ({dropped})",
             "models on: " + "; ".join(f"{task}: " + ", ".join(f"{m} {d}" for m, d in models.items())
                                       for task, models in data["devices"].items()),
             f"tracks: {data['tracks']}, faces: {data['faces']}, expression <= 0.5 s old with age/gender known: "
             f"{data['fresh_attributes']:.0%}, seconds: {data['seconds']}",
             ray_line(data["ray_per_frame"]),
             f"{'stage':<12} {'per s':>8} {'p50 ms':>8} {'p95 ms':>8}"]
    for name, st in data["stages"].items():
        lines.append(f"{name:<12} {st['fps']:>8.1f} {st['latency_ms']['p50']:>8.1f} {st['latency_ms']['p95']:>8.1f}")
    return "\n".join(lines)


def ray_line(ray: dict) -> str:
    def kinds(counts: dict) -> str:
        return ", ".join(f"{k} {v:.2f}" for k, v in counts.items())

    return (f"Ray a frame: {ray['calls']:.2f} actor calls ({kinds(ray['calls_by_kind'])}), "
            f"{ray['fetches']:.2f} frame fetches ({kinds(ray['fetches_by_kind'])}), {ray['puts']:.2f} puts")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = build_config(args)
        # annotated videos and event logs show faces and names
        private_dir(args.out)
    except (ConfigError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Not with --enrol-unknown: that would write strangers into the shared sample gallery.
    if config.gallery is None and config.sources == (str(SAMPLE),) and not config.enrol_unknown:
        from models.enrolment import sample_gallery

        if sample_gallery(SAMPLE_GALLERY, threads=os.cpu_count() or 1):
            print(f"built the sample gallery in {SAMPLE_GALLERY}", file=sys.stderr)
        config = replace(config, gallery=str(SAMPLE_GALLERY))
    import ray

    from actors.cluster import connect
    from actors.pipeline import Pipeline

    print(connect(args.address, args.num_cpus, verbose=args.verbose), file=sys.stderr)
    view = None
    if args.view is not None:
        from actors.webview import ViewError, parse_address, start_view

        try:
            view, url = start_view(config, args.view)
        except ViewError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"live view: {url}", file=sys.stderr)
        if parse_address(args.view)[0] not in ("127.0.0.1", "localhost", "::1"):
            print("warning: the live view is plain HTTP and its controls change the run; anyone who sees its "
                  "URL (the token in it) on the way and reaches this address can watch and use it", file=sys.stderr)
    try:
        pipeline = Pipeline(config, args.out, view=view)
        if view is not None:
            view.attach.remote(pipeline.scheduler)
        sizes = pipeline.start()
        print("pools: " + ", ".join(f"{t} x{n}" for t, n in sizes.items()) + f"; mode {config.mode}", file=sys.stderr)
        result = pipeline.run()
    except (ConfigError, MediaError) as error:
        # raised in an actor, it arrives as a RayTaskError that also is the original class
        print(f"error: {getattr(error, 'cause', None) or error}", file=sys.stderr)
        return 2
    data = summary_json(result)
    write_private(args.out / "summary.json", json.dumps(data, indent=1))
    print(summary_table(data))
    for stream, path in result.videos.items():
        print(f"{stream}: {path}")
    print(f"events: {result.events}")
    for report in result.captures:
        for error in report.errors:
            print(f"warning: {error}", file=sys.stderr)
    if view is not None:
        ray.get(view.finish.remote(result.summary))
        if args.hold > 0:
            print(f"live view stays up for {args.hold:g} s (Ctrl-C ends it)", file=sys.stderr)
            try:
                time.sleep(args.hold)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
