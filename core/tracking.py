"""Face tracker: gives each face a stable id across frames, through crossings, occlusions and absences.

Association runs in three rounds, most trusted tracks first, each solved as one assignment problem
with `scipy.optimize.linear_sum_assignment` (a greedy loop swaps ids where two faces cross):
  1. confirmed tracks seen within `coast_s`, at their constant-velocity predicted box;
  2. lost tracks (unseen for longer, but within `reid_window_s`): by appearance anywhere in the
     picture and at any size, since a person who comes back need not come back where they left;
     without appearance only near where they left or along their path, and only for
     `reid_by_position_s`, because after that a newcomer in the same spot is as likely;
  3. tentative tracks.
Appearance is the identity embedding (L2-normalised; distances compared on dlib's scale, where 0.6
separates people): where a track and a detection both have one it joins the cost and vetoes pairs
of clearly different people. Embeddings usually come later than detections (the identity pool
runs after a track is confirmed), so a person who comes back first gets a new id; when that
track's embedding arrives (`set_embedding`) and matches a lost track it takes the lost id back
and its short-lived id is reported as ended. So that no viewer (and no score) sees that short-lived
id, a track confirmed while such a lost track exists waits for its first look before it shows
any id (`shown_id`, at most `look_wait_s`); frames already tracked under the short-lived id show
the id it merged into.

A confirmed track the detector misses for a frame or two is still reported, at its predicted box
(`TrackUpdate.coasting`), for up to `show_coasting_s`: detectors drop faces for single frames at
crossings and in motion blur, and the face has not gone anywhere. Not after a weak detection or
one cut by the edge (the face is fading or leaving), nor where another face covers the guess.

Detections left over start tentative tracks. A tentative track gets its id once it has
`confirm_hits` hits, so the ids a viewer sees are never wasted on one-frame false detections;
until then its detections report -1.

Tentative tracks die after `tentative_max_misses` missed frames (counted in frames: a false
detection should vanish quickly whatever the frame rate); confirmed tracks are lost and end by
time (seconds), because in live mode frames get dropped and frame counts mean little.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import count

import numpy as np
from scipy.optimize import linear_sum_assignment

from core.geometry import areas as _areas
from core.geometry import centre_distances as _centre_distances
from core.geometry import centres as _centres
from core.geometry import covered as _covered
from core.geometry import iou_matrix as _iou
from core.need import TrackMotion

UNCONFIRMED = -1
_FORBIDDEN = 1e6


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    confirm_hits: int = 3
    tentative_max_misses: int = 1
    # a confirmed track without hits is matched at its predicted box for this long, then it is lost
    coast_s: float = 0.6
    # a lost track can take its id back until this long after its last hit; then it ends
    reid_window_s: float = 10.0
    # ...but only by appearance after this long: by position alone a newcomer would take it
    reid_by_position_s: float = 2.0
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
    # embeddings are L2-normalised; x1.4 gives dlib's scale (models/zoo.toml distance_scale)
    embedding_distance_scale: float = 1.4
    # on dlib's scale. Frames of one face lie 0.1-0.35 apart, people 0.55 and more (README); a
    # face half hidden at a crossing drifts towards 0.6, so the veto among visible tracks is looser
    # than the bar for taking back a lost id with no position to go by
    max_embedding_distance: float = 0.7
    reid_embedding_distance: float = 0.5
    # weight of the newest embedding in a track's running appearance
    embedding_smoothing: float = 0.3
    # a face box narrower than this (width / height; a whole face is 0.65-0.85) is cut by the
    # frame's edge or by a face in front: its embedding describes half a face and lands within
    # 0.55-0.6 of strangers, so it is ignored
    min_embedding_aspect: float = 0.55
    # ...unless it lies this close to a lost track's (half faces of strangers came to 0.55)
    reid_cut_embedding_distance: float = 0.4
    # weights of the newest measurement: lower is steadier against detector jitter, which on a
    # 30-pixel face easily changes the box area by half from one frame to the next
    velocity_smoothing: float = 0.3
    size_smoothing: float = 0.5
    # weak detections (the detector's threshold may be lower) may continue a track but never
    # start one: they are matched last, only to confirmed tracks still without a detection,
    # and only where they overlap the track's predicted box this much
    min_start_score: float = 0.5
    weak_min_iou: float = 0.3
    # a confirmed track missed by the detector is reported at its predicted box for this long
    # (0: never); within `coast_s`, as live mode's carried frames. On crossing_faces (tracked
    # offline, 2026-11-27) 0.2 s took IDF1 from 0.973 to 0.980, 0.4 s to 0.983, longer no further
    show_coasting_s: float = 0.4
    # ...unless a detected face covers more than this share of its predicted box: then it has
    # most likely gone behind that face (on the hard video, coasting behind faces cost IDF1
    # 0.984 -> 0.977; with this rule 0.984, and crossing_faces 0.983 -> 0.986)
    max_coasting_cover: float = 0.5
    # a track confirmed while a lost track with an appearance might be the same person shows no id
    # until its first embedding says who it is, or for at most this long (0: shows its id at once)
    look_wait_s: float = 1.5


@dataclass(frozen=True, slots=True)
class TrackEnd:
    track_id: int
    t_first: float
    t_last_seen: float
    hits: int
    # the earlier track this one turned out to be (re-identified by appearance), if any
    merged_into: int | None = None


@dataclass(frozen=True, slots=True)
class TrackUpdate:
    """What one `Tracker.update` call decided.

    `track_ids[i]` is the track of detection i, or `UNCONFIRMED` (-1) when it fed a tentative
    track or started one. `started` holds tracks confirmed this frame (their detection already
    carries the id); `lost` tracks stop being seen this frame but may come back, in `recovered`,
    with the same id; `ended` tracks are gone for good: drop their state and cancel their work.
    `coasting` tracks had no detection this frame but a clear one within `show_coasting_s`, and no
    detected face covers where they should be; their predicted boxes are the rows of
    `coasting_boxes`.
    """

    t: float
    track_ids: tuple[int, ...]
    started: tuple[int, ...]
    lost: tuple[int, ...]
    recovered: tuple[int, ...]
    ended: tuple[TrackEnd, ...]
    coasting: tuple[int, ...] = ()
    coasting_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))


class _Track:
    __slots__ = ("track_id", "box", "velocity", "t_first", "t_last_seen", "hits", "misses",
                 "embedding", "is_lost", "first_look", "look_due", "last_clear")

    def __init__(self, t: float, box: np.ndarray, embedding: np.ndarray | None) -> None:
        self.track_id = UNCONFIRMED
        self.box = box
        self.velocity = np.zeros(2)
        self.t_first = t
        self.t_last_seen = t
        self.hits = 1
        self.misses = 0
        self.embedding = None
        self.is_lost = False
        self.first_look = False  # got its first embedding in this update
        # while set: confirmed, but its id stays hidden until its first look or this time
        self.look_due: float | None = None
        # its latest detection was strong and of a whole face: missing it next is the detector's
        # slip, while after a weak or cut one the face is most likely leaving or going behind
        self.last_clear = False
        if embedding is not None:
            self.see(embedding, 1.0)

    @property
    def confirmed(self) -> bool:
        return self.track_id != UNCONFIRMED

    def box_at(self, t: float, horizon_s: float) -> np.ndarray:
        """The box moved at constant velocity, for at most `horizon_s`: beyond that the guess
        is worse than none."""
        dt = min(t - self.t_last_seen, horizon_s)
        shift = self.velocity * dt
        return self.box + np.concatenate([shift, shift])

    def hit(self, t: float, box: np.ndarray, score: float, embedding: np.ndarray | None, cfg: TrackerConfig) -> None:
        self.last_clear = score >= cfg.min_start_score and _whole_face(box, cfg)
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
            self.see(embedding, cfg.embedding_smoothing)

    def see(self, embedding: np.ndarray, smoothing: float) -> None:
        embedding = np.asarray(embedding, dtype=np.float64)
        self.first_look = self.embedding is None
        if self.embedding is not None:
            embedding = smoothing * embedding + (1.0 - smoothing) * self.embedding
        self.embedding = embedding / max(float(np.linalg.norm(embedding)), 1e-12)

    @property
    def awaiting_look(self) -> bool:
        return self.look_due is not None

    def take_over(self, other: _Track) -> None:
        """This lost track is the person `other` has followed since coming back: it carries on
        from where `other` is now."""
        self.box, self.velocity, self.t_last_seen = other.box, other.velocity, other.t_last_seen
        self.hits += other.hits
        self.misses = 0
        self.is_lost = False

    def end(self) -> TrackEnd:
        return TrackEnd(self.track_id, self.t_first, self.t_last_seen, self.hits)


class Tracker:
    """Tracks the faces of one stream. Feed frames in time order."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = count(1)
        # tracks merged into a lost one by `set_embedding`, reported with the next update
        self._merged: list[TrackEnd] = []
        self._recovered: list[int] = []
        # merged id -> the id it turned out to be, for frames tracked before the merge
        self._merged_into: dict[int, int] = {}

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
        det_embeddings = [e if self.whole_face(b) else None for e, b in zip(det_embeddings, boxes)]
        owner: list[_Track | None] = [None] * len(boxes)

        seen = [tr for tr in self._tracks if tr.confirmed and not tr.is_lost]
        lost = [tr for tr in self._tracks if tr.is_lost]
        tentative = [tr for tr in self._tracks if not tr.confirmed]
        strong = scores >= cfg.min_start_score
        self._match(t, seen, boxes, scores, det_embeddings, owner, reid=False, usable=strong)
        recovered = self._match(t, lost, boxes, scores, det_embeddings, owner, reid=True, usable=strong)
        self._match(t, tentative, boxes, scores, det_embeddings, owner, reid=False, usable=strong)
        # ByteTrack's second round: a weak detection is most often a face half hidden or blurred,
        # so it only continues a visible track that lost its strong one, where it overlaps
        unmatched = [tr for tr in seen if tr.t_last_seen != t]
        self._match(t, unmatched, boxes, scores, det_embeddings, owner, reid=False, usable=~strong,
                    min_iou=cfg.weak_min_iou)

        for i, track in enumerate(owner):
            if track is None and scores[i] >= cfg.min_start_score:
                owner[i] = _Track(t, boxes[i], det_embeddings[i])
                self._tracks.append(owner[i])
        for i, track in enumerate(owner):
            if track is not None and track.first_look:
                track.first_look = False
                owner[i] = self._merge_into_lost(track) or track
                owner[i].look_due = None

        started = self._confirm_ready(t)
        newly_lost, ended = self._age_unseen(t)
        merged, self._merged = tuple(self._merged), []
        taken_back, self._recovered = self._recovered, []
        coasting = [tr for tr in self._tracks if tr.confirmed and not tr.is_lost and tr.last_clear
                    and 0 < t - tr.t_last_seen <= cfg.show_coasting_s]
        guessed = np.array([tr.box_at(t, cfg.coast_s) for tr in coasting]).reshape(-1, 4)
        if len(guessed) and len(boxes):
            clear = _covered(guessed, boxes).max(axis=1) <= cfg.max_coasting_cover
            coasting, guessed = [tr for tr, c in zip(coasting, clear) if c], guessed[clear]
        return TrackUpdate(
            t=t,
            track_ids=tuple(tr.track_id if tr is not None else UNCONFIRMED for tr in owner),
            started=started,
            lost=newly_lost,
            recovered=tuple(taken_back) + tuple(tr.track_id for tr in recovered),
            ended=merged + ended,
            coasting=tuple(tr.track_id for tr in coasting),
            coasting_boxes=guessed,
        )

    def shown_id(self, track_id: int) -> int:
        """The id to show for a face tracked as `track_id`, as things stand now: the id it merged
        into if it turned out to be an earlier track, `UNCONFIRMED` while it waits for its first
        look to say whether it is one."""
        track_id = self._resolved(track_id)
        track = next((tr for tr in self._tracks if tr.track_id == track_id), None)
        return UNCONFIRMED if track is not None and track.awaiting_look else track_id

    def _resolved(self, track_id: int) -> int:
        while track_id in self._merged_into:
            track_id = self._merged_into[track_id]
        return track_id

    def awaiting_look(self, track_id: int) -> bool:
        """Whether `track_id` hides its id until its first embedding arrives."""
        return any(tr.track_id == track_id and tr.awaiting_look for tr in self._tracks)

    def predict(self, t: float) -> tuple[tuple[int, ...], np.ndarray]:
        """Where the confirmed tracks seen within `coast_s` are at time `t`, for a frame that was
        not detected (live mode detects as often as it can and carries boxes in between).
        Changes no track: the next detected frame associates as if this one never was."""
        shown = [tr for tr in self._tracks
                 if tr.confirmed and not tr.is_lost and t - tr.t_last_seen <= self.config.coast_s]
        boxes = np.array([tr.box_at(t, self.config.coast_s) for tr in shown], dtype=np.float32).reshape(-1, 4)
        return tuple(tr.track_id for tr in shown), boxes

    def motions(self) -> tuple[TrackMotion, ...]:
        """How each track in view moves, and whether it is settled (confirmed, and not missed at
        the last detection): what its stream's need for the next detection is weighed from. Lost
        tracks are out of view; they count only if they come back."""
        out = []
        for tr in self._tracks:
            if tr.is_lost:
                continue
            width = max(float(tr.box[2] - tr.box[0]), 1.0)
            out.append(TrackMotion(float(np.hypot(*tr.velocity)) / width, tr.confirmed and not tr.misses))
        return tuple(out)

    def detected(self, t: float) -> tuple[tuple[int, ...], np.ndarray]:
        """The confirmed tracks detected at time `t`, and their boxes."""
        shown = [tr for tr in self._tracks if tr.confirmed and not tr.is_lost and tr.t_last_seen == t]
        return tuple(tr.track_id for tr in shown), np.array([tr.box for tr in shown], np.float64).reshape(-1, 4)

    def set_embedding(self, track_id: int, embedding: np.ndarray, box: np.ndarray | None = None) -> None:
        """Attach an identity embedding (e.g. from the identity actor) for the appearance check;
        `box`: the face's box in the frame the embedding was computed from (default: the track's
        box now; results come frames late, when a face may have moved off the edge or back).
        Unknown or ended ids are ignored: results may arrive after their track ended. A track
        that started after a lost one was last seen and looks like it is that person: the lost
        track takes over, and `track_id` ends with the next update."""
        track = next((tr for tr in self._tracks if tr.track_id == track_id), None)
        if track is None:
            return
        look = np.asarray(embedding, dtype=np.float64)
        look = look / max(float(np.linalg.norm(look)), 1e-12)
        whole = self.whole_face(np.asarray(track.box if box is None else box, dtype=np.float64))
        if whole:
            track.see(look, self.config.embedding_smoothing)
            track.first_look = False
        if not track.is_lost:
            # judged by this look alone (the running mean may still hold a poor first look); a
            # cut face's look never shapes the track's appearance, but one very close to a lost
            # track's still names it
            cfg = self.config
            found = self._merge_into_lost(track, look, cfg.reid_embedding_distance if whole
                                          else cfg.reid_cut_embedding_distance)
            if found is not None or whole:
                (found or track).look_due = None

    def whole_face(self, box: np.ndarray) -> bool:
        """Whether a face box is whole, not cut by the picture's edge or a face in front."""
        return _whole_face(box, self.config)

    def _merge_into_lost(self, track: _Track, look: np.ndarray | None = None,
                         max_distance: float | None = None) -> _Track | None:
        """The lost track `track` is the same person as, if any, by `look` (default: its running
        appearance): it takes over and `track` goes."""
        earlier = [tr for tr in self._tracks if tr.is_lost and tr.embedding is not None
                   and tr.t_last_seen < track.t_first]
        if not earlier:
            return None
        distances = self._embedding_distances(earlier, [track.embedding if look is None else look])[:, 0]
        best = int(np.argmin(distances))
        if distances[best] > (self.config.reid_embedding_distance if max_distance is None else max_distance):
            return None
        found = earlier[best]
        found.take_over(track)
        if track.embedding is not None:
            found.see(track.embedding, self.config.embedding_smoothing)
        found.first_look = False
        self._tracks.remove(track)
        if track.confirmed:
            self._merged.append(replace(track.end(), merged_into=found.track_id))
            self._merged_into[track.track_id] = found.track_id
        self._recovered.append(found.track_id)
        return found

    def end_all(self) -> tuple[TrackEnd, ...]:
        """At the end of the stream: ends every confirmed track."""
        ended = tuple(tr.end() for tr in self._tracks if tr.confirmed)
        self._tracks.clear()
        self._merged_into.clear()
        return ended

    def _match(
        self,
        t: float,
        tracks: list[_Track],
        boxes: np.ndarray,
        scores: np.ndarray,
        embeddings: list[np.ndarray | None],
        owner: list[_Track | None],
        reid: bool,
        usable: np.ndarray,
        min_iou: float = 0.0,
    ) -> list[_Track]:
        free = [i for i, tr in enumerate(owner) if tr is None and usable[i]]
        if not tracks or not free:
            return []
        cost = self._cost(t, tracks, boxes[free], [embeddings[i] for i in free], reid)
        if min_iou > 0:
            predicted = np.stack([tr.box_at(t, self.config.coast_s) for tr in tracks])
            cost[_iou(predicted, boxes[free]) < min_iou] = _FORBIDDEN
        rows, cols = linear_sum_assignment(cost)
        matched = []
        for r, c in zip(rows, cols):
            if cost[r, c] >= _FORBIDDEN:
                continue
            det = free[c]
            tracks[r].hit(t, boxes[det], scores[det], embeddings[det], self.config)
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
        unseen = np.array([t - tr.t_last_seen for tr in tracks])[:, None]
        if reid:
            left_at = np.stack([tr.box for tr in tracks])
            distance = np.minimum(distance, _centre_distances(left_at, boxes) / sizes)
            gate = np.where(unseen <= cfg.reid_by_position_s, cfg.reid_max_distance, -1.0)
        else:
            gate = cfg.max_centre_distance + cfg.gate_growth_per_s * unseen
        log_area_ratio = np.abs(np.log(_areas(boxes)[None, :] / _areas(predicted)[:, None]))
        appearance = self._embedding_distances(tracks, embeddings)
        known = ~np.isnan(appearance)
        appearance = np.nan_to_num(appearance)
        misplaced = (distance > gate) | (log_area_ratio > np.log(cfg.max_area_ratio))
        if reid:
            # a returning face recognised by appearance may be anywhere, at any size: its
            # position only breaks ties
            recognised = known & (appearance <= cfg.reid_embedding_distance)
            misplaced &= ~recognised
            distance = np.minimum(distance, cfg.reid_max_distance)
            log_area_ratio = np.minimum(log_area_ratio, np.log(cfg.max_area_ratio))
        cost = (
            cfg.iou_weight * (1.0 - _iou(predicted, boxes))
            + cfg.distance_weight * distance
            + cfg.area_weight * log_area_ratio
            + cfg.appearance_weight * appearance
        )
        # a tentative track has seen a face once or twice, often half out of the picture as it
        # comes in: its embedding is too weak a witness to veto anything
        confirmed = np.array([tr.confirmed for tr in tracks])[:, None]
        forbidden = misplaced | (confirmed & known & (appearance > cfg.max_embedding_distance))
        cost[forbidden] = _FORBIDDEN
        return cost

    def _embedding_distances(
        self, tracks: list[_Track], embeddings: list[np.ndarray | None]
    ) -> np.ndarray:
        """Distances on dlib's scale where both sides have an embedding, NaN elsewhere."""
        out = np.full((len(tracks), len(embeddings)), np.nan)
        rows = [r for r, tr in enumerate(tracks) if tr.embedding is not None]
        cols = [c for c, emb in enumerate(embeddings) if emb is not None]
        if rows and cols:
            a = np.stack([tracks[r].embedding for r in rows])
            b = np.stack([np.asarray(embeddings[c], dtype=np.float64) for c in cols])
            b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
            out[np.ix_(rows, cols)] = np.linalg.norm(a[:, None] - b[None], axis=2) * self.config.embedding_distance_scale
        return out

    def _confirm_ready(self, t: float) -> tuple[int, ...]:
        cfg = self.config
        started = []
        for track in self._tracks:
            if not track.confirmed and track.hits >= cfg.confirm_hits:
                track.track_id = next(self._next_id)
                started.append(track.track_id)
                # someone who left may be back: showing a fresh id now and the old one once the
                # embedding answers would count as two switches for one person
                returning = any(tr.is_lost and tr.embedding is not None and tr.t_last_seen < track.t_first
                                for tr in self._tracks)
                if cfg.look_wait_s > 0 and track.embedding is None and returning:
                    track.look_due = t + cfg.look_wait_s
        return tuple(started)

    def _age_unseen(self, t: float) -> tuple[tuple[int, ...], tuple[TrackEnd, ...]]:
        cfg = self.config
        newly_lost: list[int] = []
        ended: list[TrackEnd] = []
        kept: list[_Track] = []
        for track in self._tracks:
            if track.look_due is not None and t >= track.look_due:
                track.look_due = None  # no look in time: it is someone new, as far as we know
            if track.t_last_seen == t:
                kept.append(track)
                continue
            if not track.confirmed:
                track.misses += 1
                if track.misses <= cfg.tentative_max_misses:
                    kept.append(track)
                continue
            unseen = t - track.t_last_seen
            # without an appearance nothing can bring it back after the position window
            window = cfg.reid_window_s
            if track.embedding is None:
                window = min(window, max(cfg.reid_by_position_s, cfg.coast_s))
            if unseen > window:
                ended.append(track.end())
                continue
            if unseen > cfg.coast_s and not track.is_lost:
                track.is_lost = True
                newly_lost.append(track.track_id)
            kept.append(track)
        self._tracks = kept
        if ended:
            gone = {e.track_id for e in ended}
            self._merged_into = {a: b for a, b in self._merged_into.items() if self._resolved(b) not in gone}
        return tuple(newly_lost), tuple(ended)


def _whole_face(box: np.ndarray, cfg: TrackerConfig) -> bool:
    width, height = box[2] - box[0], box[3] - box[1]
    return width >= cfg.min_embedding_aspect * height
