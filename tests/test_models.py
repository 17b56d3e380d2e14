"""Real models on real photos: the outcomes a user checks by eye."""
import numpy as np
import pytest

from tests.conftest import iou


def test_one_face_on_obama_at_the_known_place(analyzer, photo):
    r = analyzer.analyze(photo("obama.jpg"))
    assert len(r.faces) == 1
    assert iou(r.faces.boxes[0], [374, 107, 602, 417]) >= 0.7
    assert r.gender.best(0)[0] == "male"
    assert r.expression.best(0)[0] == "happy"  # he is smiling
    assert 35 <= r.age.ages[0] <= 65


def test_two_people_both_found_and_male(analyzer, photo):
    r = analyzer.analyze(photo("two_people.jpg"))
    assert len(r.faces) == 2
    truth = [[230, 24, 390, 231], [782, 40, 949, 262]]
    for box in truth:
        assert max(iou(b, box) for b in r.faces.boxes) >= 0.6
    assert [r.gender.best(i)[0] for i in range(2)] == ["male", "male"]


def test_small_face_on_messi(analyzer, photo):
    r = analyzer.analyze(photo("messi5.jpg"))
    assert len(r.faces) == 1
    assert iou(r.faces.boxes[0], [225, 92, 257, 135]) >= 0.6
    assert r.gender.best(0)[0] == "male"


def test_same_person_near_other_person_far(analyzer, photo):
    emb = {name: analyzer.analyze(photo(name)).identity.vectors for name in
           ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")}
    for v in emb.values():
        assert v.shape == (1, 128)
        assert abs(np.linalg.norm(v) - 1) < 1e-5
    embedder = analyzer.recognisers["identity"]
    d = lambda a, b: embedder.distance(emb[a][0], emb[b][0])  # noqa: E731
    assert d("obama.jpg", "obama2.jpg") < 0.6
    assert d("obama.jpg", "obama3.jpg") < 0.6
    assert d("obama.jpg", "biden.jpg") > 0.6
    assert d("obama2.jpg", "biden.jpg") > 0.6


@pytest.mark.parametrize("name", ["obama2.jpg", "obama3.jpg", "biden.jpg", "32bit.png"])
def test_gender_male(analyzer, photo, name):
    r = analyzer.analyze(photo(name))
    assert len(r.faces) == 1
    assert r.gender.best(0)[0] == "male"


def test_alpha_png_gives_the_same_face_as_its_jpeg(analyzer, photo):
    a = analyzer.analyze(photo("obama2.jpg"))
    b = analyzer.analyze(photo("32bit.png"))
    assert iou(a.faces.boxes[0], b.faces.boxes[0]) > 0.95
    assert np.linalg.norm(a.identity.vectors[0] - b.identity.vectors[0]) < 0.1


def test_backends_agree_on_boxes(registry, photo):
    from models.detector import FaceDetector
    from models.files import model_path

    image = photo("two_people.jpg")
    path = model_path(registry.get("centerface"))
    ort = FaceDetector(path, "onnxruntime").detect(image)
    cv = FaceDetector(path, "opencv").detect(image)
    np.testing.assert_allclose(ort.boxes, cv.boxes, atol=0.05)


def test_recognisers_take_batches(registry, analyzer, photo):
    faces, crops = analyzer.stage(photo("two_people.jpg"))
    age = analyzer.recognisers["age"]
    one = [age(crops.chips[age.crop.key][i:i + 1]).ages[0] for i in range(2)]
    both = age(crops.chips[age.crop.key]).ages
    np.testing.assert_allclose(both, one, rtol=1e-4)
    assert age(crops.chips[age.crop.key][:0]).ages.shape == (0,)


def test_no_face_in_a_blank_image(analyzer):
    r = analyzer.analyze(np.full((480, 640, 3), 127, np.uint8))
    assert len(r.faces) == 0
    assert r.identity.vectors.shape == (0, 128)
