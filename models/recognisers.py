"""Recognisers: each takes a batch of aligned chips (uint8, as `CropSpec` cut them) and returns a
typed batch result. They never align or detect: one alignment serves them all."""
from __future__ import annotations

import numpy as np

from core.messages import AgeEstimates, ClassScores, Embeddings
from models.backends import Backend
from models.entry import ModelEntry


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class Recogniser:
    def __init__(self, entry: ModelEntry, backend: Backend):
        self.entry = entry
        self.backend = backend

    @property
    def crop(self):
        return self.entry.crop

    def prepare(self, chips: np.ndarray) -> np.ndarray:
        """uint8 chips (N,S,S[,3]) -> the float batch the network expects."""
        e = self.entry
        x = chips.astype(np.float32)
        if x.ndim == 3:
            x = x[..., None]
        x = (x - np.asarray(e.mean, np.float32)) * np.float32(e.scale)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if e.layout == "nchw" else x)

    def outputs(self, chips: np.ndarray) -> np.ndarray:
        out = self.backend.run(self.prepare(chips)).reshape(len(chips), -1)
        return _softmax(out) if self.entry.output == "logits" else out


def _mean_over_views(probs: np.ndarray, views: int) -> np.ndarray:
    """Rows are view-major (all faces of view 0, then of view 1...): the mean per face. Averaging
    probabilities, not the numbers read from them, keeps a posterior a posterior."""
    return probs.reshape(views, len(probs) // views, -1).mean(0)


class AgeEstimator(Recogniser):
    def __call__(self, chips: np.ndarray, views: int = 1) -> AgeEstimates:
        """`views` > 1: `chips` holds that many views of each face, view-major; one estimate a face."""
        if not len(chips):
            return AgeEstimates(np.zeros(0, np.float32), np.zeros((0, len(self.entry.values)), np.float32))
        posteriors = _mean_over_views(self.outputs(chips), views).astype(np.float32)
        ages = posteriors @ np.asarray(self.entry.values, np.float32)
        return AgeEstimates(ages, posteriors)


class Classifier(Recogniser):
    """Gender, expression, or any user attribute model: labelled class probabilities."""

    def __call__(self, chips: np.ndarray, views: int = 1) -> ClassScores:
        """`views` as for `AgeEstimator`."""
        if not len(chips):
            return ClassScores(self.entry.labels, np.zeros((0, len(self.entry.labels)), np.float32))
        return ClassScores(self.entry.labels, _mean_over_views(self.outputs(chips), views).astype(np.float32))


class FaceEmbedder(Recogniser):
    def prepare(self, chips: np.ndarray) -> np.ndarray:
        return chips

    def __call__(self, chips: np.ndarray) -> Embeddings:
        if not len(chips):
            return Embeddings(np.zeros((0, 128), np.float32))
        vectors = self.backend.run(chips)
        return Embeddings(vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12))

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Distance of two normalised embeddings on the model's published scale."""
        return float(np.linalg.norm(a - b)) * self.entry.distance_scale
