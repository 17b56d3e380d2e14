"""The gallery of known people: L2-normalised face embeddings searched by Euclidean distance.

Plain Python (no Ray, no models) so the identity actors, the gallery command and the tests share
one implementation. Vectors are stored L2-normalised; for unit vectors the Euclidean distance is
sqrt(2 - 2*cos), so an inner-product FAISS index ranks exactly like L2. Every distance reported, and
the threshold, are on the embedding model's published scale: unit-vector distance times
`GalleryConfig.distance_scale` (1.4 for dlib's ResNet, whose raw descriptors have norm ~1.4), so
dlib's published distances and thresholds keep their meaning.

Small galleries use an exact `IndexFlatIP`; above `GalleryConfig.hnsw_above` embeddings the index is
rebuilt as `IndexHNSWFlat` (inner product). Both keep the raw float32 vectors in their flat storage,
so migration and removal rebuild from exact vectors, never from an approximation. HNSW cannot
delete, so `remove` rebuilds the whole index: cheap for thousands of embeddings, minutes for a
million (a rare admin action; enrolment only appends).

Gallery directory (format v1), every file mode 0600, the directory created 0700, <g> the
generation as six digits:

    manifest.msgpack        {"v": 1, "generation": g, "dim": 128, "count": n, "kind": "flat"|"hnsw",
                             "files": {"index": {"name", "bytes", "sha256"},
                                       "meta":  {"name", "bytes", "sha256"}}}
    index-<g>.faiss         faiss.write_index of the index; row i is embedding i
    meta-<g>.msgpack        {"v": 1, "dim": 128, "count": n,
                             "people": {"name": [str], "watch": [bool]},
                             "rows": {"person": <int32 LE bytes, index into people>,
                                      "enrolled": <float64 LE bytes, unix seconds>,
                                      "source": [str],
                                      "key": [str], "thumb": [str]}}
    thumb-<sha256>.png      a thumbnail (THUMBNAIL_SIZE square, lossless), named by its own sha256,
                            which the rows showing it hold in "thumb" ("" where a row has none)
    journal-<g>.msgpack     rows appended since generation g was saved (`append`), one record per
                            call: {"v": 1, "sha256": hex, "rows": <msgpack bytes of
                            {"name": [str], "vector": <float32 LE bytes>, "source": [str],
                             "key": [str], "enrolled": float}>}

A row's key is the sha256 of what it came from: the source image's bytes when enrolled from a
file, else the embedding's own bytes. No two rows share a key, so enrolling the same image twice
is refused (the enrolment code skips it and says so). Thumbnail files are named by their content
and never rewritten: a save writes only those not there yet. Meta files written before keys
existed still load; their rows are keyed by their embedding and have no thumbnail.

A save writes the generation-numbered files first, then swaps the manifest (the commit point),
then deletes older generations and journals; each file goes through a temp file in the same
directory, fsync and os.replace. A crash at any point therefore leaves the old or the new
manifest, and whichever it is names files that exist and match its recorded length and sha256.
Loading checks both before parsing, so a damaged file raises `GalleryError`, never a wrong answer.
One writer at a time; readers may load while it saves.

`append` is how a running pipeline enrols: it writes only the new rows, as one record at the end
of the current generation's journal, and fsyncs it, so an enrolment costs the same however large
the gallery is. Loading replays the journal after the generation's files: a record cut short by a
crash was never acknowledged and is ignored (the next append writes over it); a complete record
whose sha256 does not match raises `GalleryError`. After `JOURNAL_ROWS` journaled rows, `append`
saves the whole gallery instead, which starts a new generation with an empty journal.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import BinaryIO

import cv2
import faiss
import msgpack
import numpy as np

from core.messages import IdentityMatch

SCHEMA_VERSION = 1
MANIFEST = "manifest.msgpack"
_DATA_FILE = re.compile(r"(index|meta)-(\d+)\.(faiss|msgpack)")
_KEY = re.compile(r"[0-9a-f]{64}")
_THUMB_FILE = re.compile(r"thumb-([0-9a-f]{64})\.png")
_JOURNAL_FILE = re.compile(r"journal-(\d+)\.msgpack")
# Rows a journal holds before `append` folds them into a full save: replaying them at load costs
# well under a second, and the save's cost is spread over this many enrolments.
JOURNAL_ROWS = 1000
# Side of the stored thumbnails: small enough to travel with every identity result and to sit
# beside a face in a 640x480 frame (12 KB of RGB each), large enough to recognise someone.
THUMBNAIL_SIZE = 64
_TMP_SUFFIX = ".tmp"
_CHUNK = 1 << 20
# A reader racing a save may find its manifest's files already deleted; by then a newer manifest
# is in place, so re-reading it a few times always converges while there is one writer.
_LOAD_ATTEMPTS = 5


class GalleryError(Exception):
    """A gallery directory that cannot be read as written: missing, truncated, corrupt, or from
    an incompatible version. The message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class GalleryConfig:
    # Distance above which a face is unknown. Stricter than dlib's LFW verification point (0.6):
    # a gallery answers "who is this" among strangers, and on the test media (dlib scale) the
    # same person lies at <= 0.53 while strangers come as close as 0.584 (messi5.jpg's 32-px
    # face to alex_lacamoire) and 0.564 (crossing_faces.mp4's unknown_a).
    threshold: float = 0.55
    # Unit-vector distance x this = the model's own distance; build it from the embedder's
    # `entry.distance_scale`, else thresholds lose their published meaning.
    distance_scale: float = 1.0
    dim: int = 128
    hnsw_above: int = 20_000  # embeddings; below it exact search costs well under 1 ms a query
    hnsw_m: int = 16
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 96

    def __post_init__(self) -> None:
        if not self.distance_scale > 0:
            raise ValueError(f"distance_scale must be > 0, got {self.distance_scale}")


