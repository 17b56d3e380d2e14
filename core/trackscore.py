"""Scores a run's tracks against MOTChallenge ground truth: MOTA, IDF1 and ID switches with
`motmetrics`, and per ground-truth track whether the fused gender and identity of the predicted
track that followed it longest are right.

Frames are numbered as in the ground-truth file (from 1); an event's `seq` s is frame s + 1.
Only confirmed faces count as predictions: a face with track id -1 is tentative and never shown.

motmetrics 1.4.0 (the newest release) still calls `np.asfarray`, which NumPy 2 removed, in its
`distances.iou_matrix`; the IoU distances are computed here and handed to its accumulator, whose
bookkeeping and metrics work on NumPy 2 and pandas 3."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import motmetrics as mm
import numpy as np

from core.events import frame_event, track_event
from core.geometry import iou_matrix
from core.tracking import Tracker, TrackerConfig

TENTATIVE = -1
# the MOTChallenge convention: a prediction covers a target when their IoU is at least 0.5
MAX_IOU_DISTANCE = 0.5


@dataclass(frozen=True, slots=True)
class Switch:
    frame: int
    gt_id: int
    previous: int  # predicted track id that followed gt_id before
    current: int


@dataclass(frozen=True, slots=True)
class TrackCheck:
    """One ground-truth track: which predicted tracks covered it, and whether the fused attributes
    of the one that covered it longest (`main`) agree with the truth. A check is None where there
    is nothing to check: no truth, no covering track, or (identity) no track carries identity."""

    gt_id: int
    name: str | None
    gender: str | None
    frames: int
    covered: int  # frames matched to some predicted track
    predicted: tuple[tuple[int, int], ...]  # (predicted track id, frames), longest first
    main: int | None
    missed: tuple[tuple[int, int], ...]  # (first, last) frame ranges with no prediction on it
    fused_gender: str | None
    gender_ok: bool | None
    expected_identity: str | None
    fused_identity: str | None
    identity_ok: bool | None


@dataclass(frozen=True, slots=True)
class TrackScore:
    mota: float
    idf1: float
    id_switches: int
    precision: float
    recall: float
    frames: int
    gt_tracks: int
    predicted_tracks: int
    false_positives: int
    misses: int
    tracks: tuple[TrackCheck, ...]
    switches: tuple[Switch, ...]


def load_mot_gt(path: Path) -> dict[int, list[tuple[int, list[float]]]]:
    """frame -> [(id, [x1, y1, x2, y2])] from MOTChallenge rows frame,id,x,y,w,h,...; every row
    counts as a target."""
    frames: dict[int, list[tuple[int, list[float]]]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(",")
        try:
            frame, gt_id = int(float(fields[0])), int(float(fields[1]))
            x, y, w, h = (float(v) for v in fields[2:6])
        except (ValueError, IndexError) as error:
            raise ValueError(f"{path}:{number}: not a MOTChallenge row frame,id,x,y,w,h: {line!r}") from error
        frames.setdefault(frame, []).append((gt_id, [x, y, x + w, y + h]))
    return frames


def iou_distances(gt: list[list[float]], predicted: list[list[float]]) -> np.ndarray:
    """1 - IoU of [x1, y1, x2, y2] boxes, NaN (no match allowed) past MAX_IOU_DISTANCE."""
    distance = 1.0 - iou_matrix(gt, predicted)
    distance[distance > MAX_IOU_DISTANCE] = np.nan
    return distance


def tracked_events(stream: str, detections: Iterable[tuple[float, np.ndarray, np.ndarray,
                                                        Sequence[np.ndarray | None] | None]],
                   config: TrackerConfig = TrackerConfig()) -> list[dict]:
    """Tracks per-frame detections (t, boxes, scores, embeddings or None) with no pipeline and
    returns the frame and track_end events a lossless run would write: embeddings per detection
    show what appearance can do when every identity result is in at once, an upper bound that
    separates the tracker from the budget and timing of the identity pool."""
    tracker = Tracker(config)
    events: list[dict] = []
    t = 0.0
    for seq, (t, boxes, scores, embeddings) in enumerate(detections):
        update = tracker.update(t, boxes, scores, embeddings)
        events += [track_event("track_end", stream, e.track_id, t, t_first=e.t_first,
                               t_last_seen=e.t_last_seen, hits=e.hits) for e in update.ended]
        faces = [{"track_id": _shown(tracker, tid), "box": [float(v) for v in box], "score": float(score)}
                 for tid, box, score in zip(update.track_ids, boxes, scores)]
        faces += [{"track_id": _shown(tracker, tid), "box": [float(v) for v in box], "score": 0.0, "predicted": True}
                  for tid, box in zip(update.coasting, update.coasting_boxes)]
        events.append(frame_event(stream, seq, t, faces))
    events += [track_event("track_end", stream, e.track_id, t, t_first=e.t_first,
                           t_last_seen=e.t_last_seen, hits=e.hits) for e in tracker.end_all()]
    return events


def _shown(tracker: Tracker, track_id: int) -> int:
    return TENTATIVE if track_id == TENTATIVE else tracker.shown_id(track_id)


def _ranges(frames: list[int]) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for f in sorted(frames):
        if out and f == out[-1][1] + 1:
            out[-1][1] = f
        else:
            out.append([f, f])
    return tuple((a, b) for a, b in out)


def _pick_stream(events: list[dict], stream: str | None) -> str | None:
    streams = sorted({e["stream"] for e in events if "stream" in e})
    if stream is not None:
        if stream not in streams:
            raise ValueError(f"no events of stream {stream!r}; streams: {streams}")
        return stream
    if len(streams) > 1:
        raise ValueError(f"events of several streams {streams}: name the one to score")
    return streams[0] if streams else None


def score_tracks(events: Iterable[dict], gt_path: Path, truth_json_path: Path | None = None,
                 stream: str | None = None, known_names: Collection[str] | None = None,
                 processed_only: bool = False) -> TrackScore:
    """Scores one stream's confirmed faces against the ground truth. `known_names`: the people
    the gallery holds; anyone else should stay unnamed (identity None). None: everyone in the
    truth is expected to be named. `processed_only`: frames with no frame event (a live run
    dropped them) are left out instead of counting as misses."""
    events = list(events)
    stream = _pick_stream(events, stream)
    events = [e for e in events if e.get("stream") == stream]
    gt = load_mot_gt(gt_path)
    truth = json.loads(Path(truth_json_path).read_text()) if truth_json_path else {}
    people = {int(k): v for k, v in truth.get("tracks", {}).items()}

    predicted: dict[int, list[tuple[int, list[float]]]] = {}
    last_face: dict[int, dict] = {}
    ends: dict[int, dict] = {}
    for event in events:
        if event["type"] == "frame":
            faces = [f for f in event["faces"] if f["track_id"] != TENTATIVE]
            predicted[event["seq"] + 1] = [(f["track_id"], f["box"]) for f in faces]
            for face in faces:
                last_face[face["track_id"]] = face
        elif event["type"] == "track_end":
            ends[event["track_id"]] = event

    # frames the pipeline left out (dropped, or the run cut short) still count: their targets are misses
    last_frame = max([*gt, *predicted, int(truth.get("frames", 0))], default=0)
    if processed_only:
        gt = {frame: targets for frame, targets in gt.items() if frame in predicted}
    acc = mm.MOTAccumulator(auto_id=False)
    for frame in range(1, last_frame + 1):
        if processed_only and frame not in predicted:
            continue
        targets, hyps = gt.get(frame, []), predicted.get(frame, [])
        acc.update([i for i, _ in targets], [i for i, _ in hyps],
                   iou_distances([b for _, b in targets], [b for _, b in hyps]), frameid=frame)

    summary = mm.metrics.create().compute(
        acc, metrics=["mota", "idf1", "num_switches", "precision", "recall", "num_frames",
                      "num_false_positives", "num_misses"], name="run")
    row = summary.loc["run"]

    pairs: dict[int, Counter] = {}
    matched_frames: dict[int, set[int]] = {}
    follower: dict[int, int] = {}
    switches: list[Switch] = []
    ev = acc.mot_events
    for (frame, _), kind, oid, hid in zip(ev.index, ev["Type"], ev["OId"], ev["HId"]):
        if kind not in ("MATCH", "SWITCH"):
            continue
        oid, hid = int(oid), int(hid)
        pairs.setdefault(oid, Counter())[hid] += 1
        matched_frames.setdefault(oid, set()).add(int(frame))
        if kind == "SWITCH" and oid in follower:
            switches.append(Switch(int(frame), oid, follower[oid], hid))
        follower[oid] = hid

    def fused(track_id: int | None) -> dict:
        # a run cut short has no track_end for its open tracks: their last shown face carries the
        # same fused attributes as they stood then
        if track_id is None:
            return {}
        return ends.get(track_id) or last_face.get(track_id, {})

    carries_identity = any(e.get("identity") for e in ends.values()) or any(
        f.get("identity") for f in last_face.values())
    gt_frames: dict[int, list[int]] = {}
    for frame, targets in gt.items():
        for gt_id, _ in targets:
            gt_frames.setdefault(gt_id, []).append(frame)

    checks = []
    for gt_id in sorted(gt_frames):
        person = people.get(gt_id, {})
        counts = pairs.get(gt_id, Counter()).most_common()
        main = counts[0][0] if counts else None
        attributes = fused(main)
        # events carry identity as {"name", "distance"} (or null)
        fused_name = (attributes.get("identity") or {}).get("name")
        name, gender = person.get("name"), person.get("gender")
        expected = name if known_names is None or name in known_names else None
        covered = matched_frames.get(gt_id, set())
        checks.append(TrackCheck(
            gt_id=gt_id, name=name, gender=gender, frames=len(gt_frames[gt_id]), covered=len(covered),
            predicted=tuple(counts), main=main,
            missed=_ranges([f for f in gt_frames[gt_id] if f not in covered]),
            fused_gender=attributes.get("gender"),
            gender_ok=None if gender is None or main is None else attributes.get("gender") == gender,
            expected_identity=expected, fused_identity=fused_name,
            identity_ok=(None if not carries_identity or name is None or main is None
                         else fused_name == expected)))

    shown = {hid for _, hyps in predicted.items() for hid, _ in hyps}
    return TrackScore(
        mota=float(row["mota"]), idf1=float(row["idf1"]), id_switches=int(row["num_switches"]),
        precision=float(row["precision"]), recall=float(row["recall"]), frames=int(row["num_frames"]),
        gt_tracks=len(gt_frames), predicted_tracks=len(shown),
        false_positives=int(row["num_false_positives"]), misses=int(row["num_misses"]),
        tracks=tuple(checks), switches=tuple(switches))


def _mark(ok: bool | None) -> str:
    return "-" if ok is None else ("ok" if ok else "WRONG")


def format_score(score: TrackScore) -> str:
    lines = [f"MOTA {score.mota:.3f}  IDF1 {score.idf1:.3f}  ID switches {score.id_switches}  "
             f"precision {score.precision:.3f}  recall {score.recall:.3f}",
             f"frames {score.frames}, GT tracks {score.gt_tracks}, predicted tracks {score.predicted_tracks}, "
             f"false positives {score.false_positives}, misses {score.misses}",
             f"{'gt':>3} {'name':<18} {'frames':>6} {'covered':>7}  {'tracks (frames)':<22} "
             f"{'gender':<8} {'fused':<8} {'check':<5} {'identity':<18} {'fused':<18} check"]
    for t in score.tracks:
        tracks = " ".join(f"{h}({n})" for h, n in t.predicted) or "none"
        lines.append(f"{t.gt_id:>3} {t.name or '?':<18} {t.frames:>6} {t.covered:>7}  {tracks:<22} "
                     f"{t.gender or '?':<8} {t.fused_gender or '-':<8} {_mark(t.gender_ok):<5} "
                     f"{t.expected_identity or '(none)':<18} {t.fused_identity or '(none)':<18} "
                     f"{_mark(t.identity_ok)}")
    for s in score.switches:
        lines.append(f"switch at frame {s.frame}: GT {s.gt_id} from track {s.previous} to {s.current}")
    for t in score.tracks:
        if t.missed:
            spans = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in t.missed)
            lines.append(f"GT {t.gt_id} missed at frames {spans}")
    return "\n".join(lines)
