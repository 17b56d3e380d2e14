"""Face tracker: gives each face a stable id across frames, through crossings and short occlusions.

Association runs in three rounds, most trusted tracks first, each solved as one assignment problem
with `scipy.optimize.linear_sum_assignment` (a greedy loop swaps ids where two faces cross):
  1. confirmed tracks seen within `coast_s`, at their constant-velocity predicted box;
  2. lost tracks (unseen for longer, but within `reid_window_s`), near where they left or along
     their predicted path: a lost face that comes back gets its id back;
  3. tentative tracks.
Detections left over start tentative tracks. A tentative track gets its id once it has
`confirm_hits` hits, so the ids a viewer sees are never wasted on one-frame false detections;
until then its detections report -1.

Tentative tracks die after `tentative_max_misses` missed frames (counted in frames: a false
detection should vanish quickly whatever the frame rate); confirmed tracks are lost and end by
time (seconds), because in live mode frames get dropped and frame counts mean little.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count

import numpy as np
from scipy.optimize import linear_sum_assignment

UNCONFIRMED = -1
_FORBIDDEN = 1e6


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    confirm_hits: int = 3
    tentative_max_misses: int = 1
    # a confirmed track without hits is matched at its predicted box for this long, then it is lost
    coast_s: float = 0.6
    # a lost track can take its id back until this long after its last hit; then it ends
    reid_window_s: float = 2.0
    # gates, in face sizes (square root of the box area)
    max_centre_distance: float = 1.0
    # the gate widens while a track goes unseen, because its motion is then only a guess
    gate_growth_per_s: float = 2.0
    reid_max_distance: float = 2.0
    max_area_ratio: float = 2.0
    iou_weight: float = 1.0
    distance_weight: float = 1.0
    area_weight: float = 0.5
    appearance_weight: float = 1.0
    # dlib ResNet embeddings: same person below 0.6
    max_embedding_distance: float = 0.6
    # weights of the newest measurement: lower is steadier against detector jitter, which on a
    # 30-pixel face easily changes the box area by half from one frame to the next
    velocity_smoothing: float = 0.3
    size_smoothing: float = 0.5
    # weak detections may continue a track but never start one
    min_start_score: float = 0.5


@dataclass(frozen=True, slots=True)
class TrackEnd:
    track_id: int
    t_first: float
    t_last_seen: float
    hits: int


@dataclass(frozen=True, slots=True)
class TrackUpdate:
    """What one `Tracker.update` call decided.

    `track_ids[i]` is the track of detection i, or `UNCONFIRMED` (-1) when it fed a tentative
    track or started one. `started` holds tracks confirmed this frame (their detection already
    carries the id); `lost` tracks stop being seen this frame but may come back, in `recovered`,
    with the same id; `ended` tracks are gone for good: drop their state and cancel their work.
    """

    t: float
    track_ids: tuple[int, ...]
    started: tuple[int, ...]
    lost: tuple[int, ...]
    recovered: tuple[int, ...]
    ended: tuple[TrackEnd, ...]


class _Track:
    __slots__ = ("track_id", "box", "velocity", "t_first", "t_last_seen", "hits", "misses",
                 "embedding", "is_lost")

    def __init__(self, t: float, box: np.ndarray, embedding: np.ndarray | None) -> None:
        self.track_id = UNCONFIRMED
        self.box = box
        self.velocity = np.zeros(2)
        self.t_first = t
        self.t_last_seen = t
        self.hits = 1
        self.misses = 0
        self.embedding = embedding
        self.is_lost = False

    @property
    def confirmed(self) -> bool:
        return self.track_id != UNCONFIRMED

    def box_at(self, t: float, horizon_s: float) -> np.ndarray:
        """The box moved at constant velocity, for at most `horizon_s`: beyond that the guess
        is worse than none."""
        dt = min(t - self.t_last_seen, horizon_s)
        shift = self.velocity * dt
        return self.box + np.concatenate([shift, shift])

    def hit(self, t: float, box: np.ndarray, embedding: np.ndarray | None, cfg: TrackerConfig) -> None:
        centre = _centres(box[None])[0]
        dt = t - self.t_last_seen
        if dt > 0:
            measured = (centre - _centres(self.box[None])[0]) / dt
            weight = 1.0 if self.hits == 1 else cfg.velocity_smoothing
            self.velocity = weight * measured + (1.0 - weight) * self.velocity
        size = cfg.size_smoothing * (box[2:] - box[:2]) + (1.0 - cfg.size_smoothing) * (
            self.box[2:] - self.box[:2]
        )
        self.box = np.concatenate([centre - size / 2, centre + size / 2])
        self.t_last_seen = t
        self.hits += 1
        self.misses = 0
        self.is_lost = False
        if embedding is not None:
            self.embedding = embedding

    def end(self) -> TrackEnd:
        return TrackEnd(self.track_id, self.t_first, self.t_last_seen, self.hits)


class Tracker:
    """Tracks the faces of one stream. Feed frames in time order."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = count(1)

    def update(
        self,
        t: float,
        boxes: np.ndarray,
        scores: np.ndarray,
        embeddings: Sequence[np.ndarray | None] | None = None,
    ) -> TrackUpdate:
        """`boxes` (N, 4) x1, y1, x2, y2 in pixels; `scores` (N,); `embeddings`, when given, one
        L2-normalised vector or None per detection."""
        cfg = self.config
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        det_embeddings = list(embeddings) if embeddings is not None else [None] * len(boxes)
        owner: list[_Track | None] = [None] * len(boxes)

        seen = [tr for tr in self._tracks if tr.confirmed and not tr.is_lost]
        lost = [tr for tr in self._tracks if tr.is_lost]
        tentative = [tr for tr in self._tracks if not tr.confirmed]
        self._match(t, seen, boxes, det_embeddings, owner, reid=False)
        recovered = self._match(t, lost, boxes, det_embeddings, owner, reid=True)
        self._match(t, tentative, boxes, det_embeddings, owner, reid=False)

        for i, track in enumerate(owner):
            if track is None and scores[i] >= cfg.min_start_score:
                owner[i] = _Track(t, boxes[i], det_embeddings[i])
                self._tracks.append(owner[i])

        started = self._confirm_ready()
        newly_lost, ended = self._age_unseen(t)
        return TrackUpdate(
            t=t,
            track_ids=tuple(tr.track_id if tr is not None else UNCONFIRMED for tr in owner),
            started=started,
            lost=newly_lost,
            recovered=tuple(tr.track_id for tr in recovered),
            ended=ended,
        )

    def predict(self, t: float) -> tuple[tuple[int, ...], np.ndarray]:
        """Where the confirmed tracks seen within `coast_s` are at time `t`, for a frame that was
        not detected (live mode detects as often as it can and carries boxes in between).
        Changes no track: the next detected frame associates as if this one never was."""
        shown = [tr for tr in self._tracks
                 if tr.confirmed and not tr.is_lost and t - tr.t_last_seen <= self.config.coast_s]
        boxes = np.array([tr.box_at(t, self.config.coast_s) for tr in shown], dtype=np.float32).reshape(-1, 4)
        return tuple(tr.track_id for tr in shown), boxes

    def set_embedding(self, track_id: int, embedding: np.ndarray) -> None:
        """Attach an identity embedding (e.g. from the identity actor) for the appearance check.
        Unknown or ended ids are ignored: results may arrive after their track ended."""
        for track in self._tracks:
            if track.track_id == track_id:
                track.embedding = np.asarray(embedding, dtype=np.float64)

    def end_all(self) -> tuple[TrackEnd, ...]:
        """At the end of the stream: ends every confirmed track."""
        ended = tuple(tr.end() for tr in self._tracks if tr.confirmed)
        self._tracks.clear()
        return ended

    def _match(
        self,
        t: float,
        tracks: list[_Track],
        boxes: np.ndarray,
        embeddings: list[np.ndarray | None],
        owner: list[_Track | None],
        reid: bool,
    ) -> list[_Track]:
        free = [i for i, tr in enumerate(owner) if tr is None]
        if not tracks or not free:
            return []
        cost = self._cost(t, tracks, boxes[free], [embeddings[i] for i in free], reid)
        rows, cols = linear_sum_assignment(cost)
        matched = []
        for r, c in zip(rows, cols):
            if cost[r, c] >= _FORBIDDEN:
                continue
            det = free[c]
            tracks[r].hit(t, boxes[det], embeddings[det], self.config)
            owner[det] = tracks[r]
            matched.append(tracks[r])
        return matched

    def _cost(
        self,
        t: float,
        tracks: list[_Track],
        boxes: np.ndarray,
        embeddings: list[np.ndarray | None],
        reid: bool,
    ) -> np.ndarray:
        cfg = self.config
        predicted = np.stack([tr.box_at(t, cfg.coast_s) for tr in tracks])
        sizes = np.sqrt(_areas(predicted))[:, None]
        distance = _centre_distances(predicted, boxes) / sizes
        if reid:
            left_at = np.stack([tr.box for tr in tracks])
            distance = np.minimum(distance, _centre_distances(left_at, boxes) / sizes)
            gate = np.full((len(tracks), 1), cfg.reid_max_distance)
        else:
            unseen = np.array([t - tr.t_last_seen for tr in tracks])[:, None]
            gate = cfg.max_centre_distance + cfg.gate_growth_per_s * unseen
        log_area_ratio = np.abs(np.log(_areas(boxes)[None, :] / _areas(predicted)[:, None]))
        cost = (
            cfg.iou_weight * (1.0 - _iou(predicted, boxes))
            + cfg.distance_weight * distance
            + cfg.area_weight * log_area_ratio
        )
        appearance = self._embedding_distances(tracks, embeddings)
        known = ~np.isnan(appearance)
        cost[known] += cfg.appearance_weight * appearance[known]
        forbidden = (
            (distance > gate)
            | (log_area_ratio > np.log(cfg.max_area_ratio))
            | (known & (np.nan_to_num(appearance) > cfg.max_embedding_distance))
        )
        cost[forbidden] = _FORBIDDEN
        return cost

    @staticmethod
    def _embedding_distances(
        tracks: list[_Track], embeddings: list[np.ndarray | None]
    ) -> np.ndarray:
        """Euclidean distances where both sides have an embedding, NaN elsewhere."""
        out = np.full((len(tracks), len(embeddings)), np.nan)
        for r, track in enumerate(tracks):
            if track.embedding is None:
                continue
            for c, emb in enumerate(embeddings):
                if emb is not None:
                    out[r, c] = float(np.linalg.norm(track.embedding - emb))
        return out

    def _confirm_ready(self) -> tuple[int, ...]:
        started = []
        for track in self._tracks:
            if not track.confirmed and track.hits >= self.config.confirm_hits:
                track.track_id = next(self._next_id)
                started.append(track.track_id)
        return tuple(started)

    def _age_unseen(self, t: float) -> tuple[tuple[int, ...], tuple[TrackEnd, ...]]:
        cfg = self.config
        newly_lost: list[int] = []
        ended: list[TrackEnd] = []
        kept: list[_Track] = []
        for track in self._tracks:
            if track.t_last_seen == t:
                kept.append(track)
                continue
            if not track.confirmed:
                track.misses += 1
                if track.misses <= cfg.tentative_max_misses:
                    kept.append(track)
                continue
            unseen = t - track.t_last_seen
            if unseen > cfg.reid_window_s:
                ended.append(track.end())
                continue
            if unseen > cfg.coast_s and not track.is_lost:
                track.is_lost = True
                newly_lost.append(track.track_id)
            kept.append(track)
        self._tracks = kept
        return tuple(newly_lost), tuple(ended)


def _areas(boxes: np.ndarray) -> np.ndarray:
    w = np.clip(boxes[:, 2] - boxes[:, 0], 1e-6, None)
    h = np.clip(boxes[:, 3] - boxes[:, 1], 1e-6, None)
    return w * h


def _centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def _centre_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(_centres(a)[:, None, :] - _centres(b)[None, :, :], axis=2)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter / (_areas(a)[:, None] + _areas(b)[None, :] - inter)
