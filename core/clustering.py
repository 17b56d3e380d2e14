"""Clustering the faces seen (after Anzalone et al.): who is who, by a distance threshold on the
identity model's own scale (the one the gallery trusts); and, as an option for attribute
summaries, k-means on the embeddings with the faces' attributes, k chosen by silhouette score.
Also the summaries a cluster report shows: attribute occurrence counts, the mean face and the
first principal components ("eigenfaces") of the members' aligned crops, and scores against
known names (purity, adjusted Rand index).

scikit-learn and faiss, no Ray. Memory stays linear in the number of faces: exact agglomerative
clustering holds an N x N distance matrix, so above `EXACT_LIMIT` faces it runs on samples."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score, completeness_score, pairwise_distances_argmin_min, silhouette_score

# (lower bound, label); the last band is open-ended
AGE_BANDS = ((0, "0-12"), (13, "13-19"), (20, "20-29"), (30, "30-39"), (40, "40-49"), (50, "50-59"), (60, "60+"))
EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@dataclass(frozen=True, slots=True)
class FaceAttributes:
    """What the analysis said about one face; any field may be unknown (None)."""

    age: float | None = None
    gender: str | None = None
    gender_score: float | None = None
    expression: str | None = None
    expression_scores: dict[str, float] | None = None
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class Clustering:
    """One clustering of N faces. `labels` (N,) int, every face in a cluster, 0 the largest.
    `param` is the chosen k (k-means) or the distance threshold (identity); `tried` every
    candidate k with its silhouette (None where undefined)."""

    method: str
    labels: np.ndarray
    param_name: str
    param: float
    silhouette: float | None
    tried: tuple[tuple[float, float | None], ...]

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def members(self, cluster: int) -> np.ndarray:
        return np.flatnonzero(self.labels == cluster)


def attribute_vector(a: FaceAttributes) -> np.ndarray:
    """Gender (signed by confidence), age (0-90 years onto -1..1) and the 7 expression probabilities: each
    group spans about one unit, like the gap between two people's unit embeddings, so no
    attribute drowns the others once weighted."""
    gender = 0.0
    if a.gender is not None:
        sign = 1.0 if a.gender == "male" else -1.0
        gender = sign * (a.gender_score if a.gender_score is not None else 1.0)
    age = 0.0 if a.age is None else min(max(a.age, 0.0), 90.0) / 45.0 - 1.0
    scores = a.expression_scores or ({a.expression: 1.0} if a.expression else {})
    expression = [float(scores.get(name, 0.0)) for name in EXPRESSIONS]
    return np.array([gender, age, *expression], np.float32)


def face_features(embeddings: np.ndarray, attributes: Sequence[FaceAttributes] | None = None,
                  attribute_weight: float = 0.0) -> np.ndarray:
    """What is clustered: the unit embeddings, with the weighted attribute vectors appended when
    `attribute_weight` > 0 (0 clusters by identity alone)."""
    x = np.ascontiguousarray(embeddings, np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
    if attribute_weight <= 0 or attributes is None:
        return x
    if len(attributes) != len(x):
        raise ValueError(f"{len(attributes)} attribute records for {len(x)} embeddings")
    extra = np.stack([attribute_vector(a) for a in attributes]) * np.float32(attribute_weight)
    return np.ascontiguousarray(np.hstack([x, extra]), np.float32)


# Exact agglomerative clustering holds a condensed N x N float64 distance matrix: 4,000 faces take
# 64 MB. Above that, it clusters a random sample of this many faces at a time (see `identity`).
EXACT_LIMIT = 4000
# The silhouette's cost is quadratic in the faces it scores: above this many, a random sample.
SILHOUETTE_SAMPLE = 2000


def silhouette(x: np.ndarray, labels: np.ndarray, seed: int = 0) -> float | None:
    """Mean silhouette (Euclidean; singletons score 0), on a random sample of SILHOUETTE_SAMPLE
    faces when there are more. None where it is undefined: one cluster, or every face alone."""
    labels = np.asarray(labels)
    if not 2 <= len(np.unique(labels)) < len(labels):
        return None
    sample = SILHOUETTE_SAMPLE if len(labels) > SILHOUETTE_SAMPLE else None
    try:
        return float(silhouette_score(x, labels, sample_size=sample, random_state=seed))
    except ValueError:
        # the sample drew a single cluster (one person dominates the set)
        return None


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel so that cluster 0 is the largest (ties by first member)."""
    ids, first, inverse, counts = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    rank = np.empty(len(ids), np.int64)
    rank[np.lexsort((first, -counts))] = np.arange(len(ids))
    return rank[inverse.ravel()]


