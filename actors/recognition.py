"""Recognition actors: each takes a batch of jobs (a frame handle + the faces' landmarks), cuts
its own models' chips from the frames, runs each model once on all of them, and returns one
`Recognised` per job."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import ray

from actors.gallery import replica
from core.gallery import GalleryConfig
from core.messages import AgeEstimates, ClassScores, Recognised, RecognitionJob
from models.align import cut_crops
from models.entry import CropSpec
from models.registry import DEFAULT_MODELS, ModelRegistry


def _registry(models_file: str | None) -> ModelRegistry:
    registry = ModelRegistry()
    if models_file:
        registry.add_file(models_file)
    return registry


class _Recognition:
    task = ""

    def __init__(self, models: dict[str, str] | None = None, threads: int = 1, models_file: str | None = None,
                 gallery=None, device: str = "cpu"):
        import cv2

        cv2.setNumThreads(threads)
        self.registry = _registry(models_file)
        self.models = DEFAULT_MODELS | (models or {})
        self.keeper = gallery
        self.loaded: dict[str, object] = {}
        self.setup(threads, device)
        self.warm_up()

    def setup(self, threads: int, device: str) -> None: ...

    def load(self, role: str, threads: int, device: str):
        """The role's model on `device`; a GPU it cannot have is a DeviceError here, at start."""
        self.loaded[self.models[role]] = model = self.registry.load(self.models[role], threads, device=device)
        return model

    def devices(self) -> dict[str, str]:
        """Where each model of the actor really runs, by model name."""
        return {name: model.backend.device for name, model in self.loaded.items()}

    def warm_up(self) -> None:
        """Run each model once before the first job: sessions, graphs and kernels are built lazily,
        and the first frames would otherwise wait seconds for them."""
        self.infer({spec.key: np.zeros((1, spec.size, spec.size) + (() if spec.color == "gray" else (3,)), np.uint8)
                    for spec in self.crop_specs()})

    def where(self) -> tuple[str, int]:
        """(node id, process id): where Ray placed this actor."""
        import os

        return ray.get_runtime_context().get_node_id(), os.getpid()

    def crop_specs(self) -> list[CropSpec]: ...

    def run(self, jobs: list[RecognitionJob]) -> list[Recognised]:
        specs = self.crop_specs()
        images = ray.get([job.frame[0] for job in jobs])
        crops = [cut_crops(image, job.landmarks, specs) for image, job in zip(images, jobs)]
        sizes = [len(job.track_ids) for job in jobs]
        chips = {spec.key: np.concatenate([c.chips[spec.key] for c in crops]) for spec in specs}
        results = self.split(self.infer(chips), jobs, np.cumsum([0] + sizes))
        if not all(r.rows_match() for r in results):
            raise ValueError(f"{self.task}: the model answered a different number of rows than the {sum(sizes)} faces asked")
        return results

    def infer(self, chips: dict[str, np.ndarray]): ...

    def split(self, out, jobs, bounds) -> list[Recognised]: ...


@ray.remote(num_cpus=0.5)
class ExpressionActor(_Recognition):
    task = "expression"

    def setup(self, threads, device):
        self.model = self.load("expression", threads, device)

    def crop_specs(self):
        return [self.model.crop]

    def infer(self, chips):
        return self.model(chips[self.model.crop.key])

    def split(self, out: ClassScores, jobs, b):
        return [Recognised(self.task, j.track_ids, expression=ClassScores(out.labels, out.probs[b[i]:b[i + 1]]))
                for i, j in enumerate(jobs)]


@ray.remote(num_cpus=0.5)
class AgeGenderActor(_Recognition):
    task = "age_gender"

    def setup(self, threads, device):
        self.age = self.load("age", threads, device)
        self.gender = self.load("gender", threads, device)

    def crop_specs(self):
        return [self.age.crop, self.gender.crop]

    def infer(self, chips):
        return self.age(chips[self.age.crop.key]), self.gender(chips[self.gender.crop.key])

    def split(self, out, jobs, b):
        age, gender = out
        return [Recognised(self.task, j.track_ids,
                           age=AgeEstimates(age.ages[b[i]:b[i + 1]], age.posteriors[b[i]:b[i + 1]]),
                           gender=ClassScores(gender.labels, gender.probs[b[i]:b[i + 1]]))
                for i, j in enumerate(jobs)]


@ray.remote(num_cpus=0.5)
class IdentityActor(_Recognition):
    """Embeds faces and, when a gallery is set, names them, or says whom they look like."""

    task = "identity"

    def setup(self, threads, device):
        self.embedder = self.load("identity", threads, device)
        self.gallery = None
        self.version = -1

    def crop_specs(self):
        return [self.embedder.crop]

    def _sync(self) -> None:
        """Bring the replica up to the keeper's version (one small call per batch)."""
        if ray.get(self.keeper.version.remote()) == self.version:
            return
        for change in ray.get(self.keeper.since.remote(self.version)):
            self.gallery = replica(change, GalleryConfig(distance_scale=self.embedder.entry.distance_scale),
                                   self.gallery)
            self.version = change.version

    def infer(self, chips):
        vectors = self.embedder(chips[self.embedder.crop.key]).vectors
        if self.keeper is None or not len(vectors):
            return vectors, ()
        self._sync()
        if not len(self.gallery):
            return vectors, (None,) * len(vectors)
        # The nearest face even beyond the threshold, marked look-alike there: only an identity may
        # carry the watchlist flag.
        matches = tuple(m and replace(m, watched=not m.lookalike and self.gallery.is_watched(m.name))
                        for m in self.gallery.closest(vectors))
        return vectors, matches

    def split(self, out, jobs, b):
        vectors, matches = out
        return [Recognised(self.task, j.track_ids, embeddings=vectors[b[i]:b[i + 1]],
                           matches=tuple(matches[b[i]:b[i + 1]]))
                for i, j in enumerate(jobs)]


RECOGNITION_ACTORS = {"expression": ExpressionActor, "age_gender": AgeGenderActor, "identity": IdentityActor}
