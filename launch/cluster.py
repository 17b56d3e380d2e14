"""facelive cluster report: group the faces seen into clusters and summarise each one.

Input is either a batch-mode output folder (launch/analyze.py --out DIR) or a pipeline event log
(events.msgpack from launch/demo.py) together with --video, the stream's source video. The faces'
aligned chips are cut again from their source pixels at the stored landmarks and embedded; the
embeddings (optionally with the faces' attributes, --attribute-weight) are clustered with faiss
k-means and DBSCAN, k and eps chosen by silhouette score. REPORT/index.html shows per cluster an
attribute-occurrence chart, the mean face, the first eigenfaces and typical members; it opens in
a browser from disk. REPORT/clusters.json holds every face's cluster per method.

Exit status: 0 done, 1 report written but some sources could not be read (each named on
stderr), 2 bad usage or no report."""
from __future__ import annotations

import argparse
import html
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core import clustering  # noqa: E402
from core.clustering import NOISE, Clustering, FaceAttributes  # noqa: E402
from core.events import EventFormatError, read_events  # noqa: E402
from core.media import MediaError, VideoFrames, load_image  # noqa: E402
from core.private import private_dir, write_private  # noqa: E402
from core.records import IMAGE_SCHEMA  # noqa: E402
from core.tracking import UNCONFIRMED  # noqa: E402
from models.align import align_face  # noqa: E402
from models.entry import ModelEntryError  # noqa: E402
from models.files import ModelFileError  # noqa: E402
from models.registry import DEFAULT_MODELS, ModelRegistry  # noqa: E402

REPORT_SCHEMA = "facelive.clusters/1"
EIGENFACES = 4
THUMBNAILS = 8
# Eigenfaces of a big cluster come from an even sample of this many members: the leading
# components are settled long before, and the SVD of every member would dominate the run.
EIGEN_SAMPLE = 400
# A component that explains less than this share of a small cluster's variance is rounding noise,
# and stretched to full contrast it would look like structure.
MIN_COMPONENT_SHARE = 0.01
EMBED_BATCH = 32


class InputError(Exception):
    """Input that gives no report, with the reason in one line."""


@dataclass(slots=True)
class Face:
    source: str  # image path, or "video path#frame=N"
    caption: str
    box: list[float]
    landmarks: np.ndarray  # (5, 2)
    attributes: FaceAttributes


def parse_args(argv):
    p = argparse.ArgumentParser(prog="launch/cluster.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="analyze.py output folder, or an events.msgpack (with --video)")
    p.add_argument("--out", type=Path, required=True, help="report folder (index.html, PNGs, clusters.json)")
    p.add_argument("--video", type=Path, help="source video of the event log's stream")
    p.add_argument("--stream", help="stream of the event log to use (default: the one named after --video)")
    p.add_argument("--every", type=int, default=5,
                   help="event log: sample every N-th appearance of each confirmed track (default 5)")
    p.add_argument("--method", choices=("kmeans", "dbscan", "both"), default="both", help="default: both")
    p.add_argument("--max-faces", type=int, default=1000,
                   help="cluster at most this many faces, an even sample of all (default 1000)")
    p.add_argument("--k-max", type=int, default=10, help="k-means: try k = 2..K (default 10)")
    p.add_argument("--min-samples", type=int, default=2,
                   help="DBSCAN: faces within eps (itself included) that make a core face (default 2)")
    p.add_argument("--attribute-weight", type=float, default=0.0,
                   help="append gender/age/expression to the embeddings with this weight (default 0: identity only)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for the embedding model")
    return p.parse_args(argv)


def _attributes(record: dict) -> FaceAttributes:
    identity = record.get("identity")
    return FaceAttributes(age=record.get("age"), gender=record.get("gender"),
                          gender_score=record.get("gender_score"), expression=record.get("expression"),
                          expression_scores=record.get("expression_scores") or None,
                          identity=identity.get("name") if isinstance(identity, dict) else None)


def _landmarks(record: dict, where: str) -> np.ndarray:
    points = np.asarray(record.get("landmarks", ()), np.float64)
    if points.shape != (5, 2):
        raise InputError(f"{where}: a face without 5 landmarks (shape {points.shape})")
    return points


def faces_from_analyze(folder: Path) -> list[Face]:
    """Every face of every facelive.image/1 record under `folder` (summary.json and other JSON
    files are not records and are passed over)."""
    records = sorted(folder.rglob("*.json"))
    if not records:
        raise InputError(f"{folder}: no JSON records (expected a launch/analyze.py output folder)")
    faces = []
    for path in records:
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"{path}: not readable JSON: {error}") from None
        if not isinstance(record, dict) or record.get("schema") != IMAGE_SCHEMA:
            continue
        source = record["source"]
        video, _, frame = source.partition("#frame=")
        # the folder too: a gallery names its people by folder and its files img1, img2...
        caption = f"{Path(video).name} frame {frame}" if frame else "/".join(Path(source).parts[-2:])
        for face in record.get("faces", ()):
            faces.append(Face(source, caption, face["box"], _landmarks(face, str(path)), _attributes(face)))
    return faces