def kmeans_labels(x: np.ndarray, k: int, seed: int = 0, niter: int = 25, nredo: int = 10) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    # min_points_per_centroid=1: faiss would otherwise warn on every small face set; and no
    # subsampling, since a face set is small enough to train on whole.
    km = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, seed=seed, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(256, len(x)))
    # One thread: a face set trains in milliseconds, and OpenMP's start-up and spin-waits cost
    # more than they save (measured: 0.2-0.6 s per run on 2 cores, 1-40 ms on one).
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        km.train(x)
        _, nearest = km.index.search(x, 1)
    finally:
        faiss.omp_set_num_threads(threads)
    return _by_size(nearest[:, 0].astype(np.int64))


def kmeans(x: np.ndarray, k_range: Sequence[int] = range(2, 11), seed: int = 0) -> Clustering:
    """faiss k-means for each k in `k_range` (those below N only); the k with the best silhouette
    wins. For summaries of attributes (with `face_features(..., attribute_weight)`): k-means
    cuts the faces into k groups whether or not they are k people."""
    n = len(x)
    ks = [k for k in k_range if 2 <= k < n]
    if not ks:
        raise ValueError(f"k-means needs more faces than clusters: {n} face(s), k in {list(k_range)}")
    best, tried = None, []
    for k in ks:
        labels = kmeans_labels(x, k, seed)
        score = silhouette(x, labels, seed)
        tried.append((float(k), score))
        if score is not None and (best is None or score > best[1]):
            best = (k, score, labels)
    if best is None:
        raise ValueError("k-means found no k that gives two clusters (all faces identical?)")
    k, score, labels = best
    return Clustering("kmeans", labels, "k", float(k), score, tuple(tried))


def _agglomerate(x: np.ndarray, cut: float) -> np.ndarray:
    if len(x) == 1:
        return np.zeros(1, np.int64)
    model = AgglomerativeClustering(n_clusters=None, distance_threshold=cut, linkage="average", metric="euclidean")
    return model.fit_predict(x).astype(np.int64)


def identity(x: np.ndarray, threshold: float = 0.55, scale: float = 1.0, seed: int = 0,
             exact_limit: int = EXACT_LIMIT) -> Clustering:
    """People, by a distance threshold on the identity model's scale (`scale` times the distance
    between the unit embeddings: 1.4 for dlib, where the gallery names a face at 0.55). Average
    linkage: two groups join while their faces are closer than the threshold on average, so one
    close pair of look-alikes does not chain two people (single linkage would), and a person seen
    in many poses is not split by its farthest pair (complete linkage would).

    Above `exact_limit` faces, in rounds: cluster a random sample of that many of the faces not yet
    placed, then place every unplaced face whose nearest of those clusters' centroids lies within
    the threshold. Memory stays O(exact_limit^2 + N), and a person missing from one sample is
    found in a later round."""
    x = np.ascontiguousarray(x, np.float32)
    if len(x) < 2:
        raise ValueError(f"clustering needs at least 2 faces, got {len(x)}")
    if not threshold > 0 or not scale > 0:
        raise ValueError(f"threshold and scale must be > 0, got {threshold} and {scale}")
    cut = threshold / scale
    rng = np.random.default_rng(seed)
    labels = np.full(len(x), -1, np.int64)
    unplaced, next_id = np.arange(len(x)), 0
    while len(unplaced):
        sample = unplaced if len(unplaced) <= exact_limit else np.sort(rng.choice(unplaced, exact_limit, replace=False))
        found = _agglomerate(x[sample], cut)
        labels[sample] = next_id + found
        if len(sample) < len(unplaced):
            centroids = np.zeros((found.max() + 1, x.shape[1]))
            np.add.at(centroids, found, x[sample])
            centroids /= np.bincount(found)[:, None]
            rest = np.setdiff1d(unplaced, sample, assume_unique=True)
            nearest, distance = pairwise_distances_argmin_min(x[rest], centroids)
            near = distance <= cut
            labels[rest[near]] = next_id + nearest[near]
        next_id += int(found.max()) + 1
        unplaced = np.flatnonzero(labels < 0)
    labels = _by_size(labels)
    return Clustering("identity", labels, "threshold", threshold, silhouette(x, labels, seed), ())


