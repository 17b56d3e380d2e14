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


class AgeEstimator(Recogniser):
    def __call__(self, chips: np.ndarray) -> AgeEstimates:
        if not len(chips):
            return AgeEstimates(np.zeros(0, np.float32), np.zeros((0, len(self.entry.values)), np.float32))
        posteriors = self.outputs(chips).astype(np.float32)
        ages = posteriors @ np.asarray(self.entry.values, np.float32)
        return AgeEstimates(ages, posteriors)


class Classifier(Recogniser):
    """Gender, expression, or any user attribute model: labelled class probabilities."""

    def __call__(self, chips: np.ndarray) -> ClassScores:
        if not len(chips):
            return ClassScores(self.entry.labels, np.zeros((0, len(self.entry.labels)), np.float32))
        return ClassScores(self.entry.labels, self.outputs(chips).astype(np.float32))


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