def _stream_of(streams: list[str], video: Path, wanted: str | None, events: Path) -> str:
    if wanted is not None:
        if wanted not in streams:
            raise InputError(f"{events}: no stream {wanted!r} (streams: {', '.join(streams) or 'none'})")
        return wanted
    # stream names are "<index>:<file name>"; the name is how a video finds its stream
    named = [s for s in streams if s.partition(":")[2] == video.name]
    if len(named) == 1:
        return named[0]
    if not named:
        raise InputError(f"{events}: no stream comes from {video.name} (streams: {', '.join(streams) or 'none'}); "
                         "give the stream's source video, or --stream")
    raise InputError(f"{events}: several streams come from {video.name} ({', '.join(named)}); choose one with --stream")


def faces_from_events(events: Path, video: Path, stream: str | None, every: int) -> list[Face]:
    """Every `every`-th appearance of each confirmed track of the stream; each face carries its
    track's final fused attributes where the track ended in the log, else those shown with it."""
    frames, fused, streams = [], {}, []
    for event in read_events(events):
        if event.get("stream") not in streams and "stream" in event:
            streams.append(event["stream"])
        if event["type"] == "frame":
            frames.append(event)
        elif event["type"] == "track_end":
            fused[(event["stream"], event["track_id"])] = event
    chosen = _stream_of(streams, video, stream, events)
    seen: dict[int, int] = defaultdict(int)
    faces = []
    for event in sorted((e for e in frames if e["stream"] == chosen), key=lambda e: e["seq"]):
        for face in event["faces"]:
            track = face.get("track_id", UNCONFIRMED)
            if track == UNCONFIRMED:
                continue
            seen[track] += 1
            if (seen[track] - 1) % every:
                continue
            record = {**face, **{k: v for k, v in fused.get((chosen, track), {}).items()
                                 if k in ("age", "gender", "gender_score", "expression", "identity")}}
            faces.append(Face(f"{video}#frame={event['seq']}", f"track {track} frame {event['seq']}",
                              face["box"], _landmarks(face, f"{events} frame {event['seq']}"), _attributes(record)))
    return faces


def _even_sample(n: int, limit: int) -> np.ndarray:
    return np.arange(n) if n <= limit else np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def cut_chips(faces: list[Face], size: int, padding: float, on_error) -> tuple[np.ndarray, list[int]]:
    """Aligned RGB chips of the faces whose source can be read, reading each image or video once;
    returns the chips and the indices of those faces. A source that cannot be read goes to
    `on_error(source, reason, face count)`."""
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, face in enumerate(faces):
        by_source[face.source].append(i)
    by_video: dict[str, dict[int, list[int]]] = defaultdict(dict)
    images = []
    for source, idx in by_source.items():
        video, _, frame = source.partition("#frame=")
        if frame:
            by_video[video][int(frame)] = idx
        else:
            images.append((source, idx))
    chips: dict[int, np.ndarray] = {}

    def cut(image, idx):
        for i in idx:
            chips[i] = align_face(image, faces[i].landmarks, size, padding)

    with tqdm(total=len(faces), unit="face", desc="cutting chips", file=sys.stderr) as bar:
        for source, idx in images:
            try:
                cut(load_image(source), idx)
            except MediaError as error:
                on_error(source, error.reason, len(idx))
            bar.update(len(idx))
        for video, wanted in by_video.items():
            try:
                with VideoFrames(video) as frames:
                    last = max(wanted)
                    for index, _, image in frames:
                        if index in wanted:
                            idx = wanted.pop(index)
                            cut(image, idx)
                            bar.update(len(idx))
                        if index >= last:
                            break
            except MediaError as error:
                on_error(video, error.reason, sum(map(len, wanted.values())))
                continue
            if wanted:
                on_error(video, f"frames {', '.join(map(str, sorted(wanted)[:5]))}{'...' if len(wanted) > 5 else ''} "
                         "not in the video (is it the stream's source?)", sum(map(len, wanted.values())))
        bar.update(len(faces) - bar.n)
    kept = sorted(chips)
    return (np.stack([chips[i] for i in kept]) if kept else np.zeros((0, size, size, 3), np.uint8)), kept


