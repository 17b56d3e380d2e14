"""Batch mode end to end: a folder with good and bad files, a video, the JSON contract."""
import json
import shutil

from launch.analyze import main
from tests.conftest import PHOTOS, VIDEO, iou


def test_folder_with_bad_files_goes_on_and_reports(tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(PHOTOS / "obama.jpg", src / "obama.jpg")
    shutil.copy(PHOTOS / "two_people.jpg", src / "sub" / "two_people.jpg")
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.jpg").write_text("not a picture")
    data = (PHOTOS / "biden.jpg").read_bytes()
    (src / "cut.jpg").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    status = main([str(src), "--out", str(out), "--threads", "2"])
    assert status == 1
    err = capsys.readouterr().err
    for name, problem in [("empty.jpg", "empty file"), ("notes.jpg", "not an image"), ("cut.jpg", "truncated JPEG")]:
        assert any(name in line and problem in line for line in err.splitlines()), (name, err)
    record = json.loads((out / "obama.json").read_text())
    assert record["schema"] == "facelive.image/1"
    assert (record["width"], record["height"]) == (910, 1137)
    [face] = record["faces"]
    assert iou(face["box"], [374, 107, 602, 417]) >= 0.7
    assert len(face["landmarks"]) == 5 and face["gender"] == "male" and face["expression"] == "happy"
    assert set(face["expression_scores"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert face["identity"] is None and 0.5 < face["gender_score"] <= 1
    # test-time views are on by default, and the age comes with the interval its posterior gives
    low, high = face["age_interval"]
    assert low < face["age"] < high and high - low < 40
    assert len(json.loads((out / "sub" / "two_people.json").read_text())["faces"]) == 2
    assert (out / "sub" / "two_people.annotated.jpg").stat().st_size > 10_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 2 and summary["faces"] == 3 and summary["failed"] == 3
    assert {f["source"].rsplit("/", 1)[-1] for f in summary["failures"]} == {"empty.jpg", "notes.jpg", "cut.jpg"}


def test_video_every_n_frames(tmp_path):
    out = tmp_path / "out"
    assert main([str(VIDEO / "crossing_faces.mp4"), "--every", "150", "--out", str(out), "--no-images"]) == 0
    frames = sorted((out / "crossing_faces").glob("*.json"))
    assert [f.stem for f in frames] == ["000000", "000150"]
    truth = {}
    for row in (VIDEO / "crossing_faces.gt.txt").read_text().split():
        f, _, x, y, w, h = (float(v) for v in row.split(",")[:6])
        truth.setdefault(int(f) - 1, []).append([x, y, x + w, y + h])
    for path in frames:
        faces = json.loads(path.read_text())["faces"]
        boxes = truth.get(int(path.stem), [])
        found = sum(any(iou(f["box"], b) >= 0.5 for f in faces) for b in boxes)
        assert found >= len(boxes) - 1, (path.stem, len(faces), len(boxes))
