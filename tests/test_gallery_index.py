"""GalleryIndex on synthetic unit vectors: search, HNSW migration, persistence and its failures."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

import core.gallery as gallery_mod
from core.gallery import MANIFEST, GalleryConfig, GalleryError, GalleryIndex
from core.messages import IdentityMatch

DIM = 128


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(rng: np.random.Generator, centre: np.ndarray, n: int, distance: float) -> np.ndarray:
    """n unit vectors at the given Euclidean distance from a unit `centre`."""
    noise = rng.standard_normal((n, DIM)).astype(np.float32)
    noise -= (noise @ centre)[:, None] * centre  # orthogonal to the centre
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cos = 1 - distance**2 / 2
    return (cos * centre + np.sqrt(1 - cos**2) * noise).astype(np.float32)


def three_people(config: GalleryConfig | None = None) -> tuple[GalleryIndex, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    centres = dict(zip(["ada", "bob", "cy"], unit(rng, 3)))
    g = GalleryIndex(config)
    for name, c in centres.items():
        g.add(name, near(rng, c, 3, 0.3), [f"{name}/img{i}.jpg" for i in range(3)], enrolled=100.0)
    return g, centres


def test_exact_search_names_distances_and_unknown() -> None:
    g, centres = three_people()
    assert g.kind == "flat" and len(g) == 9 and g.names() == ["ada", "bob", "cy"]
    rng = np.random.default_rng(2)
    bob, ada = near(rng, centres["bob"], 1, 0.2), near(rng, centres["ada"], 1, 0.25)
    queries = np.concatenate([bob, ada])
    # Unnormalised input is normalised by the index, as dlib embeddings may not be unit length.
    found = g.search(queries * 3.0)
    assert [m.name for m in found] == ["bob", "ada"]
    stored = np.stack([g._index.reconstruct(i) for i in range(len(g))])
    d = np.linalg.norm(stored[None] - queries[:, None], axis=2).min(axis=1)
    assert np.allclose([m.distance for m in found], d, atol=1e-5)
    stranger = unit(np.random.default_rng(3), 1)  # ~1.41 from everyone
    assert g.search(stranger) == [None]
    assert g.search(stored[4:5])[0] == IdentityMatch("bob", pytest.approx(0.0, abs=1e-3))


def test_nearest_k_and_entries() -> None:
    g, centres = three_people()
    found = g.nearest(centres["cy"][None], k=4)
    assert found.rows.shape == (1, 4) and np.all(np.diff(found.distances[0]) >= 0)
    assert {g.entry(int(r)).name for r in found.rows[0, :3]} == {"cy"}
    entry = g.entry(int(found.rows[0, 0]))
    assert entry.source.startswith("cy/img") and entry.enrolled == 100.0
    empty = GalleryIndex().nearest(centres["cy"][None], k=2)
    assert empty.rows.tolist() == [[-1, -1]] and np.all(np.isinf(empty.distances))
    assert GalleryIndex().search(centres["cy"][None]) == [None]
    assert GalleryIndex().closest(centres["cy"][None]) == [None]
    assert g.search(np.zeros((0, DIM), np.float32)) == []


def test_threshold_comes_from_config() -> None:
    g, centres = three_people(GalleryConfig(threshold=0.1))
    probe = near(np.random.default_rng(4), centres["ada"], 1, 0.45)
    assert g.search(probe) == [None]


def test_distance_scale_applies_to_distances_and_threshold() -> None:
    """dlib-scale galleries (x1.4): a probe 0.45 from ada on the unit sphere is 0.63 on dlib's
    scale, so it is ada at threshold 0.7 and unknown at 0.6, though still the closest."""
    rng = np.random.default_rng(4)
    ada = unit(rng, 1)[0]
    probe = near(rng, ada, 1, 0.45)
    plain = GalleryIndex()
    plain.add("ada", ada[None], ["a"])
    assert plain.nearest(probe).distances[0, 0] == pytest.approx(0.45, abs=1e-4)
    ada_at_063 = IdentityMatch("ada", pytest.approx(0.63, abs=1e-4))
    for threshold, expected in [(0.7, ada_at_063), (0.6, None)]:
        g = GalleryIndex(GalleryConfig(threshold=threshold, distance_scale=1.4))
        g.add("ada", ada[None], ["a"])
        assert g.nearest(probe).distances[0, 0] == pytest.approx(0.63, abs=1e-4)
        assert g.search(probe) == [expected]
        # The nearest face beyond the threshold is still given, as a look-alike only.
        [closest] = g.closest(probe)
        assert closest == IdentityMatch("ada", pytest.approx(0.63, abs=1e-4), lookalike=expected is None)
        assert closest.similarity == pytest.approx(1 - 0.63 / 1.4, abs=1e-4)
    with pytest.raises(ValueError, match="distance_scale"):
        GalleryConfig(distance_scale=0.0)


def test_rejects_bad_input() -> None:
    g = GalleryIndex()
    with pytest.raises(ValueError):
        g.add("x", np.zeros((1, DIM)), ["a"])
    with pytest.raises(ValueError):
        g.add("x", np.ones((2, 64)), ["a", "b"])
    with pytest.raises(ValueError):
        g.add("x", np.ones((2, DIM)), ["a"])
    with pytest.raises(KeyError):
        g.remove("nobody")


def test_hnsw_migration_keeps_every_entry(tmp_path) -> None:
    rng = np.random.default_rng(5)
    cfg = GalleryConfig(hnsw_above=50, hnsw_m=8, hnsw_ef_construction=40, hnsw_ef_search=40)
    g = GalleryIndex(cfg)
    batches = {f"p{i}": unit(rng, 4) for i in range(20)}
    for name, vecs in batches.items():
        if len(g) == 48:
            before = g._index.reconstruct_n(0, 48)
        g.add(name, vecs, [f"{name}-{j}" for j in range(4)])
    assert g.kind == "hnsw" and len(g) == 80
    every = np.concatenate(list(batches.values()))
    # Vectors survive migration bit-exactly: the HNSW storage holds the raw floats.
    assert np.array_equal(g._index.reconstruct_n(0, 48), before)
    assert [m.name for m in g.search(every)] == [n for n in batches for _ in range(4)]
    assert [g.entry(r).source for r in range(80)] == [f"{n}-{j}" for n in batches for j in range(4)]
    g.set_ef_search(60)
    assert g._index.hnsw.efSearch == 60 and g.config.hnsw_ef_search == 60
    g.save(tmp_path)
    again = GalleryIndex.load(tmp_path, cfg)
    assert again.kind == "hnsw"
    assert [m.name for m in again.search(every)] == [m.name for m in g.search(every)]
    # Shrinking below the threshold rebuilds exact.
    for name in list(batches)[:10]:
        g.remove(name)
    assert g.kind == "flat" and len(g) == 40
    kept = [n for n in list(batches)[10:] for _ in range(4)]
    assert [m.name for m in g.search(every[40:])] == kept


def test_remove_and_watch_persist_across_reload(tmp_path) -> None:
    g, centres = three_people()
    g.set_watch("cy", True)
    assert g.remove("ada") == 3
    g.save(tmp_path)
    loaded = GalleryIndex.load(tmp_path)
    assert loaded.names() == ["bob", "cy"] and len(loaded) == 6
    assert [(p.name, p.embeddings, p.watch) for p in loaded.people()] == [
        ("bob", 3, False),
        ("cy", 3, True),
    ]
    assert loaded.search(centres["ada"][None]) == [None]
    found = loaded.search(np.stack([centres["cy"], centres["bob"]]))
    assert [m.name for m in found] == ["cy", "bob"]
    loaded.set_watch("cy", False)
    loaded.add("dee", unit(np.random.default_rng(6), 2), ["d1", "d2"])
    loaded.save(tmp_path)
    final = GalleryIndex.load(tmp_path)
    assert not final.is_watched("cy") and final.names() == ["bob", "cy", "dee"]
    expected = [MANIFEST, "index-000002.faiss", "meta-000002.msgpack"]
    assert sorted(os.listdir(tmp_path)) == sorted(expected)


def test_missing_gallery(tmp_path) -> None:
    with pytest.raises(GalleryError, match="missing"):
        GalleryIndex.load(tmp_path)
    assert len(GalleryIndex.load(tmp_path / "new", missing_ok=True)) == 0


def test_files_are_private(tmp_path) -> None:
    g, _ = three_people()
    old = os.umask(0o022)
    try:
        g.save(tmp_path / "gal")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "gal").st_mode) == 0o700
    for name in os.listdir(tmp_path / "gal"):
        assert stat.S_IMODE(os.stat(tmp_path / "gal" / name).st_mode) == 0o600, name


def _data_file(directory, prefix: str):
    (name,) = [n for n in os.listdir(directory) if n.startswith(prefix)]
    return directory / name


@pytest.mark.parametrize("prefix", ["index-", "meta-", MANIFEST])
def test_truncated_file_is_a_clear_error(tmp_path, prefix: str) -> None:
    g, _ = three_people()
    g.save(tmp_path)
    path = _data_file(tmp_path, prefix)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GalleryError, match=path.name):
        GalleryIndex.load(tmp_path)


@pytest.mark.parametrize("prefix", ["index-", "meta-"])
def test_corrupt_file_same_length_is_a_clear_error(tmp_path, prefix: str) -> None:
    g, _ = three_people()
    g.save(tmp_path)
    path = _data_file(tmp_path, prefix)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(GalleryError, match=rf"{path.name}: corrupt"):
        GalleryIndex.load(tmp_path)


def test_wrong_dimension_is_a_clear_error(tmp_path) -> None:
    g, _ = three_people()
    g.save(tmp_path)
    with pytest.raises(GalleryError, match="128-D, configured for 64-D"):
        GalleryIndex.load(tmp_path, GalleryConfig(dim=64))


class Died(Exception):
    pass


@pytest.mark.parametrize("survives", [0, 1, 2])
def test_writer_dying_mid_save_leaves_old_state(tmp_path, monkeypatch, survives: int) -> None:
    """The writer dies after `survives` of its three file writes (index, metadata, manifest)."""
    g, centres = three_people()
    g.save(tmp_path)
    g.remove("bob")
    g.set_watch("ada", True)
    real = gallery_mod._write_atomic
    calls = []

    def dying(*args, **kwargs):
        if len(calls) == survives:
            raise Died
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(gallery_mod, "_write_atomic", dying)
    with pytest.raises(Died):
        g.save(tmp_path)
    monkeypatch.undo()
    old = GalleryIndex.load(tmp_path)
    assert old.names() == ["ada", "bob", "cy"] and not old.is_watched("ada")
    assert old.search(centres["bob"][None])[0].name == "bob"
    # The next save commits over the debris and clears it.
    g.save(tmp_path)
    assert GalleryIndex.load(tmp_path).names() == ["ada", "cy"]
    assert len(os.listdir(tmp_path)) == 3


def test_dying_inside_a_write_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    g, _ = three_people()
    g.save(tmp_path)
    before = sorted(os.listdir(tmp_path))

    def no_replace(src, dst):
        raise Died

    monkeypatch.setattr(gallery_mod.os, "replace", no_replace)
    with pytest.raises(Died):
        g.save(tmp_path)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == before
    assert len(GalleryIndex.load(tmp_path)) == 9


def test_dying_after_commit_gives_new_state(tmp_path, monkeypatch) -> None:
    g, _ = three_people()
    g.save(tmp_path)
    g.remove("cy")
    monkeypatch.setattr(gallery_mod, "_remove_stale", lambda directory, keep: None)
    g.save(tmp_path)
    assert GalleryIndex.load(tmp_path).names() == ["ada", "bob"]


def test_add_many_mixes_new_and_known_people(tmp_path) -> None:
    g, centres = three_people()
    rng = np.random.default_rng(7)
    vecs = np.concatenate([near(rng, centres["bob"], 2, 0.3), unit(rng, 1)])
    g.add_many(["bob", "bob", "eve"], vecs, ["b3", "b4", "e0"], enrolled=5.0)
    counts = [(p.name, p.embeddings) for p in g.people()]
    assert counts == [("ada", 3), ("bob", 5), ("cy", 3), ("eve", 1)]
    g.save(tmp_path)
    loaded = GalleryIndex.load(tmp_path)
    assert loaded.search(vecs[2:])[0].name == "eve"
    assert loaded.entry(len(loaded) - 1).enrolled == 5.0


def thumbs(n: int, seed: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    side = gallery_mod.THUMBNAIL_SIZE
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)]


def test_keys_keep_each_embedding_once() -> None:
    g, centres = three_people()
    key = gallery_mod.content_key(b"the same photo")
    g.add("dee", centres["ada"][None], ["d.jpg"], keys=[key])
    assert g.holder(key) == "dee" and g.holder(gallery_mod.content_key(b"other")) is None
    with pytest.raises(ValueError, match="already in the gallery"):
        g.add("ed", centres["bob"][None], ["e.jpg"], keys=[key])
    # Without keys, a row is keyed by its embedding: the same vector twice is the same fact.
    with pytest.raises(ValueError, match="already in the gallery"):
        g.add("ed", g._index.reconstruct(0)[None], ["again.jpg"])
    assert len(g) == 10 and "ed" not in g


def test_thumbnails_persist_private_and_checked(tmp_path) -> None:
    g, centres = three_people()
    pictures = thumbs(2)
    keys = [gallery_mod.content_key(bytes([i])) for i in range(2)]
    rng = np.random.default_rng(9)
    g.add("dee", near(rng, centres["cy"], 2, 0.9), ["d1.jpg", "d2.jpg"], keys=keys, thumbnails=pictures)
    g.save(tmp_path)
    names = sorted(n for n in os.listdir(tmp_path) if n.startswith("thumb-"))
    assert names == sorted(f"thumb-{g._thumb_sha[k]}.png" for k in keys)
    assert all(stat.S_IMODE(os.stat(tmp_path / n).st_mode) == 0o600 for n in names)
    loaded = GalleryIndex.load(tmp_path)
    assert all(np.array_equal(t, p) for t, p in zip(loaded.export().thumbnails[9:], pictures))
    assert loaded.export().thumbnails[:9] == (None,) * 9
    # The nearest face carries its row's thumbnail, also beyond the threshold.
    [match] = loaded.closest(loaded._index.reconstruct(9)[None])
    assert match.name == "dee" and np.array_equal(match.thumbnail, pictures[0])
    # Saving again writes no thumbnail anew; removing the person deletes theirs at the next save.
    before = {n: os.stat(tmp_path / n).st_mtime_ns for n in names}
    loaded.save(tmp_path)
    assert {n: os.stat(tmp_path / n).st_mtime_ns for n in names} == before
    loaded.remove("dee")
    loaded.save(tmp_path)
    assert not [n for n in os.listdir(tmp_path) if n.startswith("thumb-")]
    # A damaged thumbnail is an error, never a wrong picture.
    g.save(tmp_path)
    path = tmp_path / names[0]
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(GalleryError, match=rf"{path.name}: corrupt"):
        GalleryIndex.load(tmp_path)


def test_meta_written_before_keys_still_loads(tmp_path, monkeypatch) -> None:
    g, centres = three_people()
    real = GalleryIndex._meta_document

    def without_keys(self):
        doc = real(self)
        del doc["rows"]["key"], doc["rows"]["thumb"]
        return doc

    monkeypatch.setattr(GalleryIndex, "_meta_document", without_keys)
    g.save(tmp_path)
    monkeypatch.undo()
    loaded = GalleryIndex.load(tmp_path)
    assert [m.name for m in loaded.search(np.stack(list(centres.values())))] == ["ada", "bob", "cy"]
    assert loaded._row_key == g._row_key  # keyed by their embeddings, as when they were added


def test_append_writes_only_the_new_rows(tmp_path) -> None:
    g, centres = three_people()
    g.save(tmp_path)
    data = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    rng = np.random.default_rng(10)
    for i in range(3):
        g.add(f"unknown-{i + 1}", unit(rng, 2), ["cam#track=1"] * 2, enrolled=50.0 + i)
        g.append(tmp_path)
    # The generation's files are untouched; the rows went to its journal, private like the rest.
    assert {n: (tmp_path / n).read_bytes() for n in data} == data
    journal = tmp_path / "journal-000001.msgpack"
    assert sorted(os.listdir(tmp_path)) == sorted([*data, journal.name])
    assert stat.S_IMODE(os.stat(journal).st_mode) == 0o600
    loaded = GalleryIndex.load(tmp_path)
    assert loaded.names() == g.names() and len(loaded) == 15
    assert np.array_equal(loaded._stored_vectors(), g._stored_vectors())
    assert loaded._row_key == g._row_key and loaded.entry(14).enrolled == 52.0
    # A record cut short by a crash was never acknowledged: it is ignored, then written over.
    whole = journal.read_bytes()
    journal.write_bytes(whole + whole[: len(whole) // 5])
    torn = GalleryIndex.load(tmp_path)
    assert len(torn) == 15
    torn.add("unknown-4", unit(rng, 1), ["cam#track=9"])
    torn.append(tmp_path)
    assert GalleryIndex.load(tmp_path).names()[-1] == "unknown-4"
    # A complete record that does not match its checksum is damage.
    damaged = bytearray(journal.read_bytes())
    damaged[40] ^= 0xFF
    journal.write_bytes(bytes(damaged))
    with pytest.raises(GalleryError, match=journal.name):
        GalleryIndex.load(tmp_path)


def test_append_folds_into_a_save_when_the_journal_cannot_say_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(gallery_mod, "JOURNAL_ROWS", 4)
    g, _ = three_people()
    g.append(tmp_path)  # nothing there yet: a full save
    assert sorted(os.listdir(tmp_path)) == sorted([MANIFEST, "index-000001.faiss", "meta-000001.msgpack"])
    rng = np.random.default_rng(11)
    g.add("a", unit(rng, 3), ["x"] * 3)
    g.append(tmp_path)
    assert "journal-000001.msgpack" in os.listdir(tmp_path)
    g.add("b", unit(rng, 2), ["y"] * 2)  # the journal would hold 5 rows: a save instead
    g.append(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted([MANIFEST, "index-000002.faiss", "meta-000002.msgpack"])
    g.set_watch("a", True)  # a journal records rows only
    g.add("c", unit(rng, 1), ["z"])
    g.append(tmp_path)
    loaded = GalleryIndex.load(tmp_path)
    assert loaded.is_watched("a") and len(loaded) == 15 and "journal-000003.msgpack" not in os.listdir(tmp_path)
