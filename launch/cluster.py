"""facelive cluster report: group the faces seen into people and summarise each group.

Input is a batch-mode output folder (launch/analyze.py --out DIR), a pipeline event log
(events.msgpack from launch/demo.py) together with --video, the stream's source video, or an
.npz of unit embeddings (array `embeddings`, optional `names`). The faces' aligned chips are cut
again from their source pixels at the stored landmarks and embedded. Faces are grouped into people
by a distance threshold on the identity model's scale (the gallery's, 0.55 for dlib's ResNet);
--method kmeans (or both) adds k-means, k chosen by silhouette, which with --attribute-weight
groups faces by attributes as well. Where names are known (--truth, or the .npz's `names`), the
report scores each clustering against them: purity, completeness and the adjusted Rand index.
REPORT/index.html shows per cluster an attribute-occurrence chart, the mean face, the first
eigenfaces and typical members; it opens in a browser from disk. REPORT/clusters.json holds
every face's cluster per method.

Exit status: 0 done, 1 report written but some sources could not be read (each named on
stderr), 2 bad usage or no report."""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import jinja2  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core import clustering  # noqa: E402
from core.clustering import Agreement, Clustering, FaceAttributes  # noqa: E402
from core.events import EventFormatError, read_events  # noqa: E402
from core.gallery import GalleryConfig  # noqa: E402
from core.media import MediaError, VideoFrames, load_image  # noqa: E402
from core.private import open_private, private_dir, write_private  # noqa: E402
from core.records import IMAGE_SCHEMA  # noqa: E402
from core.tracking import UNCONFIRMED  # noqa: E402
from models.align import align_face  # noqa: E402
from models.entry import ModelEntryError  # noqa: E402
from models.files import ModelFileError  # noqa: E402
from models.registry import DEFAULT_MODELS, ModelRegistry  # noqa: E402

REPORT_SCHEMA = "facelive.clusters/2"
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
    source: str  # image path, "video path#frame=N", or "embeddings.npz#N"
    caption: str
    box: list[float] | None  # None for bare embeddings
    landmarks: np.ndarray | None  # (5, 2); None for bare embeddings
    attributes: FaceAttributes
    name: str | None = None  # who it truly is, where known


def parse_args(argv):
    p = argparse.ArgumentParser(prog="launch/cluster.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path,
                   help="analyze.py output folder, an events.msgpack (with --video), or an .npz of embeddings")
    p.add_argument("--out", type=Path, required=True, help="report folder (index.html, PNGs, clusters.json)")
    p.add_argument("--video", type=Path, help="source video of the event log's stream")
    p.add_argument("--stream", help="stream of the event log to use (default: the one named after --video)")
    p.add_argument("--every", type=int, default=5,
                   help="event log: sample every N-th appearance of each confirmed track (default 5)")
    p.add_argument("--method", choices=("identity", "kmeans", "both"), default="identity",
                   help="identity: people by a distance threshold (default); kmeans: k by silhouette; both")
    p.add_argument("--threshold", type=float, default=GalleryConfig().threshold,
                   help="identity: average distance (the model's scale) below which faces are one person "
                        f"(default {GalleryConfig().threshold}, the gallery's)")
    p.add_argument("--truth", type=Path,
                   help='JSON {"path or its tail": "name", "two_people.jpg": ["left", "right"]}: who the faces '
                        "are (a list names a photo's faces from left to right); scores the clusters against it")
    p.add_argument("--max-faces", type=int,
                   help="cluster at most this many faces, an even sample of all (default: all)")
    p.add_argument("--k-max", type=int, default=10, help="k-means: try k = 2..K (default 10)")
    p.add_argument("--attribute-weight", type=float, default=0.0,
                   help="k-means: append gender/age/expression to the embeddings with this weight (default 0)")
    p.add_argument("--show", type=int, default=30,
                   help="the page details this many of the largest clusters per method (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed for k-means and sampling (default 0)")
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




