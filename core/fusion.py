"""Temporal fusion of one track's recognition results: one noisy answer per frame becomes a steady
estimate per face. Gender on a small, gray or turned face is unreliable, and identity is computed
rarely, so every attribute is fused over the track, each in the way that suits it."""
from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.messages import IdentityMatch


@dataclass(frozen=True, slots=True)
class FusionConfig:
    # a face smaller than this (square root of its box area, pixels) gives age and gender
    # estimates that swing by decades with the crop (obama3.jpg at 33 px: 36 years, at 49-97 px:
    # 49-52): they count only while the track has nothing better
    min_face_px: float = 36.0
    # the weight of such an estimate: a single face above the minimum outweighs a thousand
    small_face_weight: float = 1e-3
    # faces this large and larger count fully; between the two the weight rises linearly
    full_face_px: float = 80.0
    # the age interval reported: these quantiles of the fused posterior
    age_interval_quantiles: tuple[float, float] = (0.1, 0.9)
    # sliding windows, in observations
    age_window: int = 30
    gender_window: int = 30
    # weight of the newest expression: expressions change, so old frames must fade
    expression_alpha: float = 0.3
    identity_window: int = 7
    # dlib ResNet embeddings: same person below 0.6
    # the gallery's threshold (core/gallery.py GalleryConfig), on dlib's distance scale
    identity_max_distance: float = 0.55
    # age/gender count as converged once the standard error of the windowed mean is this small
    converged_min_observations: int = 5
    age_converged_se_years: float = 1.5
    gender_converged_se: float = 0.07


@dataclass(frozen=True, slots=True)
class ObservationCounts:
    age: int
    gender: int
    expression: int
    identity: int


@dataclass(frozen=True, slots=True)
class FusedAttributes:
    """A read-only snapshot of a track's fused attributes; None where nothing was observed yet
    (identity: also when no name wins the vote). `lookalike` is the gallery face the track
    resembles most, whatever the distance: it is the identity's own when the track is named, and
    never a name to show as who the track is otherwise."""

    age: float | None
    age_posterior: np.ndarray | None
    # the age_interval_quantiles of the fused posterior: where the track's age lies, as far as
    # the model and the frames seen so far agree
    age_interval: tuple[float, float] | None
    gender: str | None
    gender_score: float | None
    expression: str | None
    expression_scores: dict[str, float] | None
    identity: str | None
    identity_distance: float | None
    age_gender_converged: bool
    observations: ObservationCounts
    lookalike: IdentityMatch | None = None


