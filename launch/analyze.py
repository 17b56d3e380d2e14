"""facelive batch mode: find and describe every face in photos, folders of photos and videos.

For each image it writes DIR/<relative path without extension>.json (schema facelive.image/1)
and DIR/<relative path without extension>.annotated.jpg; for a video, the same per sampled frame
under DIR/<video name>/<frame>.json. DIR/summary.json counts what was done and what failed.
Exit status: 0 all good, 1 some inputs failed (each named on stderr), 2 bad usage."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core.draw import FaceLabel, draw_faces  # noqa: E402
from core.fusion import FusionConfig, quantiles  # noqa: E402
from core.gallery import GalleryError, GalleryIndex  # noqa: E402
from core.media import DEFAULT_MAX_PIXELS, MediaError, VideoFrames, is_video, iter_image_files, load_image  # noqa: E402
from core.private import private_dir, write_private  # noqa: E402
from core.records import SUMMARY_SCHEMA, face_record, image_record  # noqa: E402
from models.align import PLAIN, TTA_VIEWS  # noqa: E402
from models.analyzer import FaceAnalyzer, FaceResults  # noqa: E402
from models.detector import DetectorConfig  # noqa: E402
from models.enrolment import gallery_config  # noqa: E402
from models.entry import ModelEntryError  # noqa: E402
from models.files import ModelFileError  # noqa: E402
from models.registry import ModelRegistry  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(prog="launch/analyze.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) and video files")
    p.add_argument("--out", type=Path, default=Path("out/analyze"), help="output folder (default: out/analyze)")
    p.add_argument("--every", type=int, default=25, help="for videos: analyse every N-th frame (default 25)")
    p.add_argument("--threshold", type=float, default=0.5, help="face detection score threshold (default 0.5)")
    p.add_argument("--max-side", type=int, default=640,
                   help="longest image side the detector sees; raise it for small faces in big photos")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images larger than this many pixels (default {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--models", type=Path, help="TOML file with extra [[model]] entries (your own models)")
    p.add_argument("--attribute", action="append", default=[],
                   help="also run this registered attribute model (repeatable)")
    p.add_argument("--no-images", action="store_true", help="write JSON only, no annotated images")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads per model library")
    p.add_argument("--gallery", type=Path,
                   help="gallery directory (launch/gallery.py): fill each face's identity from it")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="average age, gender and expression over 10 shifted, zoomed and mirrored crops "
                        "of each face (default on: the estimates then depend far less on resolution "
                        "and framing, for about 1.3x the time a face)")
    return p.parse_args(argv)


def face_records(results: FaceResults, gallery: GalleryIndex | None = None, age_bins=None) -> list[dict]:
    """`age_bins`: the years of the age model's classes, for each face's age interval."""
    faces = results.faces
    matches = gallery.search(results.identity.vectors) if gallery is not None else [None] * len(faces)
    out = []
    for i, match in enumerate(matches):
        identity = None if match is None else {"name": match.name, "distance": round(match.distance, 3)}
        gender, gender_score = results.gender.best(i) if results.gender else (None, None)
        expression, _ = results.expression.best(i) if results.expression else (None, None)
        record = face_record(
            faces.boxes[i], faces.scores[i], faces.landmarks[i],
            results.age.ages[i] if results.age else None, gender, gender_score, expression,
            results.expression.as_dict(i) if results.expression else None, identity,
            quantiles(results.age.posteriors[i], age_bins, FusionConfig().age_interval_quantiles)
            if results.age and age_bins is not None else None)
        for name, scores in results.attributes.items():
            record.setdefault("attributes", {})[name] = scores.as_dict(i)
        out.append(record)
    return out


def labels_of(records: list[dict]) -> list[FaceLabel]:
    labels = []
    for i, r in enumerate(records):
        interval = f" ({r['age_interval'][0]:.0f}-{r['age_interval'][1]:.0f})" if r["age_interval"] else ""
        lines = [f"{r['gender'] or '?'} {r['age']:.0f}{interval}" if r["age"] is not None else (r["gender"] or "face"),
                 r["expression"] or "", r["identity"]["name"] if r["identity"] else ""]
        labels.append(FaceLabel(tuple(r["box"]), tuple(line for line in lines if line), key=i))
    return labels


def unique_names(images) -> list[tuple[str, str]]:
    """Outputs are named by path relative to their input; two inputs can give the same name
    (a/img1.jpg and b/img1.jpg passed as files), and the later one then takes its path as given."""
    seen, out = set(), []
    for path, rel in images:
        stem = str(Path(rel).with_suffix(""))
        if stem in seen:
            rel = os.path.normpath(path).lstrip("/").replace("../", "")
            stem = str(Path(rel).with_suffix(""))
        seen.add(stem)
        out.append((path, rel))
    return out


class BatchRun:
    def __init__(self, args, analyzer: FaceAnalyzer, gallery: GalleryIndex | None = None):
        self.args = args
        self.analyzer = analyzer
        self.gallery = gallery
        self.images = self.faces = 0
        self.failures: list[dict] = []

    def fail(self, source: str, reason: str) -> None:
        self.failures.append({"source": source, "reason": reason})
        tqdm.write(f"error: {source}: {reason}", file=sys.stderr)

    def write(self, image, source: str, stem: Path) -> None:
        results = self.analyzer.analyze(image)
        age = self.analyzer.recognisers.get("age")
        records = face_records(results, self.gallery, age.entry.values if age else None)
        record = image_record(source, image.shape[1], image.shape[0], records)
        write_private(stem.with_suffix(".json"), json.dumps(record, indent=1))
        if not self.args.no_images:
            annotated = draw_faces(image, labels_of(records))
            write_private(stem.with_suffix(".annotated.jpg"), cv2.imencode(".jpg", annotated[:, :, ::-1])[1].tobytes())
        self.images += 1
        self.faces += len(records)

    def image(self, path: str, rel: str) -> None:
        try:
            image = load_image(path, self.args.max_pixels)
        except MediaError as error:
            return self.fail(path, error.reason)
        self.write(image, path, self.args.out / Path(rel).with_suffix(""))

    def video(self, path: str, bar: tqdm) -> None:
        try:
            frames = VideoFrames(path, self.args.every)
        except MediaError as error:
            return self.fail(path, error.reason)
        folder = self.args.out / Path(path).stem
        with frames:
            for index, _, image in frames:
                self.write(image, f"{path}#frame={index}", folder / f"{index:06d}")
                bar.set_postfix_str(f"{Path(path).name} frame {index}")
        if frames.decode_errors:
            self.fail(path, f"video ends early: {frames.decode_errors} frame(s) could not be decoded")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.every < 1:
        print("error: --every must be at least 1", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        registry = ModelRegistry()
        if args.models:
            registry.add_file(args.models)
        analyzer = FaceAnalyzer(registry, attributes=tuple(args.attribute), threads=args.threads,
                                config=DetectorConfig(threshold=args.threshold, max_side=args.max_side),
                                views=TTA_VIEWS if args.tta else (PLAIN,))
        gallery = GalleryIndex.load(args.gallery, gallery_config(analyzer)) if args.gallery else None
        private_dir(args.out)
    except (ModelFileError, ModelEntryError, GalleryError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    videos = [p for p in args.inputs if is_video(p) and not os.path.isdir(p)]
    images = unique_names(iter_image_files([p for p in args.inputs if p not in videos]))
    run = BatchRun(args, analyzer, gallery)
    with tqdm(total=len(images) + len(videos), unit="file", desc="analyzing", file=sys.stderr) as bar:
        for path, rel in images:
            run.image(path, rel)
            bar.update()
        for path in videos:
            run.video(path, bar)
            bar.update()
    summary = {"schema": SUMMARY_SCHEMA, "inputs": len(images) + len(videos), "images": run.images,
               "faces": run.faces, "failed": len(run.failures), "failures": run.failures,
               "seconds": round(time.perf_counter() - started, 2)}
    write_private(args.out / "summary.json", json.dumps(summary, indent=1))
    print(f"{run.images} image(s), {run.faces} face(s), {len(run.failures)} failure(s) in "
          f"{summary['seconds']} s; results in {args.out}", file=sys.stderr)
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