def faces_from_npz(path: Path) -> tuple[list[Face], np.ndarray]:
    """Bare embeddings: (N, D) `embeddings`, L2-normalised here as the gallery's index does, and
    optional (N,) `names`, who each face truly is ("" where unknown)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            x = np.asarray(data["embeddings"], np.float32)
            names = [str(n) or None for n in data["names"]] if "names" in data.files else [None] * len(x)
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"{path}: not an .npz with an `embeddings` array ({error})") from None
    if x.ndim != 2 or len(names) != len(x):
        raise InputError(f"{path}: `embeddings` must be (N, D) with N `names`, got {x.shape} and {len(names)}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not (norms > 0).all():
        raise InputError(f"{path}: {int((norms == 0).sum())} embedding(s) of zero length")
    x /= norms
    blank = FaceAttributes()
    return [Face(f"{path}#{i}", f"face {i}", None, None, blank, name) for i, name in enumerate(names)], x


def apply_truth(faces: list[Face], truth_file: Path) -> None:
    """Names the faces from a truth file: each key is a source path, its last parts, or a folder
    above it (a gallery's person folder); the key nearest the file wins. A string names every
    face of that source, a list names its faces from left to right."""
    try:
        truth = json.loads(truth_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{truth_file}: not readable JSON: {error}") from None
    if not isinstance(truth, dict):
        raise InputError(f"{truth_file}: expected an object of path: name")
    # the longest key first, so that "gallery/obama/img1.jpg" wins over "img1.jpg"
    keys = sorted(((Path(k).parts, v) for k, v in truth.items()), key=lambda kv: -len(kv[0]))
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, face in enumerate(faces):
        by_source[face.source].append(i)
    for source, idx in by_source.items():
        parts = Path(source).parts
        value = next((v for end in range(len(parts), 0, -1) for k, v in keys if parts[:end][-len(k):] == k), None)
        if isinstance(value, str):
            value = [value] * len(idx)
        elif value is None:
            continue
        elif len(value) != len(idx):
            raise InputError(f"{truth_file}: {source} has {len(idx)} face(s), the truth names {len(value)}")
        for i, name in zip(sorted(idx, key=lambda i: faces[i].box[0]), value):
            faces[i].name = name


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


BAR_COLOURS = {"gender": "#4c78a8", "age": "#f58518", "expression": "#54a24b", "identity": "#b279a2"}
AGE_ORDER = [label for _, label in clustering.AGE_BANDS]


def _save(fig, path: Path) -> str:
    with open_private(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path.name


def attribute_chart(path: Path, counts: dict[str, Counter]) -> str | None:
    """Horizontal bars, one colour per attribute; None when nothing was recorded."""
    rows = []
    for group, c in counts.items():
        items = (sorted(c.items(), key=lambda kv: AGE_ORDER.index(kv[0])) if group == "age"
                 else sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
        rows += [(group, label, value) for label, value in items]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(3.6, 0.5 + 0.2 * len(rows)), dpi=100)
    y = np.arange(len(rows))[::-1]
    values = [v for _, _, v in rows]
    ax.barh(y, values, color=[BAR_COLOURS.get(g, "#888") for g, _, _ in rows])
    ax.set_yticks(y, [f"{g}: {label}" for g, label, _ in rows], fontsize=8)
    for yi, v in zip(y, values):
        ax.text(v, yi, f" {v}", va="center", fontsize=7)
    ax.set_xticks([])
    ax.spines[["top", "right", "bottom"]].set_visible(False)
    fig.tight_layout()
    return _save(fig, path)


def silhouette_chart(path: Path, result: Clustering) -> str:
    """Silhouette per candidate k, the chosen one dark."""
    ks = [int(k) for k, _ in result.tried]
    scores = [s or 0.0 for _, s in result.tried]
    fig, ax = plt.subplots(figsize=(3.6, 1.6), dpi=100)
    ax.bar(ks, scores, color=["#333" if k == result.param else "#bbb" for k in ks])
    ax.set_xticks(ks)
    ax.set_xlabel("k", fontsize=8)
    ax.set_ylabel("silhouette", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _save(fig, path)


TEMPLATE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>facelive clusters</title><style>
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
table.scores td, table.scores th { padding: 2px 10px; text-align: right; }
.muted { color: #888; }
</style></head><body>
<h1>facelive clusters</h1>
<p>{{ faces }} face(s) from <code>{{ source }}</code>.{% if pictures %} Eigenfaces are shown stretched around
mid gray (gray = 0); hover an image for its source.{% endif %}</p>
{% for m in methods %}
<h2>{{ m.title }}</h2>
<p>{{ m.clusters }} cluster(s){% if m.silhouette is not none %}, silhouette {{ "%.3f" | format(m.silhouette) }}{% endif %}.
{{ m.features }}</p>
{% if m.agreement %}
<table class="scores"><tr><th>against names</th><th>faces</th><th>people</th><th>purity</th><th>completeness</th>
<th>adjusted Rand index</th></tr>
<tr><td></td><td>{{ m.agreement.faces }}</td><td>{{ m.agreement.people }}</td>
<td>{{ "%.3f" | format(m.agreement.purity) }}</td><td>{{ "%.3f" | format(m.agreement.completeness) }}</td>
<td>{{ "%.3f" | format(m.agreement.ari) }}</td></tr></table>
{% endif %}
{% if m.silhouette_png %}<p>silhouette per k:</p><img src="{{ m.silhouette_png }}" alt="silhouette per k">{% endif %}
{% for c in m.shown %}
<div class="cluster"><h3>cluster {{ c.id }}: {{ c.size }} face(s){% if c.names %} &mdash;
{% for name, n in c.names %}{{ name }} &times;{{ n }}{% if not loop.last %}, {% endif %}{% endfor %}{% endif %}</h3>
<div>{% if c.chart %}<img src="{{ c.chart }}" alt="attributes of cluster {{ c.id }}">{% else %}<p class="muted">no attributes recorded</p>{% endif %}</div>
{% if c.pictures %}<div>{% for f in c.pictures %}<figure title="{{ f.title }}"><img src="{{ f.src }}" alt="">{{ f.caption }}</figure>{% endfor %}</div>{% endif %}
{% if c.thumbs %}<div class="faces">{% for f in c.thumbs %}<figure title="{{ f.title }}"><img src="{{ f.src }}" alt="">{{ f.caption }}</figure>{% endfor %}</div>{% endif %}
</div>
{% endfor %}
{% if m.hidden %}<p class="muted">{{ m.hidden }} smaller cluster(s) with {{ m.hidden_faces }} face(s) not shown (--show).</p>{% endif %}
{% endfor %}
</body></html>
"""
PAGE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(TEMPLATE)


def _pictures(out: Path, prefix: str, idx: np.ndarray, gray: np.ndarray) -> list[dict]:
    sample = idx[_even_sample(len(idx), EIGEN_SAMPLE)]
    eig = clustering.eigenfaces(gray[sample], EIGENFACES)
    items = [{"src": _png(out / f"{prefix}-mean.png", _to_gray_u8(eig.mean, False)), "caption": "mean face",
              "title": f"mean of {len(sample)} aligned crops"}]
    items += [{"src": _png(out / f"{prefix}-eigen{j + 1}.png", _to_gray_u8(c, True)),
               "caption": f"PC{j + 1} {100 * share:.0f} %",
               "title": f"principal component {j + 1}: {100 * share:.1f} % of the variance"}
              for j, (c, share) in enumerate(zip(eig.components, eig.explained)) if share >= MIN_COMPONENT_SHARE]
    return items


def method_view(out: Path, result: Clustering, features: np.ndarray, agreement: Agreement | None,
                faces: list[Face], chips: np.ndarray | None, gray: np.ndarray | None, show: int,
                attribute_weight: float) -> dict:
    """What the page shows of one clustering: its scores and its `show` largest clusters."""
    if result.method == "identity":
        title = f"People: average distance below {result.param:g} (the identity model's scale)"
        features_note = "Clustered on identity embeddings."
    else:
        title = f"k-means (faiss): k = {int(result.param)}"
        features_note = "Clustered on identity embeddings" + (
            f" + attributes (weight {attribute_weight:g})." if attribute_weight > 0 else ".")
    sizes = np.bincount(result.labels)
    shown = []
    for c in range(min(show, result.n_clusters)):
        idx = result.members(c)
        prefix = f"{result.method}-c{c}"
        names = Counter(faces[i].name for i in idx if faces[i].name is not None)
        view = {"id": c, "size": len(idx), "names": names.most_common(),
                "chart": attribute_chart(out / f"{prefix}-attributes.png",
                                         clustering.attribute_counts([faces[i].attributes for i in idx])),
                "pictures": [], "thumbs": []}
        if chips is not None:
            view["pictures"] = _pictures(out, prefix, idx, gray)
            view["thumbs"] = [{"src": _png(out / f"{prefix}-m{j}.png", chips[i]), "caption": faces[i].caption,
                               "title": faces[i].source}
                              for j, i in enumerate(clustering.typical_members(features, result, c, THUMBNAILS))]
        shown.append(view)
    return {"title": title, "features": features_note, "clusters": result.n_clusters,
            "silhouette": result.silhouette, "agreement": agreement, "shown": shown,
            "hidden": result.n_clusters - len(shown), "hidden_faces": int(sizes[len(shown):].sum()),
            "silhouette_png": silhouette_chart(out / f"{result.method}-silhouette.png", result) if result.tried else None}


def write_report(out: Path, source: str, results: list[tuple[Clustering, np.ndarray]],
                 scores: dict[str, Agreement | None], faces: list[Face], chips: np.ndarray | None, show: int,
                 attribute_weight: float) -> Path:
    private_dir(out)
    gray = None if chips is None else np.stack([cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in chips])
    methods = [method_view(out, r, x, scores[r.method], faces, chips, gray, show, attribute_weight)
               for r, x in tqdm(results, desc="report", file=sys.stderr)]
    write_private(out / "index.html", PAGE.render(faces=len(faces), source=source, pictures=chips is not None,
                                                  methods=methods))
    summary = {
        "schema": REPORT_SCHEMA, "input": source,
        "faces": [{"source": f.source, "caption": f.caption, "box": f.box, "name": f.name} for f in faces],
        "methods": {r.method: {r.param_name: r.param if r.param_name == "threshold" else int(r.param),
                               "silhouette": None if r.silhouette is None else round(r.silhouette, 4),
                               "clusters": r.n_clusters, "labels": r.labels.tolist(),
                               "agreement": None if scores[r.method] is None else {
                                   "faces": scores[r.method].faces, "people": scores[r.method].people,
                                   "purity": round(scores[r.method].purity, 4),
                                   "completeness": round(scores[r.method].completeness, 4),
                                   "ari": round(scores[r.method].ari, 4)}}
                    for r, _ in results},
    }
    write_private(out / "clusters.json", json.dumps(summary, indent=1))
    return out / "index.html"


def main(argv=None) -> int:
    args = parse_args(argv)
    for name, value, low in (("--every", args.every, 1), ("--max-faces", args.max_faces or 3, 3),
                             ("--k-max", args.k_max, 2), ("--show", args.show, 0)):
        if value < low:
            print(f"error: {name} must be at least {low}", file=sys.stderr)
            return 2
    failures = []

    def on_error(source, reason, count):
        failures.append(source)
        tqdm.write(f"error: {source}: {reason} ({count} face(s) skipped)", file=sys.stderr)

    try:
        x = None
        if args.input.is_dir():
            if args.video:
                raise InputError("--video goes with an event log, not an analyze folder")
            faces = faces_from_analyze(args.input)
        elif args.input.is_file() and args.input.suffix == ".npz":
            if args.truth:
                raise InputError("--truth names the faces of images and videos; an .npz carries its own `names`")
            faces, x = faces_from_npz(args.input)
        elif args.input.is_file():
            if args.video is None:
                raise InputError(f"{args.input}: an event log needs --video, the stream's source video")
            faces = faces_from_events(args.input, args.video, args.stream, args.every)
        else:
            raise InputError(f"{args.input}: no such file or folder")
        if args.truth:
            apply_truth(faces, args.truth)
        keep = _even_sample(len(faces), args.max_faces or len(faces))
        faces = [faces[i] for i in keep]
        if len(faces) < 3:
            raise InputError(f"{args.input}: {len(faces)} face(s) found; clustering needs at least 3")
        registry = ModelRegistry()
        scale = registry.get(DEFAULT_MODELS["identity"]).distance_scale
        chips = None
        if x is None:
            embedder = registry.load(DEFAULT_MODELS["identity"], args.threads)
            chips, kept = cut_chips(faces, embedder.crop.size, embedder.crop.padding, on_error)
            faces = [faces[i] for i in kept]
            if len(faces) < 3:
                raise InputError(f"{len(faces)} face(s) could be read from their sources; clustering needs at least 3")
            x = embed(embedder, chips)
        else:
            x = x[keep]
        results = []
        if args.method in ("identity", "both"):
            results.append((clustering.identity(x, args.threshold, scale, args.seed), x))
        if args.method in ("kmeans", "both"):
            features = clustering.face_features(x, [f.attributes for f in faces], args.attribute_weight)
            results.append((clustering.kmeans(features, range(2, args.k_max + 1), args.seed), features))
    except (InputError, EventFormatError, ModelFileError, ModelEntryError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    scores = {r.method: clustering.agreement(r.labels, [f.name for f in faces]) for r, _ in results}
    index = write_report(args.out, str(args.input), results, scores, faces, chips, args.show, args.attribute_weight)
    for r, _ in results:
        value = f"{int(r.param)}" if r.param_name == "k" else f"{r.param:g}"
        silhouette = "n/a" if r.silhouette is None else f"{r.silhouette:.3f}"
        line = f"{r.method}: {r.param_name}={value} silhouette={silhouette}, {r.n_clusters} cluster(s)"
        if (score := scores[r.method]) is not None:
            line += (f"; against {score.people} names: purity {score.purity:.3f}, "
                     f"completeness {score.completeness:.3f}, ARI {score.ari:.3f}")
        print(line)
    print(f"{len(faces)} face(s); report: {index}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