@dataclass(frozen=True, slots=True)
class Agreement:
    """How a clustering agrees with known names, over the faces that have one."""

    faces: int
    people: int
    purity: float  # share of the faces whose cluster's most common name is theirs
    completeness: float  # 1 when each person's faces all lie in one cluster
    ari: float  # adjusted Rand index: 1 for the same partition, about 0 for a random one


def agreement(labels: np.ndarray, names: Sequence[str | None]) -> Agreement | None:
    """Scores against `names` (None where a face's name is unknown); None when no name is known."""
    known = [i for i, name in enumerate(names) if name is not None]
    if not known:
        return None
    predicted = np.asarray(labels)[known]
    truth = [names[i] for i in known]
    majority: dict[int, int] = {}
    for (cluster, _), count in Counter(zip(predicted.tolist(), truth)).items():
        majority[cluster] = max(majority.get(cluster, 0), count)
    return Agreement(len(known), len(set(truth)), sum(majority.values()) / len(known),
                     float(completeness_score(truth, predicted)), float(adjusted_rand_score(truth, predicted)))


def age_band(age: float) -> str:
    label = AGE_BANDS[0][1]
    for low, name in AGE_BANDS:
        if age >= low:
            label = name
    return label


def attribute_counts(attributes: Sequence[FaceAttributes]) -> dict[str, Counter]:
    """Occurrences of each gender, expression, age band and (when known) identity among the
    given faces; unknown values are not counted."""
    counts = {"gender": Counter(), "expression": Counter(), "age": Counter(), "identity": Counter()}
    for a in attributes:
        if a.gender is not None:
            counts["gender"][a.gender] += 1
        if a.expression is not None:
            counts["expression"][a.expression] += 1
        if a.age is not None:
            counts["age"][age_band(a.age)] += 1
        if a.identity is not None:
            counts["identity"][a.identity] += 1
    return counts


def mean_face(gray_crops: np.ndarray) -> np.ndarray:
    """(H, W) float mean of (N, H, W) aligned gray crops."""
    if len(gray_crops) == 0:
        raise ValueError("no crops to average")
    return np.asarray(gray_crops, np.float64).mean(0)


@dataclass(frozen=True, slots=True)
class Eigenfaces:
    mean: np.ndarray  # (H, W)
    components: np.ndarray  # (n, H, W), unit norm, signed
    explained: np.ndarray  # (n,) share of the crops' variance each component explains


def eigenfaces(gray_crops: np.ndarray, n: int = 4) -> Eigenfaces:
    """The first `n` principal components of the crops (at most N-1: N crops span N-1 directions
    around their mean), by SVD of the centred crops. Each component's sign is chosen so that its
    largest-magnitude pixel is positive, so the pictures do not flip between runs."""
    crops = np.asarray(gray_crops, np.float64)
    mean = mean_face(crops)
    flat = (crops - mean).reshape(len(crops), -1)
    keep = max(0, min(n, len(crops) - 1))
    if keep == 0:
        return Eigenfaces(mean, np.zeros((0, *mean.shape)), np.zeros(0))
    _, sv, vt = np.linalg.svd(flat, full_matrices=False)
    total = float((sv**2).sum())
    comps = vt[:keep]
    signs = np.sign(comps[np.arange(keep), np.abs(comps).argmax(1)])
    comps = comps * signs[:, None]
    explained = (sv[:keep] ** 2) / total if total > 0 else np.zeros(keep)
    return Eigenfaces(mean, comps.reshape(keep, *mean.shape), explained)


def typical_members(x: np.ndarray, clustering: Clustering, cluster: int, count: int) -> np.ndarray:
    """Indices of the `count` members nearest the cluster's centroid: the faces that show what
    the cluster is, rather than its outliers."""
    idx = clustering.members(cluster)
    centre = x[idx].mean(0)
    order = np.argsort(np.linalg.norm(x[idx] - centre, axis=1), kind="stable")
    return idx[order[:count]]
