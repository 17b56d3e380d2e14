"""`GalleryKeeper`: the one writer of a run's gallery. Identity actors, on any machine, hold
replicas: before each batch they ask the keeper's version and fetch what changed since theirs, so a
face enrolled from the stream is searchable by every identity actor on its next batch."""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

import numpy as np
import ray

from core.gallery import GalleryConfig, GalleryIndex, GalleryRows, content_key

# Changes the keeper remembers for replicas that fall behind; one further behind (or new) gets the
# whole gallery instead, so the keeper's memory stays flat however long the run enrols.
KEPT_CHANGES = 64


@dataclass(frozen=True, slots=True)
class GalleryChange:
    version: int
    rows: GalleryRows
    full: bool = False  # the whole gallery at `version`, replacing the replica's rows


def replica(change: GalleryChange, config: GalleryConfig, into: GalleryIndex | None = None) -> GalleryIndex:
    rows = change.rows
    index = GalleryIndex(config) if change.full or into is None else into
    if len(rows.names):
        index.add_many(list(rows.names), rows.vectors, list(rows.sources), keys=list(rows.keys) or None,
                       thumbnails=list(rows.thumbnails) or None)
    for name in rows.watched:
        index.set_watch(name, True)
    return index


@ray.remote(num_cpus=0)
class GalleryKeeper:
    def __init__(self, directory: str | None, config: GalleryConfig, persist: bool = True):
        self.directory, self.config, self.persist = directory, config, persist and directory is not None
        self.index = GalleryIndex.load(directory, config, missing_ok=True) if directory else GalleryIndex(config)
        self.current = 0
        self.changes: deque[GalleryChange] = deque(maxlen=KEPT_CHANGES)

    def version(self) -> int:
        return self.current

    def since(self, version: int) -> list[GalleryChange]:
        if version == self.current:
            return []
        if self.changes and version >= self.changes[0].version - 1:
            return [c for c in self.changes if c.version > version]
        return [GalleryChange(self.current, self.index.export(), full=True)]

    def enrol_unknown(self, vectors: np.ndarray, source: str) -> str:
        """Enrol a face nobody knows as the next `unknown-N`; durable before it is announced (one
        journal record, not a rewrite of the gallery), so a crash never leaves a name the gallery
        does not hold."""
        taken = [int(m.group(1)) for n in self.index.names() if (m := re.fullmatch(r"unknown-(\d+)", n))]
        name = f"unknown-{max(taken, default=0) + 1}"
        unit = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        keys = [content_key(v.tobytes()) for v in unit]
        self.index.add(name, unit, [source] * len(unit), keys=keys)
        if self.persist:
            self.index.append(self.directory)
        self.current += 1
        self.changes.append(GalleryChange(self.current, GalleryRows((name,) * len(unit), unit,
                                                                    (source,) * len(unit), (), tuple(keys))))
        return name
