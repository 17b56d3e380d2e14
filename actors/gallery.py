"""`GalleryKeeper`: the one writer of a run's gallery. Identity actors, on any machine, hold
replicas: before each batch they ask the keeper's version and fetch what changed since theirs, so a
face enrolled from the stream is searchable by every identity actor on its next batch."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import ray

from core.gallery import GalleryConfig, GalleryIndex, GalleryRows


@dataclass(frozen=True, slots=True)
class GalleryChange:
    version: int
    rows: GalleryRows


def replica(rows: GalleryRows, config: GalleryConfig, into: GalleryIndex | None = None) -> GalleryIndex:
    index = into or GalleryIndex(config)
    if len(rows.names):
        index.add_many(list(rows.names), rows.vectors, list(rows.sources))
    for name in rows.watched:
        index.set_watch(name, True)
    return index


@ray.remote(num_cpus=0)
class GalleryKeeper:
    def __init__(self, directory: str | None, config: GalleryConfig, persist: bool = True):
        self.directory, self.config, self.persist = directory, config, persist and directory is not None
        self.index = GalleryIndex.load(directory, config, missing_ok=True) if directory else GalleryIndex(config)
        self.changes = [GalleryChange(0, self.index.export())]

    def version(self) -> int:
        return self.changes[-1].version

    def since(self, version: int) -> list[GalleryChange]:
        return [c for c in self.changes if c.version > version]

    def enrol_unknown(self, vectors: np.ndarray, source: str) -> str:
        """Enrol a face nobody knows as the next `unknown-N`; saved atomically before it is
        announced, so a crash never leaves a name the gallery does not hold."""
        taken = [int(m.group(1)) for n in self.index.names() if (m := re.fullmatch(r"unknown-(\d+)", n))]
        name = f"unknown-{max(taken, default=0) + 1}"
        self.index.add(name, vectors, [source] * len(vectors))
        if self.persist:
            self.index.save(self.directory)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        self.changes.append(GalleryChange(self.version() + 1, GalleryRows((name,) * len(vectors), unit,
                                                                          (source,) * len(vectors), ())))
        return name
