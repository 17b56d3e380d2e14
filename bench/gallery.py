"""Gallery benchmark: a million synthetic face embeddings in a `GalleryIndex`, searched one query
at a time as an identity actor does.

Real embeddings are not uniform on the sphere: a person's faces sit in a tight cluster (dlib: same
person 0.3-0.45 apart) and different people are 0.8-1.2 apart, all within a cone of the space with
an uneven spectrum. The generator mimics that: identity centres drawn around a shared mean with
a decaying per-dimension scale, faces as small noise around their centre, everything normalised.
Queries are fresh faces of enrolled people, not stored vectors, so the search is not trivial.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import faiss
import numpy as np

from core.gallery import GalleryConfig, GalleryIndex

_CENTRE_SPREAD = 0.12  # gives ~1.0 median distance between people
_FACE_NOISE = 0.035  # gives ~0.38 median distance between two faces of one person
_WARMUP = 100  # queries before timing, so first-touch page faults are not counted


@dataclass(frozen=True, slots=True)
class EfSearchPoint:
    ef_search: int
    query_p50_ms: float
    query_p99_ms: float
    recall_at_1: float


@dataclass(frozen=True, slots=True)
class GalleryBenchResult:
    n: int
    dim: int
    people: int
    queries: int
    threads: int
    hnsw_m: int
    ef_construction: int
    ef_search: int
    build_s: float  # every bulk add, including the flat -> HNSW migration
    enrol_rate: float  # vectors/s over the bulk build
    live_enrol_ms_p50: float  # adding one more person (per_person vectors) to the full gallery
    live_enrol_ms_p99: float
    query_p50_ms: float  # GalleryIndex.search with one vector per call
    query_p99_ms: float
    recall_at_1: float  # HNSW nearest row == exact nearest row
    same_person_at_1: float  # HNSW match names the query's own person
    index_bytes: int  # size of the FAISS index as written to the gallery directory
    rss_growth_bytes: int  # process RSS after the build minus before (vectors already generated)
    sweep: tuple[EfSearchPoint, ...]  # the same queries at other efSearch values


class _Identities:
    def __init__(self, people: int, dim: int, rng: np.random.Generator) -> None:
        self.dim = dim
        self.rng = rng
        spectrum = np.exp(-np.arange(dim) / 40.0).astype(np.float32)
        self.scale = spectrum * np.float32(np.sqrt(dim / spectrum.sum()))
        mean = rng.standard_normal(dim).astype(np.float32)
        mean /= np.linalg.norm(mean)
        self.centres = _normalise(mean + _CENTRE_SPREAD * self._noise(people))

    def faces(self, ids: np.ndarray) -> np.ndarray:
        return _normalise(self.centres[ids] + _FACE_NOISE * self._noise(len(ids)))

    def _noise(self, n: int) -> np.ndarray:
        return self.rng.standard_normal((n, self.dim), dtype=np.float32) * self.scale


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _index_bytes(gallery: GalleryIndex) -> int:
    size = 0

    def count(chunk: bytes) -> int:
        nonlocal size
        size += len(chunk)
        return len(chunk)

    faiss.write_index(gallery._index, faiss.PyCallbackIOWriter(count))
    return size


def _ms_percentiles(ns: list[int]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(ns) / 1e6, [50, 99])
    return float(p50), float(p99)


def _query_point(
    gallery: GalleryIndex, probes: np.ndarray, exact_rows: np.ndarray, ef_search: int
) -> EfSearchPoint:
    gallery.set_ef_search(ef_search)
    for q in probes[:_WARMUP]:
        gallery.nearest(q[None], 1)
    latencies, found = [], []
    for q in probes:
        one = q[None]
        t0 = time.perf_counter_ns()
        match = gallery.nearest(one, 1)
        latencies.append(time.perf_counter_ns() - t0)
        found.append(int(match.rows[0, 0]))
    p50, p99 = _ms_percentiles(latencies)
    return EfSearchPoint(ef_search, p50, p99, float(np.mean(np.asarray(found) == exact_rows)))


def gallery_benchmark(
    n: int = 1_000_000,
    dim: int = 128,
    queries: int = 1000,
    seed: int = 0,
    *,
    config: GalleryConfig | None = None,
    per_person: int = 10,
    batch: int = 10_000,
    live_people: int = 100,
    threads: int = 2,
    sweep_ef_search: tuple[int, ...] = (32, 64, 128),
) -> GalleryBenchResult:
    config = config or GalleryConfig(dim=dim)
    faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(seed)
    people = -(-n // per_person)
    identities = _Identities(people + live_people, dim, rng)
    owner = np.repeat(np.arange(people), per_person)[:n]
    vectors = identities.faces(owner)
    asked = rng.integers(0, people, queries)
    probes = identities.faces(asked)
    names = [f"person{i:07d}" for i in range(people + live_people)]

    gallery = GalleryIndex(config)
    rss_before = _rss_bytes()
    start = time.perf_counter()
    for lo in range(0, n, batch):
        rows = range(lo, min(lo + batch, n))
        who = [names[owner[r]] for r in rows]
        gallery.add_many(who, vectors[lo : rows.stop], [f"synthetic/{r}" for r in rows])
    build_s = time.perf_counter() - start
    rss_growth = _rss_bytes() - rss_before

    _, exact = faiss.knn(probes, vectors, 1, faiss.METRIC_INNER_PRODUCT)
    sweep = tuple(
        _query_point(gallery, probes, exact[:, 0], ef)
        for ef in sorted({*sweep_ef_search, config.hnsw_ef_search})
    )
    gallery.set_ef_search(config.hnsw_ef_search)
    chosen = next(p for p in sweep if p.ef_search == config.hnsw_ef_search)
    hnsw_rows = gallery.nearest(probes, 1).rows[:, 0]

    live = []
    for pid in range(people, people + live_people):
        faces = identities.faces(np.full(per_person, pid))
        t0 = time.perf_counter_ns()
        gallery.add(names[pid], faces, ["live"] * per_person)
        live.append(time.perf_counter_ns() - t0)
    live_p50, live_p99 = _ms_percentiles(live)

    return GalleryBenchResult(
        n=n,
        dim=dim,
        people=people,
        queries=queries,
        threads=threads,
        hnsw_m=config.hnsw_m,
        ef_construction=config.hnsw_ef_construction,
        ef_search=config.hnsw_ef_search,
        build_s=build_s,
        enrol_rate=n / build_s,
        live_enrol_ms_p50=live_p50,
        live_enrol_ms_p99=live_p99,
        query_p50_ms=chosen.query_p50_ms,
        query_p99_ms=chosen.query_p99_ms,
        recall_at_1=chosen.recall_at_1,
        same_person_at_1=float(np.mean(owner[hnsw_rows] == asked)),
        index_bytes=_index_bytes(gallery),
        rss_growth_bytes=rss_growth,
        sweep=sweep,
    )


def format_gallery_table(result: GalleryBenchResult) -> str:
    r = result
    live = f"p50 {r.live_enrol_ms_p50:.2f} ms, p99 {r.live_enrol_ms_p99:.2f} ms"
    rows = [
        ("embeddings", f"{r.n:,} x {r.dim} ({r.people:,} people)"),
        ("index", f"HNSW M={r.hnsw_m}, efConstruction={r.ef_construction}, efSearch={r.ef_search}"),
        ("threads", str(r.threads)),
        ("build (bulk enrol)", f"{r.build_s:.1f} s, {r.enrol_rate:,.0f} vectors/s"),
        ("live enrol, one person", live),
        ("query, one vector", f"p50 {r.query_p50_ms:.3f} ms, p99 {r.query_p99_ms:.3f} ms"),
        ("recall@1 vs exact", f"{r.recall_at_1:.4f} ({r.queries:,} queries)"),
        ("nearest is own person", f"{r.same_person_at_1:.4f}"),
        ("index size", f"{r.index_bytes / 2**20:,.0f} MiB"),
        ("process RSS growth", f"{r.rss_growth_bytes / 2**20:,.0f} MiB"),
    ]
    sweep = [
        f"| {p.ef_search} | {p.query_p50_ms:.3f} | {p.query_p99_ms:.3f} | {p.recall_at_1:.4f} |"
        for p in r.sweep
    ]
    return "\n".join(
        [
            "| gallery | |",
            "| --- | --- |",
            *(f"| {name} | {value} |" for name, value in rows),
            "",
            "| efSearch | query p50 ms | query p99 ms | recall@1 |",
            "| --- | --- | --- | --- |",
            *sweep,
        ]
    )