def embed(embedder, chips: np.ndarray) -> np.ndarray:
    out = []
    for start in tqdm(range(0, len(chips), EMBED_BATCH), unit="batch", desc="embedding", file=sys.stderr):
        out.append(embedder(chips[start:start + EMBED_BATCH]).vectors)
    return np.concatenate(out).astype(np.float32)


BAR_COLOURS = {"gender": "#4c78a8", "age": "#f58518", "expression": "#54a24b", "identity": "#b279a2"}
AGE_ORDER = [label for _, label in clustering.AGE_BANDS]


def _png(path: Path, gray_or_rgb: np.ndarray) -> str:
    image = np.asarray(gray_or_rgb)
    if image.ndim == 3:
        image = image[:, :, ::-1]
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"cannot encode {path}")
    return write_private(path, png.tobytes()).name


def _to_gray_u8(image: np.ndarray, signed: bool) -> np.ndarray:
    """Mean faces as they are; components (signed, unit norm) stretched symmetrically around mid
    gray, so that gray means 0 and the sign of a region stays readable."""
    if signed:
        peak = float(np.abs(image).max()) or 1.0
        image = 127.5 + 127.5 * image / peak
    return np.clip(image, 0, 255).round().astype(np.uint8)


def bar_chart(counts: dict[str, dict[str, int]], width: int = 360) -> str:
    """An inline SVG of horizontal bars, one group per attribute, bars scaled to the largest
    count in the chart."""
    groups = [(name, sorted(c.items(), key=lambda kv: AGE_ORDER.index(kv[0])) if name == "age"
               else sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
              for name, c in counts.items() if c]
    if not groups:
        return '<p class="muted">no attributes recorded</p>'
    top = max(v for _, items in groups for _, v in items)
    row, label_w, bar_w = 16, 110, width - 150
    parts, y = [], 0
    for name, items in groups:
        parts.append(f'<text x="0" y="{y + 12}" class="group">{html.escape(name)}</text>')
        y += row
        for label, value in items:
            w = max(1.0, bar_w * value / top)
            parts.append(f'<text x="{label_w - 4}" y="{y + 12}" text-anchor="end">{html.escape(str(label))}</text>'
                         f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 5}" '
                         f'fill="{BAR_COLOURS.get(name, "#888")}"/>'
                         f'<text x="{label_w + w + 4:.1f}" y="{y + 12}">{value}</text>')
            y += row
        y += 4
    return (f'<svg class="bars" width="{width}" height="{y}" viewBox="0 0 {width} {y}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>')


def silhouette_chart(result: Clustering, width: int = 360, height: int = 90) -> str:
    """Silhouette per candidate k or eps, the chosen one dark."""
    n = len(result.tried)
    step = width / max(n, 1)
    parts = []
    for j, (param, score) in enumerate(result.tried):
        h = max(0.0, score or 0.0) * (height - 32)
        fill = "#333" if param == result.param else "#bbb"
        label = f"{int(param)}" if result.param_name == "k" else f"{param:.3f}"
        title = f"{result.param_name}={label}: " + ("fewer than 2 clusters" if score is None else f"{score:.3f}")
        parts.append(f'<rect x="{j * step + 1:.1f}" y="{height - 14 - h:.1f}" width="{max(step - 2, 1):.1f}" '
                     f'height="{h:.1f}" fill="{fill}"><title>{html.escape(title)}</title></rect>')
        if param == result.param:
            # anchored away from the nearer edge, so that the label is never cut off
            anchor = "start" if j < n / 3 else "end" if j >= 2 * n / 3 else "middle"
            x = {"start": j * step + 1, "end": (j + 1) * step - 1, "middle": (j + 0.5) * step}[anchor]
            parts.append(f'<text x="{x:.1f}" y="{height - 17 - h:.1f}" text-anchor="{anchor}">'
                         f'{label}: {score:.3f}</text>')
    first, last = result.tried[0][0], result.tried[-1][0]
    fmt = (lambda v: f"{int(v)}") if result.param_name == "k" else (lambda v: f"{v:.3f}")
    parts.append(f'<text x="0" y="{height - 2}">{result.param_name}={fmt(first)}</text>'
                 f'<text x="{width}" y="{height - 2}" text-anchor="end">{fmt(last)}</text>')
    return (f'<svg class="bars" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>')