@dataclass(frozen=True, slots=True)
class Neighbours:
    """The k nearest stored embeddings per query: row -1 and distance inf where the gallery holds
    fewer than k. Rows stay valid until the next add/remove."""

    rows: np.ndarray  # (N, k) int64
    distances: np.ndarray  # (N, k) float32, Euclidean on the model's scale (x distance_scale)


@dataclass(frozen=True, slots=True)
class GalleryEntry:
    name: str
    source: str
    enrolled: float  # unix seconds


@dataclass(frozen=True, slots=True)
class GalleryRows:
    names: tuple[str, ...]  # one per row
    vectors: np.ndarray  # (rows, dim) unit vectors
    sources: tuple[str, ...]
    watched: tuple[str, ...]  # people on the watchlist
    keys: tuple[str, ...] = ()  # one per row; empty: keyed by the vectors
    thumbnails: tuple[np.ndarray | None, ...] = ()  # one per row; empty: none


@dataclass(frozen=True, slots=True)
class PersonSummary:
    name: str
    embeddings: int
    watch: bool


def content_key(data: bytes) -> str:
    """A row's key: the sha256 of the bytes it was enrolled from."""
    return hashlib.sha256(data).hexdigest()


def similarity(distance: float, distance_scale: float) -> float:
    """How alike two faces look, 0..1, for people to read: 1 - the distance between their unit
    embeddings, so 1 is the same vector and 0 orthogonal ones (unrelated). On dlib's scale (1.4)
    the identity threshold 0.55 reads 61 %, and the strangers nearest a gallery face (0.56-0.75 on
    the bundled media) 60-46 %."""
    return float(min(1.0, max(0.0, 1.0 - distance / distance_scale)))


def make_thumbnail(chip: np.ndarray) -> np.ndarray:
    """A stored thumbnail from an identity chip (RGB uint8, any square size)."""
    return cv2.resize(chip, (THUMBNAIL_SIZE, THUMBNAIL_SIZE), interpolation=cv2.INTER_AREA)


