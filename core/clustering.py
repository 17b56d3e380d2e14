"""Clustering the faces seen (after Anzalone et al.): identity embeddings, optionally with the
faces' attributes, grouped by k-means (faiss) and by DBSCAN, with k or eps chosen by silhouette
score; and the summaries a cluster report shows: attribute occurrence counts, the mean face and
the first principal components ("eigenfaces") of the members' aligned crops.

Plain numpy/scipy/faiss, no Ray. Distances are Euclidean in feature space: on L2-normalised
embeddings that is monotone with cosine distance, and faiss' k-means minimises the same metric."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist

NOISE = -1

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
    """One clustering of N faces. `labels` (N,) int: 0 is the largest cluster, NOISE (-1) marks
    faces DBSCAN left out. `param` is the chosen k (k-means) or eps (DBSCAN); `tried` every
    candidate with its silhouette (None where it gave fewer than two clusters)."""

    method: str
    labels: np.ndarray
    param_name: str
    param: float
    silhouette: float
    tried: tuple[tuple[float, float | None], ...]

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if (self.labels >= 0).any() else 0

    @property
    def n_noise(self) -> int:
        return int((self.labels == NOISE).sum())

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


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    return cdist(x, x).astype(np.float32)


def silhouette(distances: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean silhouette over all faces, from the (N, N) distance matrix; None when fewer than two
    clusters. Noise faces count as singletons and so score 0 (the usual convention for a cluster
    of one): an eps that leaves most faces out cannot win on a few tight clusters, and noise
    is not a cluster other faces are compared with."""
    labels = np.asarray(labels)
    clustered = labels >= 0
    ids, compact = np.unique(labels[clustered], return_inverse=True)
    if len(ids) < 2:
        return None
    d = distances[np.ix_(clustered, clustered)].astype(np.float64)
    counts = np.bincount(compact)
    onehot = np.zeros((len(compact), len(ids)))
    onehot[np.arange(len(compact)), compact] = 1.0
    sums = d @ onehot
    own = counts[compact]
    a = sums[np.arange(len(compact)), compact] / np.maximum(own - 1, 1)
    means = sums / counts
    means[np.arange(len(compact)), compact] = np.inf
    b = means.min(1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.sum() / len(labels))


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel so that cluster 0 is the largest (ties by first member), noise kept at -1."""
    out = np.full(len(labels), NOISE, np.int64)
    ids = [c for c in np.unique(labels) if c >= 0]
    ranked = sorted(ids, key=lambda c: (-int((labels == c).sum()), int(np.argmax(labels == c))))
    for new, old in enumerate(ranked):
        out[labels == old] = new
    return out


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


def kmeans(x: np.ndarray, k_range: Sequence[int] = range(2, 11), seed: int = 0,
           distances: np.ndarray | None = None) -> Clustering:
    """faiss k-means for each k in `k_range` (those below N only); the k with the best silhouette wins."""
    n = len(x)
    ks = [k for k in k_range if 2 <= k < n]
    if not ks:
        raise ValueError(f"k-means needs more faces than clusters: {n} face(s), k in {list(k_range)}")
    d = pairwise_distances(x) if distances is None else distances
    best, tried = None, []
    for k in ks:
        labels = kmeans_labels(x, k, seed)
        score = silhouette(d, labels)
        tried.append((float(k), score))
        if score is not None and (best is None or score > best[1]):
            best = (k, score, labels)
    if best is None:
        raise ValueError("k-means found no k that gives two clusters (all faces identical?)")
    k, score, labels = best
    return Clustering("kmeans", labels, "k", float(k), score, tuple(tried))


def dbscan_labels(distances: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN on a distance matrix. A core face has at least `min_samples` faces (itself included)
    within `eps`; clusters are the connected groups of core faces; a border face joins its
    nearest core face's cluster (deterministic, where the classic algorithm takes whichever core
    face reached it first); the rest is NOISE."""
    near = distances <= eps
    core = near.sum(1) >= min_samples
    labels = np.full(len(distances), NOISE, np.int64)
    if not core.any():
        return labels
    core_ids = np.flatnonzero(core)
    _, components = connected_components(near[np.ix_(core_ids, core_ids)], directed=False)
    labels[core_ids] = components
    border = np.flatnonzero(~core & near[:, core_ids].any(1))
    if len(border):
        to_core = np.where(near[np.ix_(border, core_ids)], distances[np.ix_(border, core_ids)], np.inf)
        labels[border] = components[to_core.argmin(1)]
    return _by_size(labels)


def eps_candidates(distances: np.ndarray, min_samples: int, count: int = 24) -> np.ndarray:
    """Quantiles (5 %..100 %) of each face's distance to its `min_samples`-th nearest face (itself
    counted, as in the core test): the range of the classic k-distance plot, where the elbow
    a person would read off lies."""
    k = min(min_samples, len(distances)) - 1
    kth = np.sort(distances, axis=1)[:, k]
    return np.unique(np.quantile(kth, np.linspace(0.05, 1.0, count)))


def dbscan(x: np.ndarray, min_samples: int = 3, eps_values: Sequence[float] | None = None,
           distances: np.ndarray | None = None) -> Clustering:
    """DBSCAN for each eps candidate (default: `eps_candidates`); the eps with the best silhouette
    wins. Noise faces get label NOISE."""
    if len(x) < 3:
        raise ValueError(f"DBSCAN needs at least 3 faces, got {len(x)}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be at least 1, got {min_samples}")
    d = pairwise_distances(x) if distances is None else distances
    values = eps_candidates(d, min_samples) if eps_values is None else np.asarray(eps_values, float)
    best, tried = None, []
    for eps in values:
        labels = dbscan_labels(d, float(eps), min_samples)
        score = silhouette(d, labels)
        tried.append((float(eps), score))
        if score is not None and (best is None or score > best[1]):
            best = (float(eps), score, labels)
    if best is None:
        raise ValueError(f"DBSCAN found no eps that gives two clusters (min_samples={min_samples}; "
                         f"tried eps {', '.join(f'{e:.3f}' for e in values)})")
    eps, score, labels = best
    return Clustering("dbscan", labels, "eps", eps, score, tuple(tried))


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


def cluster_attribute_counts(clustering: Clustering,
                             attributes: Sequence[FaceAttributes]) -> dict[int, dict[str, Counter]]:
    return {c: attribute_counts([attributes[i] for i in clustering.members(c)])
            for c in range(clustering.n_clusters)}


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
