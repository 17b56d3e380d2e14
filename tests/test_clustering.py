import json
import os
import re
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import silhouette_score

from core import clustering as C
from core.clustering import FaceAttributes
from core.events import frame_event
from tests.conftest import GALLERY, PHOTOS

ROOT = Path(__file__).resolve().parent.parent
DLIB_SCALE = 1.4


def blobs(sizes, dim=128, spread=0.03, seed=0):
    """Unit vectors around well-separated random centres, and their true labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres, sizes, axis=0) + rng.normal(scale=spread, size=(sum(sizes), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


def people(n_people, n_faces, seed=0):
    """Synthetic identity embeddings laid out as dlib's are (x1.4): one person's faces ~0.4 apart,
    two people's ~0.9, all people sharing a common direction as real faces do."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=128)
    own = rng.normal(size=(n_people, 128))
    centres = common / np.linalg.norm(common) + 0.47 * own / np.linalg.norm(own, axis=1, keepdims=True)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    who = rng.integers(0, n_people, n_faces)
    x = centres[who] + rng.normal(scale=0.018, size=(n_faces, 128))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), who


def same_partition(a, b) -> bool:
    """Equal up to renaming the clusters."""
    pairs = set(zip(np.asarray(a).tolist(), np.asarray(b).tolist()))
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def test_silhouette_is_sklearns_and_samples_large_sets():
    x, truth = blobs([10, 12, 8])
    assert C.silhouette(x, truth) == pytest.approx(silhouette_score(x, truth))
    assert C.silhouette(x, np.zeros(30, int)) is None
    assert C.silhouette(x, np.arange(30)) is None
    big, labels = blobs([3000, 2000])
    # a 2,000-face sample gives the full score within a few hundredths
    assert C.silhouette(big, labels) == pytest.approx(silhouette_score(big[::5], labels[::5]), abs=0.03)


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


def test_identity_separates_people_at_the_threshold_on_the_models_scale():
    x, who = people(6, 60, seed=3)
    result = C.identity(x, threshold=0.55, scale=DLIB_SCALE)
    assert result.method == "identity" and result.param == 0.55 and result.tried == ()
    assert same_partition(result.labels, who)
    assert len(result.members(0)) == np.bincount(who).max()  # cluster 0 is the largest
    # the threshold is read on the model's scale: the same cut on unit vectors is 1.4x smaller
    assert same_partition(C.identity(x, threshold=0.55 / DLIB_SCALE, scale=1.0).labels, who)
    # below one person's own spread (~0.4 on dlib's scale) people fall apart
    assert C.identity(x, threshold=0.3, scale=DLIB_SCALE).n_clusters > 6


def test_identity_does_not_chain_two_people_through_close_pairs():
    # on a line, unit scale: two tight groups and two faces between them, each 0.5 from the next;
    # single linkage at 0.6 chains all into one, the groups' average distance keeps them apart
    points = np.array([[0.0], [0.1], [0.2], [0.3], [0.8], [1.3], [1.8], [1.9], [2.0], [2.1]])
    single = AgglomerativeClustering(n_clusters=None, distance_threshold=0.6, linkage="single")
    assert len(set(single.fit_predict(points))) == 1
    labels = C.identity(points, threshold=0.6).labels
    assert len(set(labels[:4])) == 1 and len(set(labels[6:])) == 1 and labels[0] != labels[9]


def test_identity_above_the_exact_limit_finds_the_same_people():
    x, who = people(41, 3000, seed=4)
    # person 40 keeps two faces: a 300-face sample likely misses them, and a later round must find them
    keep = np.concatenate([np.flatnonzero(who != 40), np.flatnonzero(who == 40)[:2]])
    x, who = x[keep], who[keep]
    assert same_partition(C.identity(x, threshold=0.55, scale=DLIB_SCALE).labels, who)
    assert same_partition(C.identity(x, threshold=0.55, scale=DLIB_SCALE, exact_limit=300).labels, who)


def test_agreement_scores_purity_completeness_and_ari():
    names = ["a", "a", "a", "b", "b", None]
    perfect = C.agreement(np.array([1, 1, 1, 0, 0, 0]), names)
    assert (perfect.faces, perfect.people, perfect.purity, perfect.ari) == (5, 2, 1.0, 1.0)
    assert perfect.completeness == pytest.approx(1.0)
    split = C.agreement(np.array([0, 0, 1, 2, 2, 3]), names)
    assert split.purity == 1.0 and split.completeness < 1 and split.ari < 1
    merged = C.agreement(np.zeros(6, int), names)
    assert merged.purity == pytest.approx(3 / 5) and merged.ari == pytest.approx(0.0)
    assert C.agreement(np.zeros(2, int), [None, None]) is None


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