def face_quality(box, score: float, landmarks, config: FusionConfig) -> float:
    """How much one face's age and gender estimates should count, 0 to 1: its size (next to
    nothing below `min_face_px`), the detector's score, and how frontal it is. Frontalness comes from dlib's 5
    landmarks: the nose base lies midway between the eyes on a frontal face and moves towards
    one eye as the head turns."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = np.sqrt(max(x2 - x1, 0.0) * max(y2 - y1, 0.0))
    size = np.clip((side - config.min_face_px) / (config.full_face_px - config.min_face_px), 0.1, 1.0)
    if side < config.min_face_px:
        size = config.small_face_weight
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_a, eye_b, nose = points[0:2].mean(0), points[2:4].mean(0), points[4]
    across = eye_b - eye_a
    offset = abs(float((nose - (eye_a + eye_b) / 2) @ across)) / max(float(across @ across), 1e-6)
    frontal = np.clip(1.0 - 2.0 * offset, 0.1, 1.0)
    return float(size * np.clip(score, 0.0, 1.0) * frontal)


def quantiles(posterior: np.ndarray, values: np.ndarray, qs: Sequence[float]) -> tuple[float, ...]:
    """Quantiles of a discrete posterior over sorted `values`, each bin's mass spread evenly from
    halfway to its lower neighbour to halfway to its upper one (all of it on 52 years: 51.5-52.5)."""
    values = np.asarray(values, dtype=np.float64)
    mids = (values[1:] + values[:-1]) / 2
    edges = np.concatenate([[max(values[0] - (mids[0] - values[0]), 0.0)], mids,
                            [values[-1] + (values[-1] - mids[-1])]])
    cumulative = np.concatenate([[0.0], np.cumsum(posterior) / np.sum(posterior)])
    return tuple(float(np.interp(q, cumulative, edges)) for q in qs)


class TrackFusion:
    """Fuses the recognition results of one track. `age_bins` are the years each age class
    stands for; the label tuples give the order of the probability vectors passed in."""

    def __init__(
        self,
        config: FusionConfig,
        age_bins: np.ndarray,
        gender_labels: Sequence[str],
        expression_labels: Sequence[str],
    ) -> None:
        self.config = config
        self._age_bins = np.asarray(age_bins, dtype=np.float64)
        self._gender_labels = tuple(gender_labels)
        self._expression_labels = tuple(expression_labels)
        self._age_posteriors: deque[np.ndarray] = deque(maxlen=config.age_window)
        self._age_weights: deque[float] = deque(maxlen=config.age_window)
        self._gender_probs: deque[np.ndarray] = deque(maxlen=config.gender_window)
        self._gender_weights: deque[float] = deque(maxlen=config.gender_window)
        self._expression: np.ndarray | None = None
        self._identity_matches: deque[tuple[str | None, float]] = deque(maxlen=config.identity_window)
        self._nearest: deque[IdentityMatch] = deque(maxlen=config.identity_window)
        self._counts = Counter[str]()
        # a track is drawn every frame but learns something only now and then: the snapshot is
        # computed once per change, not once per frame
        self._snapshot: FusedAttributes | None = None

    def add_age(self, posterior: np.ndarray, weight: float = 1.0) -> None:
        """`weight`: the face's quality (`face_quality`); 0 leaves the estimate out."""
        if weight <= 0:
            return
        self._snapshot = None
        posterior = np.asarray(posterior, dtype=np.float64)
        self._age_posteriors.append(posterior / posterior.sum())
        self._age_weights.append(float(weight))
        self._counts["age"] += 1

    def add_gender(self, probs: np.ndarray, weight: float = 1.0) -> None:
        if weight <= 0:
            return
        self._snapshot = None
        self._gender_probs.append(np.asarray(probs, dtype=np.float64))
        self._gender_weights.append(float(weight))
        self._counts["gender"] += 1

    def add_expression(self, probs: np.ndarray) -> None:
        self._snapshot = None
        probs = np.asarray(probs, dtype=np.float64)
        alpha = self.config.expression_alpha
        self._expression = probs if self._expression is None else alpha * probs + (1 - alpha) * self._expression
        self._counts["expression"] += 1

    def add_identity(self, name: str | None, distance: float) -> None:
        """The nearest gallery match of one embedding; name None when the gallery had none."""
        self._snapshot = None
        self._identity_matches.append((name, float(distance)))
        self._counts["identity"] += 1

    def add_nearest(self, match: IdentityMatch) -> None:
        """The nearest gallery face of one embedding, within the threshold or not (look-alike)."""
        self._snapshot = None
        self._nearest.append(match)

    def snapshot(self) -> FusedAttributes:
        if self._snapshot is None:
            self._snapshot = self._fuse()
        return self._snapshot

    def _fuse(self) -> FusedAttributes:
        age_posterior = self._age_posterior()
        gender, gender_score = self._gender()
        expression, expression_scores = self._fused_expression()
        identity, identity_distance = self._identity_vote()
        interval = None if age_posterior is None else quantiles(
            age_posterior, self._age_bins, self.config.age_interval_quantiles)
        return FusedAttributes(
            age=None if age_posterior is None else float(age_posterior @ self._age_bins),
            age_posterior=age_posterior,
            age_interval=interval,
            gender=gender,
            gender_score=gender_score,
            expression=expression,
            expression_scores=expression_scores,
            identity=identity,
            identity_distance=identity_distance,
            age_gender_converged=self._age_gender_converged(),
            observations=ObservationCounts(
                self._counts["age"], self._counts["gender"], self._counts["expression"],
                self._counts["identity"],
            ),
            lookalike=self._lookalike_vote(identity),
        )

    def _age_posterior(self) -> np.ndarray | None:
        if not self._age_posteriors:
            return None
        mean = np.average(self._age_posteriors, axis=0, weights=self._age_weights)
        mean.setflags(write=False)
        return mean

    def _gender(self) -> tuple[str | None, float | None]:
        if not self._gender_probs:
            return None, None
        mean = np.average(self._gender_probs, axis=0, weights=self._gender_weights)
        best = int(np.argmax(mean))
        return self._gender_labels[best], float(mean[best])

    def _fused_expression(self) -> tuple[str | None, dict[str, float] | None]:
        if self._expression is None:
            return None, None
        scores = dict(zip(self._expression_labels, map(float, self._expression)))
        return self._expression_labels[int(np.argmax(self._expression))], scores

    def _identity_vote(self) -> tuple[str | None, float | None]:
        """Each recent match votes for its name when close enough, for 'unknown' otherwise. A name
        wins with more votes than unknown and than any other name; ties leave it unknown."""
        threshold = self.config.identity_max_distance
        votes = Counter(name if name is not None and d <= threshold else None
                        for name, d in self._identity_matches)
        unknown = votes.pop(None, 0)
        ranked = votes.most_common(2)
        if not ranked or ranked[0][1] <= unknown or (len(ranked) == 2 and ranked[1][1] == ranked[0][1]):
            return None, None
        winner = ranked[0][0]
        distances = [d for name, d in self._identity_matches if name == winner and d <= threshold]
        return winner, float(np.mean(distances))

    def _lookalike_vote(self, identity: str | None) -> IdentityMatch | None:
        """The most frequent nearest face over the recent matches (ties: the closer on average),
        so the face shown beside a track does not flicker between two similar gallery people. A
        named track resembles its own gallery face."""
        if not self._nearest:
            return None
        votes = Counter(m.name for m in self._nearest)
        if identity is not None and identity in votes:
            winner = identity
        else:
            def rank(name: str) -> tuple[int, float]:
                return -votes[name], float(np.mean([m.distance for m in self._nearest if m.name == name]))

            winner = min(votes, key=rank)
        mine = [m for m in self._nearest if m.name == winner]
        distance = float(np.mean([m.distance for m in mine]))
        return IdentityMatch(winner, distance, lookalike=identity != winner,
                             similarity=float(np.mean([m.similarity for m in mine])),
                             thumbnail=next((m.thumbnail for m in reversed(mine) if m.thumbnail is not None), None))

    def _age_gender_converged(self) -> bool:
        cfg = self.config
        n_age, n_gender = len(self._age_posteriors), len(self._gender_probs)
        if min(n_age, n_gender) < cfg.converged_min_observations:
            return False
        ages = np.array(self._age_posteriors) @ self._age_bins
        gender = np.array(self._gender_probs)
        # the spread of the leading label's probability: frames that flip between labels count
        leading = gender[:, int(np.argmax(gender.mean(axis=0)))]
        age_se = ages.std(ddof=1) / np.sqrt(n_age)
        gender_se = leading.std(ddof=1) / np.sqrt(n_gender)
        return bool(age_se <= cfg.age_converged_se_years and gender_se <= cfg.gender_converged_se)
