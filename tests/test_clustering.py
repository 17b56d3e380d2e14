import json
import re

import msgpack
import numpy as np
import pytest

from core import clustering as C
from core.clustering import NOISE, FaceAttributes
from core.events import frame_event
from tests.conftest import GALLERY, PHOTOS


def blobs(sizes, dim=128, spread=0.03, seed=0):
    """Unit vectors around well-separated random centres, and their true labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres, sizes, axis=0) + rng.normal(scale=spread, size=(sum(sizes), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


def same_partition(a, b) -> bool:
    """Equal up to renaming the clusters (noise must stay noise)."""
    a, b = np.asarray(a), np.asarray(b)
    if ((a == NOISE) != (b == NOISE)).any():
        return False
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def test_silhouette_matches_its_definition():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 5))
    labels = rng.integers(0, 3, 30)
    labels[0] = 3  # a singleton scores 0
    d = C.pairwise_distances(x)
    expected = []
    for i in range(30):
        own = (labels == labels[i]) & (np.arange(30) != i)
        if not own.any():
            expected.append(0.0)
            continue
        a = d[i, own].mean()
        b = min(d[i, labels == c].mean() for c in set(labels.tolist()) if c != labels[i])
        expected.append((b - a) / max(a, b))
    assert C.silhouette(d, labels) == pytest.approx(np.mean(expected), abs=1e-5)
    assert C.silhouette(d, np.zeros(30, int)) is None


def test_silhouette_counts_noise_as_zero():
    x, truth = blobs([10, 10])
    d = C.pairwise_distances(x)
    full = C.silhouette(d, truth)
    with_noise = truth.copy()
    with_noise[:5] = NOISE
    # the remaining 15 faces score about as well, the 5 noise faces 0
    assert C.silhouette(d, with_noise) == pytest.approx(full * 15 / 20, rel=0.05)


def test_kmeans_chooses_k_and_labels():
    x, truth = blobs([30, 20, 15, 10])
    result = C.kmeans(x)
    assert result.method == "kmeans" and result.param == 4
    assert same_partition(result.labels, truth)
    assert result.silhouette == max(s for _, s in result.tried if s is not None)
    assert [c for c in range(4) if len(result.members(c))] == [0, 1, 2, 3]
    assert len(result.members(0)) == 30  # cluster 0 is the largest


def test_kmeans_needs_more_faces_than_k():
    with pytest.raises(ValueError, match="more faces than clusters"):
        C.kmeans(np.eye(2, dtype=np.float32))


def test_dbscan_finds_clusters_and_leaves_outliers_as_noise():
    x, truth = blobs([25, 15, 12])
    rng = np.random.default_rng(5)
    outliers = rng.normal(size=(2, 128)).astype(np.float32)
    outliers /= np.linalg.norm(outliers, axis=1, keepdims=True)
    x = np.vstack([x, outliers])
    truth = np.concatenate([truth, [NOISE, NOISE]])
    result = C.dbscan(x, min_samples=3)
    assert result.method == "dbscan" and result.n_clusters == 3 and result.n_noise == 2
    assert same_partition(result.labels, truth)


def test_dbscan_core_border_and_noise():
    # on a line: 0, 1, 2 are core at eps 1.1 with min_samples 3; 3.0 is a border of core 2; 9 is noise
    points = np.array([[0.0], [1.0], [2.0], [3.0], [9.0], [20.0], [20.5], [21.0]])
    labels = C.dbscan_labels(C.pairwise_distances(points), 1.1, 3)
    assert labels.tolist() == [0, 0, 0, 0, NOISE, 1, 1, 1]


def test_face_features_appends_weighted_attributes():
    x, _ = blobs([2, 2])
    attrs = [FaceAttributes(age=30, gender="male", gender_score=0.9, expression="happy")] * 4
    assert C.face_features(x, attrs).shape == (4, 128)
    f = C.face_features(x, attrs, attribute_weight=0.5)
    assert f.shape == (4, 137)
    assert f[0, 128] == pytest.approx(0.45) and f[0, 130 + C.EXPRESSIONS.index("happy")] == pytest.approx(0.5)


def test_attribute_counts_bands_ages_and_skips_unknowns():
    faces = [FaceAttributes(age=8, gender="female", expression="happy"),
             FaceAttributes(age=35.5, gender="male", expression="happy", identity="obama"),
             FaceAttributes(age=71, gender="male"), FaceAttributes()]
    counts = C.attribute_counts(faces)
    assert counts["gender"] == {"male": 2, "female": 1}
    assert counts["expression"] == {"happy": 2}
    assert counts["age"] == {"0-12": 1, "30-39": 1, "60+": 1}
    assert counts["identity"] == {"obama": 1}


def test_mean_face_and_eigenfaces_recover_the_patterns():
    rng = np.random.default_rng(2)
    mean = rng.uniform(50, 200, size=(12, 12))
    p1, p2 = np.zeros((12, 12)), np.zeros((12, 12))
    p1[:6] = 1.0
    p2[:, :6] = 1.0
    p1 -= p1.mean()
    p2 -= p2.mean()
    p2 -= (p2 * p1).sum() / (p1 * p1).sum() * p1
    a, b = rng.normal(scale=20, size=40), rng.normal(scale=5, size=40)
    a -= a.mean()
    b -= b.mean()
    crops = mean + a[:, None, None] * p1 + b[:, None, None] * p2
    eig = C.eigenfaces(crops, 3)
    np.testing.assert_allclose(eig.mean, crops.mean(0))
    np.testing.assert_allclose(C.mean_face(crops), crops.mean(0))
    assert eig.explained[:2].sum() == pytest.approx(1.0)
    first = eig.components[0].ravel()
    assert abs(first @ (p1.ravel() / np.linalg.norm(p1))) > 0.95
    assert C.eigenfaces(crops[:1], 3).components.shape == (0, 12, 12)


def run_cluster(argv, capsys):
    from launch import cluster

    code = cluster.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def analyze_out(tmp_path_factory):
    from launch import analyze

    out = tmp_path_factory.mktemp("analyze")
    # analyze.py names a record by its path relative to the input given, so the inputs here
    # must not share a file name (biden/img1.jpg would overwrite kit_harington/img1.jpg)
    inputs = [*(PHOTOS / name for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "two_people.jpg")),
              GALLERY / "kit_harington"]
    assert analyze.main([*map(str, inputs), "--out", str(out), "--no-images", "--threads", "2"]) == 0
    return out


def test_cli_reports_obama_in_one_cluster_apart_from_biden(analyze_out, tmp_path, capsys):
    report = tmp_path / "report"
    code, out, err = run_cluster([analyze_out, "--out", report, "--threads", "2"], capsys)
    assert code == 0, err
    assert re.search(r"kmeans: k=\d+ silhouette=0\.\d+", out)
    assert re.search(r"dbscan: eps=0\.\d+ silhouette=0\.\d+", out)
    summary = json.loads((report / "clusters.json").read_text())
    names = [f["source"].rsplit("/", 1)[-1] for f in summary["faces"]]
    assert len(names) == 8  # two_people.jpg: obama and biden
    for method in ("kmeans", "dbscan"):
        labels = dict(zip(names, summary["methods"][method]["labels"]))
        obama = {labels["obama.jpg"], labels["obama2.jpg"], labels["obama3.jpg"]}
        assert len(obama) == 1 and NOISE not in obama, (method, labels)
        assert labels["biden.jpg"] not in obama, (method, labels)
        people = {summary["methods"][method]["labels"][i] for i, n in enumerate(names) if n == "two_people.jpg"}
        assert people == obama | {labels["biden.jpg"]}, (method, labels)
    page = (report / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert "kmeans-c0-mean.png" in images and "kmeans-c0-eigen1.png" in images and "<svg" in page
    for name in images:
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_clear(tmp_path, capsys):
    code, _, err = run_cluster([tmp_path / "missing", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "no such file or folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cluster([tmp_path / "empty", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "no JSON records" in err
    events = tmp_path / "events.msgpack"
    face = {"box": [0, 0, 10, 10], "landmarks": [[1, 1]] * 5, "track_id": 1}
    events.write_bytes(msgpack.packb(frame_event("0:clip.mp4", 0, 0.0, [face])))
    code, _, err = run_cluster([events, "--out", tmp_path / "r"], capsys)
    assert code == 2 and "needs --video" in err
    code, _, err = run_cluster([events, "--video", tmp_path / "other.mp4", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "no stream comes from other.mp4" in err and "0:clip.mp4" in err
    code, _, err = run_cluster([events, "--video", tmp_path / "clip.mp4", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "1 face(s) found" in err
    events.write_bytes(msgpack.packb(frame_event("0:clip.mp4", 0, 0.0, [face]))[:-3])
    code, _, err = run_cluster([events, "--video", tmp_path / "clip.mp4", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "events.msgpack" in err