class GalleryIndex:
    """Named people, several embeddings each, with a watchlist flag per person.

    Not copied between processes: each identity actor loads the directory. Calls are serialised by
    a lock because FAISS indexes must not be searched while they are being added to, and threaded
    actors may do both at once."""

    def __init__(self, config: GalleryConfig | None = None) -> None:
        self.config = config or GalleryConfig()
        self._lock = threading.RLock()
        self._index: faiss.Index = faiss.IndexFlatIP(self.config.dim)
        self._names: list[str] = []
        self._watch: list[bool] = []
        self._pid: dict[str, int] = {}
        self._row_person = array("i")
        self._row_enrolled = array("d")
        self._row_source: list[str] = []
        self._row_key: list[str] = []
        self._key_row: dict[str, int] = {}
        self._thumbs: dict[str, np.ndarray] = {}  # by row key
        self._thumb_sha: dict[str, str] = {}  # by row key: sha256 of its PNG file
        # What is durable where: the directory and generation last saved or loaded, how many rows
        # (its own plus journaled), the journal's length in bytes and rows. None once something
        # a journal cannot record (a removal, a watch flag) changed: the next append saves.
        self._durable: _Durable | None = None

    # ---- queries -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __contains__(self, name: object) -> bool:
        return name in self._pid

    @property
    def kind(self) -> str:
        return _kind_of(self._index)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._names)

    def people(self) -> list[PersonSummary]:
        with self._lock:
            counts = np.bincount(self._person_column(), minlength=len(self._names))
            return [
                PersonSummary(name, int(counts[pid]), self._watch[pid])
                for pid, name in enumerate(self._names)
            ]

    def holder(self, key: str) -> str | None:
        """Who the row with this key belongs to; None when no row has it."""
        with self._lock:
            row = self._key_row.get(key)
            return None if row is None else self._names[self._row_person[row]]

    def is_watched(self, name: str) -> bool:
        with self._lock:
            return self._watch[self._person(name)]

    def entry(self, row: int) -> GalleryEntry:
        with self._lock:
            if not 0 <= row < len(self._row_source):
                raise IndexError(f"row {row} not in gallery of {len(self._row_source)}")
            return GalleryEntry(
                self._names[self._row_person[row]], self._row_source[row], self._row_enrolled[row]
            )

    def nearest(self, vectors: np.ndarray, k: int = 1) -> Neighbours:
        """The k nearest embeddings to each query (normalised here), with no threshold."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = self._unit(vectors)
        with self._lock:
            if self._index.ntotal == 0:
                rows = np.full((len(queries), k), -1, np.int64)
                return Neighbours(rows, np.full((len(queries), k), np.inf, np.float32))
            sims, rows = self._index.search(queries, k)
        unit_dist = np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0))
        dist = (unit_dist * self.config.distance_scale).astype(np.float32)
        dist[rows < 0] = np.inf
        return Neighbours(rows.astype(np.int64, copy=False), dist)

    def search(self, vectors: np.ndarray) -> list[IdentityMatch | None]:
        """The nearest person per query, or None where even the nearest is above the threshold."""
        threshold = self.config.threshold
        closest = self.closest(vectors)
        return [m if m is not None and m.distance <= threshold else None for m in closest]

    def closest(self, vectors: np.ndarray) -> list[IdentityMatch | None]:
        """The nearest gallery face per query whatever the distance (None only in an empty
        gallery), marked `lookalike` beyond the threshold, with its similarity and thumbnail."""
        cfg = self.config
        # One lock span: rows are only meaningful until the next change.
        with self._lock:
            found = self.nearest(vectors, 1)
            return [
                IdentityMatch(self._names[self._row_person[row]], d, lookalike=d > cfg.threshold,
                              similarity=similarity(d, cfg.distance_scale),
                              thumbnail=self._thumbs.get(self._row_key[row]))
                if row >= 0 else None
                for row, d in zip(found.rows[:, 0].tolist(), found.distances[:, 0].tolist())
            ]

    # ---- changes -------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        vectors: np.ndarray,
        sources: Sequence[str],
        *,
        keys: Sequence[str] | None = None,
        thumbnails: Sequence[np.ndarray | None] | None = None,
        enrolled: float | None = None,
    ) -> None:
        """Enrol embeddings for `name` (a new person starts off the watchlist)."""
        self.add_many([name] * len(vectors), vectors, sources, keys=keys, thumbnails=thumbnails,
                      enrolled=enrolled)

    def add_many(
        self,
        names: Sequence[str],
        vectors: np.ndarray,
        sources: Sequence[str],
        *,
        keys: Sequence[str] | None = None,
        thumbnails: Sequence[np.ndarray | None] | None = None,
        enrolled: float | None = None,
    ) -> None:
        """Enrol embeddings of several people at once, one name per vector: a bulk import in one
        FAISS call, which HNSW builds in parallel where per-person calls cannot. `keys` (default:
        each embedding's own hash) must be new to the gallery; `thumbnails` are THUMBNAIL_SIZE
        square RGB uint8 images, None where a row has none."""
        unit = self._unit(vectors)
        if len(unit) == 0:
            raise ValueError("no vectors given")
        if keys is not None and not all(_KEY.fullmatch(k) for k in keys):
            raise ValueError("keys must be sha256 hex digests (content_key)")
        keys = list(keys) if keys is not None else [content_key(v.tobytes()) for v in unit]
        thumbnails = list(thumbnails) if thumbnails is not None else [None] * len(unit)
        if not len(names) == len(sources) == len(unit) == len(keys) == len(thumbnails):
            raise ValueError(f"{len(unit)} vectors, {len(names)} names, {len(sources)} sources, "
                             f"{len(keys)} keys, {len(thumbnails)} thumbnails")
        if not all(names):
            raise ValueError("person names must be non-empty")
        shape = (THUMBNAIL_SIZE, THUMBNAIL_SIZE, 3)
        if any(t is not None and (t.shape != shape or t.dtype != np.uint8) for t in thumbnails):
            raise ValueError(f"thumbnails must be {shape} uint8")
        when = time.time() if enrolled is None else float(enrolled)
        with self._lock:
            if len(set(keys)) != len(keys) or any(k in self._key_row for k in keys):
                raise ValueError("an embedding with the same key is already in the gallery")
            if self.kind == "flat" and self._index.ntotal + len(unit) > self.config.hnsw_above:
                self._index = self._build(np.concatenate([self._stored_vectors(), unit]))
            else:
                self._index.add(unit)
            for name in names:
                if name not in self._pid:
                    self._pid[name] = len(self._names)
                    self._names.append(name)
                    self._watch.append(False)
            self._row_person.extend(self._pid[name] for name in names)
            self._row_enrolled.extend([when] * len(unit))
            self._row_source.extend(str(s) for s in sources)
            for key, thumb in zip(keys, thumbnails):
                self._key_row[key] = len(self._row_key)
                self._row_key.append(key)
                if thumb is not None:
                    self._thumbs[key] = np.array(thumb, np.uint8)
                    self._thumb_sha[key] = hashlib.sha256(_encode_thumbnail(thumb)).hexdigest()

    def remove(self, name: str) -> int:
        """Forget a person and all their embeddings; returns how many were removed."""
        with self._lock:
            self._durable = None
            gone = self._person(name)
            person = self._person_column()
            keep = person != gone
            self._index = self._build(self._stored_vectors()[keep])
            # Person ids above the removed one shift down so ids stay dense.
            kept = person[keep]
            self._row_person = _column("i", np.where(kept > gone, kept - 1, kept).astype(np.int32))
            self._row_enrolled = _column("d", np.array(self._row_enrolled, np.float64)[keep])
            self._row_source = [s for s, k in zip(self._row_source, keep.tolist()) if k]
            gone_keys = [k for k, kept in zip(self._row_key, keep.tolist()) if not kept]
            self._row_key = [k for k, kept in zip(self._row_key, keep.tolist()) if kept]
            self._key_row = {k: i for i, k in enumerate(self._row_key)}
            for key in gone_keys:
                self._thumbs.pop(key, None)
                self._thumb_sha.pop(key, None)
            del self._names[gone], self._watch[gone]
            self._pid = {n: i for i, n in enumerate(self._names)}
            return int((~keep).sum())

    def set_ef_search(self, ef_search: int) -> None:
        """Trade HNSW recall for query time on a live gallery; kept across rebuilds."""
        if ef_search < 1:
            raise ValueError(f"ef_search must be >= 1, got {ef_search}")
        with self._lock:
            self.config = replace(self.config, hnsw_ef_search=ef_search)
            if isinstance(self._index, faiss.IndexHNSW):
                self._index.hnsw.efSearch = ef_search

    def set_watch(self, name: str, watch: bool) -> None:
        with self._lock:
            self._durable = None
            self._watch[self._person(name)] = bool(watch)

    # ---- persistence ---------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> None:
        directory = os.fspath(directory)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with self._lock:
            generation = 1 + max((g for _, g in _data_files(directory)), default=0)
            index_name = f"index-{generation:06d}.faiss"
            meta_name = f"meta-{generation:06d}.msgpack"
            index_bytes, index_sha = _write_atomic(directory, index_name, self._write_index)
            meta = msgpack.packb(self._meta_document(), use_bin_type=True)
            meta_bytes, meta_sha = _write_atomic(directory, meta_name, lambda out: out.write(meta))
            for key, thumb in self._thumbs.items():
                if not os.path.exists(os.path.join(directory, _thumb_name(self._thumb_sha[key]))):
                    png = _encode_thumbnail(thumb)
                    _write_atomic(directory, _thumb_name(self._thumb_sha[key]), lambda out: out.write(png))
            manifest = {
                "v": SCHEMA_VERSION,
                "generation": generation,
                "dim": self.config.dim,
                "count": len(self),
                "kind": self.kind,
                "files": {
                    "index": {"name": index_name, "bytes": index_bytes, "sha256": index_sha},
                    "meta": {"name": meta_name, "bytes": meta_bytes, "sha256": meta_sha},
                },
            }
            # The data files' renames must be durable before the manifest that names them is.
            _fsync_dir(directory)
            packed = msgpack.packb(manifest, use_bin_type=True)
            _write_atomic(directory, MANIFEST, lambda out: out.write(packed))
            _fsync_dir(directory)
            _remove_stale(directory, keep={index_name, meta_name, *map(_thumb_name, self._thumb_sha.values())})
            self._durable = _Durable(directory, generation, len(self), 0, 0)

    def append(self, directory: str | os.PathLike[str]) -> None:
        """Make the rows added since the last save, load or append durable in `directory`: one
        record appended to its journal and fsynced. Falls back to a full `save` where a journal
        cannot say it (no generation there yet, a removal or watch change, thumbnails) or the
        journal is full."""
        directory = os.fspath(directory)
        with self._lock:
            done = self._durable
            here = done is not None and done.directory == directory
            if here and done.rows == len(self):
                return
            new = range(done.rows, len(self)) if here else range(0)
            if (not new or done.journal_rows + len(new) > JOURNAL_ROWS
                    or any(self._row_key[r] in self._thumbs for r in new)):
                self.save(directory)
                return
            rows = msgpack.packb({
                "name": [self._names[self._row_person[r]] for r in new],
                "vector": self._index.reconstruct_n(new.start, len(new)).astype("<f4").tobytes(),
                "source": [self._row_source[r] for r in new],
                "key": [self._row_key[r] for r in new],
                "enrolled": float(self._row_enrolled[new.start]),
            }, use_bin_type=True)
            record = msgpack.packb({"v": SCHEMA_VERSION, "sha256": hashlib.sha256(rows).hexdigest(),
                                    "rows": rows}, use_bin_type=True)
            path = os.path.join(directory, _journal_name(done.generation))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.fchmod(fd, 0o600)
                # A record cut short by a crash was never acknowledged: write over it.
                os.ftruncate(fd, done.journal_bytes)
                os.pwrite(fd, record, done.journal_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
            if done.journal_bytes == 0:
                _fsync_dir(directory)  # the journal's name must survive a crash too
            self._durable = _Durable(directory, done.generation, len(self),
                                     done.journal_bytes + len(record), done.journal_rows + len(new))

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        config: GalleryConfig | None = None,
        *,
        missing_ok: bool = False,
    ) -> GalleryIndex:
        """Read a gallery directory; with `missing_ok`, one holding no gallery yet gives an empty
        gallery (the first save creates it)."""
        directory = os.fspath(directory)
        gallery = cls(config)
        if missing_ok and not os.path.exists(os.path.join(directory, MANIFEST)):
            return gallery
        for _ in range(_LOAD_ATTEMPTS):
            manifest = _read_manifest(directory, gallery.config.dim)
            with ExitStack() as files:
                try:
                    index_file = files.enter_context(_open_checked(directory, manifest, "index"))
                    meta_file = files.enter_context(_open_checked(directory, manifest, "meta"))
                    meta = gallery._read_meta(directory, manifest, meta_file)
                    thumbs = _read_thumbnails(directory, meta)
                    journal = _read_journal(directory, manifest["generation"], gallery.config.dim)
                except FileNotFoundError as missing:
                    now = _read_manifest(directory, gallery.config.dim)
                    if now["generation"] == manifest["generation"]:
                        problem = f"{missing.filename}: missing, named by {MANIFEST}"
                        raise GalleryError(problem) from None
                    continue
                if journal is None and _read_manifest(directory, gallery.config.dim)["generation"] != (
                        manifest["generation"]):
                    continue  # no journal because a save just folded it into a newer generation
                gallery._restore(directory, manifest, index_file, meta, thumbs)
                journal_bytes = journal_rows = 0
                for record in journal.records if journal else ():
                    try:
                        gallery.add_many(record["name"], record["vector"], record["source"],
                                         keys=record["key"], enrolled=record["enrolled"])
                    except ValueError as bad:
                        problem = f"{_journal_name(manifest['generation'])}: record does not fit the gallery ({bad})"
                        raise GalleryError(os.path.join(directory, problem)) from None
                    journal_rows += len(record["key"])
                if journal:
                    journal_bytes = journal.good_bytes
                gallery._durable = _Durable(directory, manifest["generation"], len(gallery),
                                            journal_bytes, journal_rows)
                return gallery
        raise GalleryError(f"{directory}: gallery kept changing while being read")

    # ---- internals -----------------------------------------------------------------------------

    def _person(self, name: str) -> int:
        try:
            return self._pid[name]
        except KeyError:
            raise KeyError(f"no person named {name!r} in the gallery") from None

    def _person_column(self) -> np.ndarray:
        # A copy: a live numpy view would stop the array from growing (BufferError on extend).
        return np.array(self._row_person, np.int32)

    def _unit(self, vectors: np.ndarray) -> np.ndarray:
        x = np.array(vectors, dtype=np.float32, order="C", copy=True)
        if x.ndim != 2 or x.shape[1] != self.config.dim:
            raise ValueError(f"expected vectors of shape (N, {self.config.dim}), got {x.shape}")
        norms = np.linalg.norm(x, axis=1)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise ValueError("vectors must be finite and non-zero")
        x /= norms[:, None]
        return x

    def export(self) -> GalleryRows:
        """Every stored row, to rebuild an equal index elsewhere (a replica in another process)."""
        with self._lock:
            return GalleryRows(tuple(self._names[p] for p in self._row_person), self._stored_vectors(),
                               tuple(self._row_source), tuple(n for n, w in zip(self._names, self._watch) if w),
                               tuple(self._row_key), tuple(self._thumbs.get(k) for k in self._row_key))

    def _stored_vectors(self) -> np.ndarray:
        if self._index.ntotal == 0:
            return np.zeros((0, self.config.dim), np.float32)
        return self._index.reconstruct_n(0, self._index.ntotal)

    def _build(self, vectors: np.ndarray) -> faiss.Index:
        cfg = self.config
        if len(vectors) > cfg.hnsw_above:
            index = faiss.IndexHNSWFlat(cfg.dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = cfg.hnsw_ef_construction
            index.hnsw.efSearch = cfg.hnsw_ef_search
        else:
            index = faiss.IndexFlatIP(cfg.dim)
        index.add(np.ascontiguousarray(vectors, np.float32))
        return index

    def _write_index(self, out: BinaryIO) -> None:
        faiss.write_index(self._index, faiss.PyCallbackIOWriter(out.write))

    def _meta_document(self) -> dict:
        return {
            "v": SCHEMA_VERSION,
            "dim": self.config.dim,
            "count": len(self),
            "people": {"name": list(self._names), "watch": list(self._watch)},
            "rows": {
                "person": self._person_column().astype("<i4").tobytes(),
                "enrolled": np.array(self._row_enrolled, "<f8").tobytes(),
                "source": list(self._row_source),
                "key": list(self._row_key),
                "thumb": [self._thumb_sha.get(k, "") for k in self._row_key],
            },
        }

    def _read_meta(self, directory: str, manifest: dict, meta_file: BinaryIO) -> _Meta:
        meta_path = os.path.join(directory, manifest["files"]["meta"]["name"])
        count = manifest["count"]
        try:
            meta = msgpack.unpackb(meta_file.read(), raw=False)
            if meta["v"] != SCHEMA_VERSION:
                raise GalleryError(
                    f"{meta_path}: schema v{meta['v']}, this reads v{SCHEMA_VERSION}"
                )
            names = [str(n) for n in meta["people"]["name"]]
            watch = [bool(w) for w in meta["people"]["watch"]]
            rows = meta["rows"]
            person = np.frombuffer(rows["person"], "<i4").astype(np.int32)
            enrolled = np.frombuffer(rows["enrolled"], "<f8").astype(np.float64)
            sources = [str(s) for s in rows["source"]]
            keys = [str(k) for k in rows["key"]] if "key" in rows else None
            thumbs = [str(t) for t in rows.get("thumb", [""] * meta["count"])]
            lengths = {meta["count"], len(person), len(enrolled), len(sources), len(thumbs),
                       *([len(keys)] if keys is not None else [])}
        except GalleryError:
            raise
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as bad:
            problem = f"{meta_path}: not a valid gallery metadata file ({bad!r})"
            raise GalleryError(problem) from None
        if lengths != {count} or len(names) != len(watch) or len(set(names)) != len(names):
            raise GalleryError(f"{meta_path}: row or people counts disagree with {MANIFEST}")
        if count and (person.min() < 0 or person.max() >= len(names)):
            raise GalleryError(f"{meta_path}: rows name people that are not in it")
        if keys is not None and len(set(keys)) != len(keys):
            raise GalleryError(f"{meta_path}: row keys are not distinct")
        if not all(_THUMB_FILE.fullmatch(_thumb_name(t)) for t in thumbs if t):
            raise GalleryError(f"{meta_path}: thumbnail names are not sha256 digests")
        if any(t and keys is None for t in thumbs):
            raise GalleryError(f"{meta_path}: thumbnails of rows that have no key")
        return _Meta(names, watch, person, enrolled, sources, keys, thumbs)

    def _restore(
        self, directory: str, manifest: dict, index_file: BinaryIO, meta: _Meta,
        thumbs: dict[str, np.ndarray],
    ) -> None:
        cfg = self.config
        index_path = os.path.join(directory, manifest["files"]["index"]["name"])
        count = manifest["count"]
        try:
            index = faiss.read_index(faiss.PyCallbackIOReader(index_file.read))
        except RuntimeError as bad:
            raise GalleryError(f"{index_path}: not a readable FAISS index ({bad})") from None
        if not isinstance(index, faiss.IndexFlatIP | faiss.IndexHNSWFlat) or (
            index.metric_type != faiss.METRIC_INNER_PRODUCT
        ):
            raise GalleryError(f"{index_path}: expected an inner-product flat or HNSW index")
        if _kind_of(index) != manifest["kind"]:
            raise GalleryError(f"{index_path}: not the {manifest['kind']} index {MANIFEST} names")
        if index.d != cfg.dim or index.ntotal != count:
            raise GalleryError(
                f"{index_path}: holds {index.ntotal} x {index.d}, manifest says {count} x {cfg.dim}"
            )
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = cfg.hnsw_ef_search
        self._index = index
        self._names, self._watch = meta.names, meta.watch
        self._pid = {n: i for i, n in enumerate(meta.names)}
        self._row_person = _column("i", meta.person)
        self._row_enrolled = _column("d", meta.enrolled)
        self._row_source = meta.sources
        # Rows saved before keys existed are keyed by their embedding, as new keyless rows are.
        self._row_key = meta.keys if meta.keys is not None else [
            content_key(v.tobytes()) for v in self._stored_vectors()]
        self._key_row = {k: i for i, k in enumerate(self._row_key)}
        self._thumbs = thumbs
        self._thumb_sha = {k: t for k, t in zip(self._row_key, meta.thumbs) if t}


@dataclass(frozen=True, slots=True)
class _Durable:
    directory: str
    generation: int
    rows: int
    journal_bytes: int
    journal_rows: int


@dataclass(frozen=True, slots=True)
class _Journal:
    records: list[dict]  # each with name, vector (n, dim), source, key, enrolled
    good_bytes: int  # up to the end of the last complete record


def _journal_name(generation: int) -> str:
    return f"journal-{generation:06d}.msgpack"


def _read_journal(directory: str, generation: int, dim: int) -> _Journal | None:
    path = os.path.join(directory, _journal_name(generation))
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    records, good = [], 0
    # A record cut short by a crash ends the iteration quietly; so do bytes a crash left as zeros
    # after extending the file (both were never acknowledged). Anything else that fails is damage.
    try:
        for record in unpacker:
            if not isinstance(record, dict) or record.get("v") != SCHEMA_VERSION or (
                    hashlib.sha256(record["rows"]).hexdigest() != record["sha256"]):
                if not data[good:].strip(b"\0"):
                    break
                raise GalleryError(f"{path}: corrupt record at byte {good}")
            rows = msgpack.unpackb(record["rows"], raw=False)
            vectors = np.frombuffer(rows["vector"], "<f4").astype(np.float32).reshape(-1, dim)
            records.append({"name": [str(n) for n in rows["name"]], "vector": vectors,
                            "source": [str(x) for x in rows["source"]], "key": [str(k) for k in rows["key"]],
                            "enrolled": float(rows["enrolled"])})
            good = unpacker.tell()
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as bad:
        raise GalleryError(f"{path}: corrupt record at byte {good} ({bad!r})") from None
    return _Journal(records, good)


@dataclass(frozen=True, slots=True)
class _Meta:
    names: list[str]
    watch: list[bool]
    person: np.ndarray
    enrolled: np.ndarray
    sources: list[str]
    keys: list[str] | None  # None: written before rows had keys
    thumbs: list[str]  # sha256 of each row's thumbnail file, "" for none


def _thumb_name(sha: str) -> str:
    return f"thumb-{sha}.png"


def _encode_thumbnail(thumb: np.ndarray) -> bytes:
    ok, png = cv2.imencode(".png", np.ascontiguousarray(thumb[:, :, ::-1]))
    if not ok:
        raise ValueError("thumbnail could not be encoded as PNG")
    return png.tobytes()


def _read_thumbnails(directory: str, meta: _Meta) -> dict[str, np.ndarray]:
    """The thumbnails `meta` names, each checked against its recorded sha256 before decoding."""
    thumbs = {}
    for key, sha in zip(meta.keys or (), meta.thumbs):
        if not sha:
            continue
        path = os.path.join(directory, _thumb_name(sha))
        with open(path, "rb") as f:
            png = f.read()
        if hashlib.sha256(png).hexdigest() != sha:
            raise GalleryError(f"{path}: corrupt: content does not match the sha256 in its meta file")
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        if image is None or image.shape != (THUMBNAIL_SIZE, THUMBNAIL_SIZE, 3):
            raise GalleryError(f"{path}: not a {THUMBNAIL_SIZE}x{THUMBNAIL_SIZE} thumbnail")
        thumbs[key] = np.ascontiguousarray(image[:, :, ::-1])
    return thumbs


def _kind_of(index: faiss.Index) -> str:
    return "hnsw" if isinstance(index, faiss.IndexHNSW) else "flat"


def _column(typecode: str, values: np.ndarray) -> array:
    column = array(typecode)
    column.frombytes(np.ascontiguousarray(values).tobytes())
    return column


def _data_files(directory: str) -> list[tuple[str, int]]:
    return [
        (name, int(m.group(2)))
        for name in os.listdir(directory)
        if (m := _DATA_FILE.fullmatch(name))
    ]


def _write_atomic(
    directory: str, name: str, write: Callable[[BinaryIO], object]
) -> tuple[int, str]:
    """Write `name` via a temp file in the same directory; returns its length and sha256."""
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may only have narrowed it; make it exact
        with os.fdopen(fd, "wb") as raw:
            hashing = _HashingWriter(raw)
            write(hashing)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return hashing.size, hashing.sha.hexdigest()


class _HashingWriter:
    """Hashes what passes through, so a file is read once on save and never re-read to check it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(directory: str, keep: set[str]) -> None:
    for name in os.listdir(directory):
        stale_data = (_DATA_FILE.fullmatch(name) or _THUMB_FILE.fullmatch(name)
                      or _JOURNAL_FILE.fullmatch(name)) and name not in keep
        if stale_data or (name.startswith(".") and name.endswith(_TMP_SUFFIX)):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass


def _read_manifest(directory: str, dim: int) -> dict:
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as f:
            manifest = msgpack.unpackb(f.read(), raw=False)
    except FileNotFoundError:
        raise GalleryError(f"{path}: missing (not a gallery directory)") from None
    except (ValueError, msgpack.UnpackException) as bad:
        raise GalleryError(f"{path}: not a valid gallery manifest ({bad!r})") from None
    try:
        if manifest["v"] != SCHEMA_VERSION:
            raise GalleryError(f"{path}: schema v{manifest['v']}, this reads v{SCHEMA_VERSION}")
        files = manifest["files"]
        valid = (
            isinstance(manifest["generation"], int)
            and isinstance(manifest["dim"], int)
            and manifest["kind"] in ("flat", "hnsw")
            and isinstance(manifest["count"], int)
            and manifest["count"] >= 0
            and all(
                isinstance(files[key]["name"], str)
                and _DATA_FILE.fullmatch(files[key]["name"])
                and isinstance(files[key]["bytes"], int)
                and isinstance(files[key]["sha256"], str)
                for key in ("index", "meta")
            )
        )
    except (KeyError, TypeError) as bad:
        raise GalleryError(f"{path}: not a valid gallery manifest (missing {bad})") from None
    if not valid:
        raise GalleryError(f"{path}: not a valid gallery manifest (bad field types or file names)")
    if manifest["dim"] != dim:
        raise GalleryError(f"{path}: embeddings are {manifest['dim']}-D, configured for {dim}-D")
    return manifest


def _open_checked(directory: str, manifest: dict, key: str) -> BinaryIO:
    """Open a data file and check its length and sha256 against the manifest before anyone parses
    it; the open handle survives a concurrent save deleting the file."""
    recorded = manifest["files"][key]
    path = os.path.join(directory, recorded["name"])
    f = open(path, "rb")
    try:
        size = os.fstat(f.fileno()).st_size
        if size != recorded["bytes"]:
            problem = "truncated" if size < recorded["bytes"] else "too long"
            raise GalleryError(
                f"{path}: {problem}: {size} bytes, manifest says {recorded['bytes']}"
            )
        sha = hashlib.sha256()
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
        if sha.hexdigest() != recorded["sha256"]:
            raise GalleryError(f"{path}: corrupt: content does not match the sha256 in {MANIFEST}")
        f.seek(0)
        return f
    except BaseException:
        f.close()
        raise
