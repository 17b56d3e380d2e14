import numpy as np
import pytest

from core.fusion import FusionConfig, TrackFusion, face_quality, quantiles
from models.align import DLIB_5PT_TEMPLATE

AGE_BINS = np.array([0.25, *range(1, 81)], dtype=float)
GENDERS = ("female", "male")
EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def fusion(**overrides) -> TrackFusion:
    return TrackFusion(FusionConfig(**overrides), AGE_BINS, GENDERS, EXPRESSIONS)


def noisy_age_posterior(rng: np.random.Generator, true_age: float) -> np.ndarray:
    """A peaked posterior around a guess that is off by several years, as single frames are."""
    guess = true_age + rng.normal(0.0, 6.0)
    posterior = np.exp(-0.5 * ((AGE_BINS - guess) / 4.0) ** 2) + rng.uniform(0.0, 0.02, len(AGE_BINS))
    return posterior / posterior.sum()


def test_nothing_observed_gives_nothing():
    snap = fusion().snapshot()
    assert (snap.age, snap.gender, snap.expression, snap.identity) == (None, None, None, None)
    assert not snap.age_gender_converged
    assert snap.observations.age == snap.observations.identity == 0


def test_age_converges_to_the_true_age_and_reports_convergence():
    rng = np.random.default_rng(1)
    track = fusion()
    converged_after = None
    for n in range(1, 41):
        track.add_age(noisy_age_posterior(rng, 37.0))
        track.add_gender(np.array([0.2, 0.8]))
        if converged_after is None and track.snapshot().age_gender_converged:
            converged_after = n
    snap = track.snapshot()
    assert abs(snap.age - 37.0) < 2.5
    assert snap.age_posterior.shape == (81,) and snap.age_posterior.sum() == pytest.approx(1.0)
    assert converged_after is not None and 5 <= converged_after <= 30
    assert snap.observations.age == 40


def test_gender_converges_to_the_right_label_with_noisy_inputs():
    rng = np.random.default_rng(2)
    track = fusion()
    for _ in range(30):
        # mostly right but weak, and a third of the frames confidently wrong
        p_male = rng.uniform(0.05, 0.3) if rng.random() < 0.33 else rng.uniform(0.6, 0.95)
        track.add_gender(np.array([1 - p_male, p_male]))
    snap = track.snapshot()
    assert snap.gender == "male" and 0.5 < snap.gender_score < 0.8


def test_flip_flopping_gender_is_not_converged():
    track = fusion()
    for i in range(30):
        track.add_age(np.eye(81)[30])  # a steady age: only gender holds convergence back
        track.add_gender(np.array([0.9, 0.1]) if i % 2 else np.array([0.1, 0.9]))
    assert not track.snapshot().age_gender_converged


def test_expression_converges_with_noisy_inputs_and_follows_a_change():
    rng = np.random.default_rng(3)
    track = fusion(expression_alpha=0.3)

    def frame(label: str) -> np.ndarray:
        probs = rng.dirichlet(np.ones(len(EXPRESSIONS)))
        probs[EXPRESSIONS.index(label)] += 0.6
        return probs / probs.sum()

    for _ in range(20):
        track.add_expression(frame("happy"))
    snap = track.snapshot()
    assert snap.expression == "happy"
    assert sum(snap.expression_scores.values()) == pytest.approx(1.0)
    for _ in range(10):
        track.add_expression(frame("surprise"))
    assert track.snapshot().expression == "surprise"


def test_identity_vote_picks_the_recurring_name_under_the_threshold():
    track = fusion(identity_window=7, identity_max_distance=0.6)
    for name, distance in [("obama", 0.41), ("biden", 0.58), ("obama", 0.45), ("obama", 0.72),
                           ("kit_harington", 0.55), ("obama", 0.38)]:
        track.add_identity(name, distance)
    snap = track.snapshot()
    assert snap.identity == "obama"
    assert snap.identity_distance == pytest.approx((0.41 + 0.45 + 0.38) / 3)


def test_identity_is_unknown_when_no_vote_wins():
    far = fusion()
    for distance in (0.63, 0.65, 0.62):
        far.add_identity("biden", distance)
    tied = fusion()
    tied.add_identity("obama", 0.4)
    tied.add_identity("biden", 0.4)
    empty_gallery = fusion()
    empty_gallery.add_identity(None, float("inf"))
    for track in (far, tied, empty_gallery):
        assert track.snapshot().identity is None and track.snapshot().identity_distance is None


def test_identity_window_forgets_old_matches():
    track = fusion(identity_window=3)
    for _ in range(3):
        track.add_identity("biden", 0.5)
    for _ in range(3):
        track.add_identity("obama", 0.5)
    assert track.snapshot().identity == "obama"
    assert track.snapshot().observations.identity == 6


