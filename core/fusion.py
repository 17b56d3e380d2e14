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
    gender: str | None
    gender_score: float | None
    expression: str | None
    expression_scores: dict[str, float] | None
    identity: str | None
    identity_distance: float | None
    age_gender_converged: bool
    observations: ObservationCounts
    lookalike: IdentityMatch | None = None


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
        self._gender_probs: deque[np.ndarray] = deque(maxlen=config.gender_window)
        self._expression: np.ndarray | None = None
        self._identity_matches: deque[tuple[str | None, float]] = deque(maxlen=config.identity_window)
        self._nearest: deque[IdentityMatch] = deque(maxlen=config.identity_window)
        self._counts = Counter[str]()

    def add_age(self, posterior: np.ndarray) -> None:
        posterior = np.asarray(posterior, dtype=np.float64)
        self._age_posteriors.append(posterior / posterior.sum())
        self._counts["age"] += 1

    def add_gender(self, probs: np.ndarray) -> None:
        self._gender_probs.append(np.asarray(probs, dtype=np.float64))
        self._counts["gender"] += 1

    def add_expression(self, probs: np.ndarray) -> None:
        probs = np.asarray(probs, dtype=np.float64)
        alpha = self.config.expression_alpha
        self._expression = probs if self._expression is None else alpha * probs + (1 - alpha) * self._expression
        self._counts["expression"] += 1

    def add_identity(self, name: str | None, distance: float) -> None:
        """The nearest gallery match of one embedding; name None when the gallery had none."""
        self._identity_matches.append((name, float(distance)))
        self._counts["identity"] += 1

    def add_nearest(self, match: IdentityMatch) -> None:
        """The nearest gallery face of one embedding, within the threshold or not (look-alike)."""
        self._nearest.append(match)

    def snapshot(self) -> FusedAttributes:
        age_posterior = self._age_posterior()
        gender, gender_score = self._gender()
        expression, expression_scores = self._fused_expression()
        identity, identity_distance = self._identity_vote()
        return FusedAttributes(
            age=None if age_posterior is None else float(age_posterior @ self._age_bins),
            age_posterior=age_posterior,
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
        mean = np.mean(self._age_posteriors, axis=0)
        mean.setflags(write=False)
        return mean

    def _gender(self) -> tuple[str | None, float | None]:
        if not self._gender_probs:
            return None, None
        mean = np.mean(self._gender_probs, axis=0)
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