STYLE = """
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ccc; }
.cluster { border: 1px solid #ddd; border-radius: 6px; padding: 12px; margin: 12px 0; display: flex;
           flex-wrap: wrap; gap: 24px; }
.cluster h3 { width: 100%; margin: 0; font-size: 16px; }
figure { margin: 0 2px 4px 0; display: inline-block; vertical-align: top; width: 96px; text-align: center;
         font-size: 10px; color: #555; overflow-wrap: anywhere; }
figure img { display: block; width: 96px; height: 96px; }
.faces figure, .faces figure img { width: 76px; } .faces figure img { height: 76px; }
.faces { max-width: 400px; }
svg.bars text { font: 11px system-ui, sans-serif; fill: #333; } svg.bars text.group { font-weight: bold; }
.muted { color: #888; }
"""


def _figures(items: list[tuple[str, str, str]]) -> str:
    return "".join(f'<figure title="{html.escape(title)}"><img src="{html.escape(src)}" alt="">'
                   f'{html.escape(caption)}</figure>' for src, caption, title in items)


def cluster_section(out: Path, prefix: str, heading: str, idx: np.ndarray, typical: np.ndarray,
                    faces: list[Face], chips: np.ndarray, gray: np.ndarray, pictures: bool = True) -> str:
    """One cluster: its attribute chart, mean face and eigenfaces (`pictures`), typical members."""
    counts = clustering.attribute_counts([faces[i].attributes for i in idx])
    thumbs = [(_png(out / f"{prefix}-m{j}.png", chips[i]), faces[i].caption, faces[i].source)
              for j, i in enumerate(typical)]
    figures = ""
    if pictures:
        sample = idx[_even_sample(len(idx), EIGEN_SAMPLE)]
        eig = clustering.eigenfaces(gray[sample], EIGENFACES)
        items = [(_png(out / f"{prefix}-mean.png", _to_gray_u8(eig.mean, False)), "mean face",
                  f"mean of {len(sample)} aligned crops")]
        items += [(_png(out / f"{prefix}-eigen{j + 1}.png", _to_gray_u8(c, True)),
                   f"PC{j + 1} {100 * share:.0f} %", f"principal component {j + 1}: {100 * share:.1f} % of the variance")
                  for j, (c, share) in enumerate(zip(eig.components, eig.explained)) if share >= MIN_COMPONENT_SHARE]
        figures = f'<div>{_figures(items)}</div>'
    return (f'<div class="cluster"><h3>{html.escape(heading)}</h3><div>{bar_chart(counts)}</div>{figures}'
            f'<div class="faces">{_figures(thumbs)}</div></div>')


def method_section(out: Path, result: Clustering, x: np.ndarray, faces, chips, gray) -> str:
    label = f"k = {int(result.param)}" if result.method == "kmeans" else f"eps = {result.param:.3f}"
    noise = f", {result.n_noise} noise face(s)" if result.method == "dbscan" else ""
    parts = [f'<h2>{"k-means (faiss)" if result.method == "kmeans" else "DBSCAN"}: {label}, '
             f'silhouette {result.silhouette:.3f}, {result.n_clusters} cluster(s){noise}</h2>',
             f'<p>silhouette per candidate {result.param_name}:</p>{silhouette_chart(result)}']
    for c in range(result.n_clusters):
        idx = result.members(c)
        typical = clustering.typical_members(x, result, c, THUMBNAILS)
        parts.append(cluster_section(out, f"{result.method}-c{c}", f"cluster {c}: {len(idx)} face(s)",
                                     idx, typical, faces, chips, gray))
    if result.n_noise:
        idx = np.flatnonzero(result.labels == NOISE)
        parts.append(cluster_section(out, f"{result.method}-noise", f"noise: {len(idx)} face(s) in no cluster",
                                     idx, idx[:THUMBNAILS], faces, chips, gray, pictures=False))
    return "".join(parts)