def test_lookalike_vote_keeps_one_face_against_a_flicker():
    from core.messages import IdentityMatch

    track = fusion(identity_window=7)
    assert track.snapshot().lookalike is None
    first = [np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 9, np.uint8)]
    second = np.ones((64, 64, 3), np.uint8)
    for i, (name, d) in enumerate([("bob", 0.62), ("cy", 0.60), ("bob", 0.64), ("bob", 0.66), ("cy", 0.59)]):
        track.add_nearest(IdentityMatch(name, d, lookalike=True, similarity=1 - d / 1.4,
                                        thumbnail=first[i % 2] if name == "bob" else second))
        track.add_identity(None, d)
    snap = track.snapshot()
    # cy was nearer twice, bob nearest three times: the majority stays, with its mean distance
    assert snap.identity is None
    assert (snap.lookalike.name, snap.lookalike.lookalike) == ("bob", True)
    assert snap.lookalike.distance == pytest.approx(0.64)
    assert snap.lookalike.similarity == pytest.approx(1 - 0.64 / 1.4)
    assert snap.lookalike.thumbnail is first[1]  # the latest of bob's faces
    # a tie goes to the face nearer on average
    tie = fusion()
    for name, d in [("bob", 0.7), ("cy", 0.6)]:
        tie.add_nearest(IdentityMatch(name, d, lookalike=True))
    assert tie.snapshot().lookalike.name == "cy"


def one_hot(age: float) -> np.ndarray:
    return (AGE_BINS == age).astype(float)


def face_at(side: float, nose_shift: float = 0.0):
    """Box and dlib-ordered landmarks of a face `side` pixels wide; `nose_shift` moves the nose
    towards one eye by that share of the distance between the eyes, as a turned head does."""
    points = DLIB_5PT_TEMPLATE * side + 100.0
    points[4, 0] += nose_shift * (points[0:2, 0].mean() - points[2:4, 0].mean())
    return [100.0, 100.0, 100.0 + side, 100.0 + side], points


def test_face_quality_drops_small_low_score_and_turned_faces():
    config = FusionConfig(min_face_px=36, full_face_px=80)
    big, frontal = face_at(120)
    assert face_quality(big, 0.9, frontal, config) == pytest.approx(0.9, abs=0.02)
    assert face_quality(*face_at(30)[:1], 0.9, face_at(30)[1], config) < 0.001
    assert 0.0 < face_quality(*face_at(50)[:1], 0.9, face_at(50)[1], config) < 0.5
    assert face_quality(big, 0.5, frontal, config) < face_quality(big, 0.9, frontal, config)
    turned = face_at(120, nose_shift=0.3)[1]
    assert face_quality(big, 0.9, turned, config) == pytest.approx(0.9 * 0.4, abs=0.02)


def test_estimates_count_by_quality_and_weightless_ones_not_at_all():
    track = fusion()
    track.add_age(one_hot(40), weight=0.9)
    track.add_age(one_hot(20), weight=0.1)
    track.add_age(one_hot(5), weight=0.0)
    track.add_gender(np.array([0.1, 0.9]), weight=0.9)
    track.add_gender(np.array([0.9, 0.1]), weight=0.1)
    track.add_gender(np.array([1.0, 0.0]), weight=0.0)
    snap = track.snapshot()
    assert snap.age == pytest.approx(38.0)
    assert (snap.gender, snap.gender_score) == ("male", pytest.approx(0.82))
    assert snap.observations.age == snap.observations.gender == 2


def test_age_interval_spans_what_the_frames_disagree_on():
    rng = np.random.default_rng(3)
    track = fusion()
    for _ in range(30):
        track.add_age(noisy_age_posterior(rng, 37.0))
    snap = track.snapshot()
    low, high = snap.age_interval
    assert low < 37.0 < high and low < snap.age < high
    # frames off by ~6 years, each peaked with ~4 years of spread: roughly +-1.28 x 7 years
    assert 12.0 < high - low < 24.0
    # all the mass on one bin: that bin's year, half a year either side
    assert quantiles(one_hot(52), AGE_BINS, (0.1, 0.5, 0.9)) == pytest.approx((51.6, 52.0, 52.4))


def test_a_track_of_small_faces_still_gets_an_estimate_until_a_larger_face_outweighs_it():
    config = FusionConfig()
    track = fusion()
    small_box, small_points = face_at(30)
    for _ in range(30):
        track.add_age(one_hot(20), face_quality(small_box, 0.9, small_points, config))
    assert track.snapshot().age == pytest.approx(20.0)
    big_box, big_points = face_at(100)
    track.add_age(one_hot(50), face_quality(big_box, 0.9, big_points, config))
    assert track.snapshot().age > 49.0