# Who the shared gallery and photos show: 19 faces, 7 people counting the stranger in messi5.jpg.
# A person folder names the gallery's images; a list names a photo's faces from left to right.
TRUTH = {"gallery/alex_lacamoire": "alex_lacamoire", "gallery/biden": "biden", "gallery/kit_harington": "kit_harington",
         "gallery/lin_manuel_miranda": "lin_manuel_miranda", "gallery/obama": "obama",
         "gallery/rose_leslie": "<b>rose</b>", "32bit.png": "obama", "obama.jpg": "obama", "obama2.jpg": "obama",
         "obama3.jpg": "obama", "obama_partial_face.jpg": "obama", "obama_partial_face2.jpg": "obama",
         "biden.jpg": "biden", "two_people.jpg": ["obama", "biden"], "messi5.jpg": "stranger"}


@pytest.fixture(scope="module")
def analyze_out(tmp_path_factory):
    from launch import analyze

    out = tmp_path_factory.mktemp("analyze")
    # records are named relative to their input folder: gallery/biden/img1 -> biden/img1.json and
    # photos/biden.jpg -> biden.json do not collide
    assert analyze.main([str(GALLERY), str(PHOTOS), "--out", str(out), "--no-images", "--threads", "2"]) == 0
    return out


def test_cli_clusters_are_people_on_the_shared_media(analyze_out, tmp_path, capsys):
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(TRUTH))
    report = tmp_path / "report"
    code, out, err = run_cluster([analyze_out, "--out", report, "--truth", truth, "--method", "both",
                                  "--threads", "2"], capsys)
    assert code == 0, err
    assert re.search(r"identity: threshold=0.55 silhouette=0\.\d+, 7 cluster\(s\); against 7 names: "
                     r"purity 1\.000, completeness 1\.000, ARI 1\.000", out), out
    assert re.search(r"kmeans: k=\d+ silhouette=0\.\d+", out)
    summary = json.loads((report / "clusters.json").read_text())
    assert len(summary["faces"]) == 19 and all(f["name"] for f in summary["faces"])
    identity = summary["methods"]["identity"]
    assert identity["agreement"] == {"faces": 19, "people": 7, "purity": 1.0, "completeness": 1.0, "ari": 1.0}
    by_name = {}
    for face, label in zip(summary["faces"], identity["labels"]):
        by_name.setdefault(face["name"], set()).add(label)
    assert all(len(labels) == 1 for labels in by_name.values()) and len(set.union(*by_name.values())) == 7
    page = (report / "index.html").read_text()
    assert "adjusted Rand index" in page and "&lt;b&gt;rose&lt;/b&gt;" in page and "<b>rose" not in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert {"identity-c0-mean.png", "identity-c0-eigen1.png", "identity-c0-attributes.png",
            "kmeans-silhouette.png"} <= set(images)
    for name in images:
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_clusters_many_embeddings_in_bounded_memory(tmp_path):
    """20,000 faces: exact average linkage would hold 1.6 GB of pairwise distances (condensed,
    float64); the sampled rounds stay far below that."""
    x, who = people(60, 20_000, seed=7)
    data = tmp_path / "faces.npz"
    np.savez(data, embeddings=x * 1.4, names=np.array([f"p{w}" for w in who]))
    report = tmp_path / "report"
    # VmHWM, not getrusage: Linux carries ru_maxrss over fork and exec, so a child of this
    # test process (TensorFlow loaded) would report the parent's peak
    measure = ("import re, runpy, sys\n"
               "sys.argv = sys.argv[1:]\n"
               "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
               "finally:\n    status = open('/proc/self/status').read()\n"
               "    print('maxrss_kb=' + re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr)\n")
    run = subprocess.run([sys.executable, "-c", measure, str(ROOT / "launch" / "cluster.py"), str(data),
                          "--out", str(report)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert "identity: threshold=0.55" in run.stdout and "purity 1.000" in run.stdout and "ARI 1.000" in run.stdout
    peak_mb = int(re.search(r"maxrss_kb=(\d+)", run.stderr).group(1)) / 1024
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB"
    summary = json.loads((report / "clusters.json").read_text())
    assert len(summary["methods"]["identity"]["labels"]) == 20_000
    assert summary["methods"]["identity"]["clusters"] == 60
    assert "(--show)" in (report / "index.html").read_text()  # 30 of the 60 clusters detailed


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
    bad = tmp_path / "bad.npz"
    np.savez(bad, vectors=np.ones((4, 3)))
    code, _, err = run_cluster([bad, "--out", tmp_path / "r"], capsys)
    assert code == 2 and "`embeddings`" in err
    code, _, err = run_cluster([bad, "--truth", tmp_path / "t.json", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "carries its own `names`" in err