def write_report(out: Path, source: str, results: list[Clustering], x: np.ndarray, faces: list[Face],
                 chips: np.ndarray, attribute_weight: float) -> Path:
    private_dir(out)
    gray = np.stack([cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in chips])
    features = "identity embeddings" + (f" + attributes (weight {attribute_weight:g})" if attribute_weight > 0 else "")
    body = [f"<h1>facelive clusters</h1><p>{len(faces)} face(s) from <code>{html.escape(source)}</code>, "
            f"clustered on {html.escape(features)}. Eigenfaces are shown stretched around mid gray "
            f"(gray = 0); hover an image for its source.</p>"]
    body += [method_section(out, r, x, faces, chips, gray) for r in tqdm(results, desc="report", file=sys.stderr)]
    page = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>facelive clusters</title>'
            f'<style>{STYLE}</style></head><body>{"".join(body)}</body></html>')
    write_private(out / "index.html", page)
    summary = {
        "schema": REPORT_SCHEMA, "input": source,
        "faces": [{"source": f.source, "caption": f.caption, "box": f.box} for f in faces],
        "methods": {r.method: {r.param_name: r.param if r.param_name == "eps" else int(r.param),
                               "silhouette": round(r.silhouette, 4), "clusters": r.n_clusters,
                               "labels": r.labels.tolist()} for r in results},
    }
    write_private(out / "clusters.json", json.dumps(summary, indent=1))
    return out / "index.html"


def main(argv=None) -> int:
    args = parse_args(argv)
    for name, value, low in (("--every", args.every, 1), ("--max-faces", args.max_faces, 3),
                             ("--k-max", args.k_max, 2), ("--min-samples", args.min_samples, 1)):
        if value < low:
            print(f"error: {name} must be at least {low}", file=sys.stderr)
            return 2
    failures = []

    def on_error(source, reason, count):
        failures.append(source)
        tqdm.write(f"error: {source}: {reason} ({count} face(s) skipped)", file=sys.stderr)

    try:
        if args.input.is_dir():
            if args.video:
                raise InputError("--video goes with an event log, not an analyze folder")
            faces = faces_from_analyze(args.input)
        elif args.input.is_file():
            if args.video is None:
                raise InputError(f"{args.input}: an event log needs --video, the stream's source video")
            faces = faces_from_events(args.input, args.video, args.stream, args.every)
        else:
            raise InputError(f"{args.input}: no such file or folder")
        faces = [faces[i] for i in _even_sample(len(faces), args.max_faces)]
        if len(faces) < 3:
            raise InputError(f"{args.input}: {len(faces)} face(s) found; clustering needs at least 3")
        embedder = ModelRegistry().load(DEFAULT_MODELS["identity"], args.threads)
        spec = embedder.crop
        chips, kept = cut_chips(faces, spec.size, spec.padding, on_error)
        faces = [faces[i] for i in kept]
        if len(faces) < 3:
            raise InputError(f"{len(faces)} face(s) could be read from their sources; clustering needs at least 3")
        x = clustering.face_features(embed(embedder, chips), [f.attributes for f in faces], args.attribute_weight)
        distances = clustering.pairwise_distances(x)
        results = []
        if args.method in ("kmeans", "both"):
            results.append(clustering.kmeans(x, range(2, args.k_max + 1), args.seed, distances))
        if args.method in ("dbscan", "both"):
            results.append(clustering.dbscan(x, args.min_samples, distances=distances))
    except (InputError, EventFormatError, ModelFileError, ModelEntryError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for r in results:
        extra = f", {r.n_noise} noise face(s)" if r.method == "dbscan" else ""
        value = f"{int(r.param)}" if r.param_name == "k" else f"{r.param:.3f}"
        print(f"{r.method}: {r.param_name}={value} silhouette={r.silhouette:.3f}, {r.n_clusters} cluster(s){extra}")
    index = write_report(args.out, str(args.input), results, x, faces, chips, args.attribute_weight)
    print(f"{len(faces)} face(s); report: {index}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
