"""The gallery command and `analyze.py --gallery` on the real gallery and photos: who is who after
an import, what persists across a restart, and damaged galleries failing loudly."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.gallery import MANIFEST, GalleryConfig, GalleryIndex
from launch.analyze import main as analyze
from launch.gallery import main as gallery_cli
from tests.conftest import GALLERY, PHOTOS, iou

ROOT = Path(__file__).resolve().parent.parent
THRESHOLD = GalleryConfig().threshold
LINE = re.compile(
    r"(?P<path>.+) face \d+ \[(?P<box>[\d,]+)\]: "
    r"(?:unknown \(nearest (?P<nearest>\S+) (?P<far>[\d.]+)\)|(?P<name>\S+) (?P<near>[\d.]+))"
)
IMPORTED = {"alex_lacamoire": 2, "biden": 1, "kit_harington": 2, "lin_manuel_miranda": 1, "obama": 1,
            "rose_leslie": 2}


@dataclass(frozen=True)
class Found:
    image: str
    box: list[int]
    name: str | None  # None: unknown
    nearest: str
    distance: float


def run(gallery: Path, *argv: str) -> int:
    return gallery_cli(["--gallery", str(gallery), "--threads", "2", *argv])


def search(gallery: Path, capsys, *argv: str) -> tuple[int, list[Found]]:
    capsys.readouterr()
    status = run(gallery, "search", *argv)
    found = []
    for line in capsys.readouterr().out.splitlines():
        m = LINE.fullmatch(line)
        assert m, line
        known = m["name"] is not None
        found.append(Found(Path(m["path"]).name, [int(v) for v in m["box"].split(",")],
                           m["name"], m["name"] if known else m["nearest"],
                           float(m["near"] if known else m["far"])))
    return status, found


def listed(gallery: Path) -> dict[str, tuple[int, bool]]:
    """`list` in a fresh process: what a restarted program sees on disk."""
    done = subprocess.run([sys.executable, "launch/gallery.py", "--gallery", str(gallery), "list"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    rows = done.stdout.splitlines()
    assert rows[0].split() == ["name", "embeddings", "watch"]
    people = {name: (int(n), watch == "yes") for name, n, watch in (r.split() for r in rows[1:-1])}
    assert rows[-1] == f"{len(people)} people, {sum(n for n, _ in people.values())} embeddings"
    return people


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("imported") / "gallery"
    assert run(directory, "import", str(GALLERY)) == 0
    return directory


@pytest.fixture
def gallery_copy(imported, tmp_path) -> Path:
    return Path(shutil.copytree(imported, tmp_path / "gallery"))


def test_import_then_search_names_the_photos(imported, capsys) -> None:
    assert listed(imported) == {name: (n, False) for name, n in IMPORTED.items()}
    images = ["obama.jpg", "obama3.jpg", "biden.jpg", "two_people.jpg", "messi5.jpg"]
    status, found = search(imported, capsys, *(str(PHOTOS / name) for name in images))
    assert status == 0
    assert [(f.image, f.name) for f in found if f.image != "two_people.jpg"] == [
        ("obama.jpg", "obama"), ("obama3.jpg", "obama"), ("biden.jpg", "biden"), ("messi5.jpg", None)]
    pair = {f.name: f.box for f in found if f.image == "two_people.jpg"}
    assert set(pair) == {"obama", "biden"}
    assert iou(pair["obama"], [230, 24, 390, 231]) > 0.6 and iou(pair["biden"], [782, 40, 949, 262]) > 0.6
    for f in found:
        assert (f.distance <= THRESHOLD) == (f.name is not None), f
    [messi] = [f for f in found if f.image == "messi5.jpg"]
    assert iou(messi.box, [225, 92, 257, 135]) > 0.6


def test_threshold_option(imported, capsys) -> None:
    # At dlib's LFW point 0.6 the blurred 32-px messi5 face passes for alex_lacamoire (0.584):
    # the false accept that the stricter default keeps out.
    status, [messi, obama3] = search(imported, capsys, "--threshold", "0.6",
                                     str(PHOTOS / "messi5.jpg"), str(PHOTOS / "obama3.jpg"))
    assert status == 0 and messi.name == "alex_lacamoire" and obama3.name == "obama"
    _, [obama3] = search(imported, capsys, "--threshold", "0.3", str(PHOTOS / "obama3.jpg"))
    assert obama3.name is None and obama3.nearest == "obama" and obama3.distance > 0.3


def test_remove_and_watch_persist_across_restart(gallery_copy, capsys) -> None:
    assert run(gallery_copy, "watch", "obama") == 0
    assert run(gallery_copy, "watch", "kit_harington") == 0
    assert run(gallery_copy, "remove", "biden") == 0
    assert "removed biden (1 embedding(s))" in capsys.readouterr().out
    after = {name: (n, name in ("obama", "kit_harington")) for name, n in IMPORTED.items() if name != "biden"}
    assert listed(gallery_copy) == after
    _, found = search(gallery_copy, capsys, str(PHOTOS / "two_people.jpg"), str(PHOTOS / "biden.jpg"))
    assert sorted((f.image, f.name or "unknown") for f in found) == [
        ("biden.jpg", "unknown"), ("two_people.jpg", "obama"), ("two_people.jpg", "unknown")]
    assert run(gallery_copy, "unwatch", "kit_harington") == 0
    reloaded = GalleryIndex.load(gallery_copy)
    assert "biden" not in reloaded and reloaded.is_watched("obama")
    assert not reloaded.is_watched("kit_harington")


def test_enrol_reports_each_bad_image_and_goes_on(tmp_path, capsys) -> None:
    people = tmp_path / "people"
    (people / "barack").mkdir(parents=True)
    shutil.copy(PHOTOS / "obama.jpg", people / "barack" / "a.jpg")
    (people / "barack" / "empty.jpg").write_bytes(b"")
    cv2.imwrite(str(people / "barack" / "wall.png"), np.full((200, 300, 3), 128, np.uint8))
    directory = tmp_path / "gallery"
    assert run(directory, "import", str(people)) == 1
    err = capsys.readouterr().err
    for name, problem in [("empty.jpg", "empty file"), ("wall.png", "no face found")]:
        assert any(name in line and problem in line for line in err.splitlines()), (name, err)
    assert run(directory, "enrol", "joe", str(PHOTOS / "biden.jpg"), str(people / "barack" / "wall.png")) == 1
    assert listed(directory) == {"barack": (1, False), "joe": (1, False)}
    _, found = search(directory, capsys, str(PHOTOS / "two_people.jpg"))
    assert sorted(f.name for f in found) == ["barack", "joe"]
    # Nothing to enrol: an error, and the gallery is not touched.
    assert run(directory, "enrol", "nobody", str(people / "barack" / "wall.png")) == 2
    assert "gallery unchanged" in capsys.readouterr().err
    assert run(tmp_path / "new", "enrol", "nobody", str(people / "barack" / "empty.jpg")) == 2
    assert not (tmp_path / "new").exists()
    assert listed(directory) == {"barack": (1, False), "joe": (1, False)}


def test_usage_errors_are_clear(imported, tmp_path, capsys) -> None:
    for command in (["remove", "nobody"], ["watch", "nobody"], ["unwatch", "nobody"]):
        assert run(imported, *command) == 2
        assert "no person named 'nobody'" in capsys.readouterr().err
    for command in (["list"], ["remove", "obama"], ["search", str(PHOTOS / "obama.jpg")]):
        assert run(tmp_path / "absent", *command) == 2
        assert "no gallery there" in capsys.readouterr().err
    (tmp_path / "flat").mkdir()
    shutil.copy(PHOTOS / "obama.jpg", tmp_path / "flat")
    assert run(tmp_path / "g", "import", str(tmp_path / "flat")) == 2
    assert "one sub-folder per person" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(imported, "frobnicate")


@pytest.mark.parametrize("damaged", ["index-", "meta-", MANIFEST])
def test_truncated_gallery_file_is_an_error_never_an_answer(gallery_copy, capsys, damaged) -> None:
    [path] = [p for p in gallery_copy.iterdir() if p.name.startswith(damaged)]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for command in (["search", str(PHOTOS / "obama.jpg")], ["list"], ["watch", "obama"],
                    ["enrol", "joe", str(PHOTOS / "biden.jpg")]):
        assert run(gallery_copy, *command) == 2
        out, err = capsys.readouterr()
        assert out == "", command
        problem = "not a valid gallery manifest" if damaged == MANIFEST else "truncated"
        assert f"{path.name}: {problem}" in err, (command, err)
    assert path.read_bytes() == data[: len(data) // 2]


def test_analyze_fills_identity_from_the_gallery(imported, tmp_path) -> None:
    out = tmp_path / "out"
    images = [str(PHOTOS / name) for name in ("two_people.jpg", "messi5.jpg")]
    argv = [*images, "--gallery", str(imported), "--out", str(out), "--no-images", "--threads", "2"]
    assert analyze(argv) == 0
    pair = json.loads((out / "two_people.json").read_text())["faces"]
    assert sorted(f["identity"]["name"] for f in pair) == ["biden", "obama"]
    for f in pair:
        distance = f["identity"]["distance"]
        assert 0 < distance <= THRESHOLD and distance == round(distance, 3)
    [messi] = json.loads((out / "messi5.json").read_text())["faces"]
    assert messi["identity"] is None
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    assert analyze([images[0], "--gallery", str(damaged), "--out", str(out)]) == 2


def test_importing_again_is_a_no_op_that_says_so(gallery_copy, capsys) -> None:
    files = {p.name: p.read_bytes() for p in gallery_copy.iterdir()}
    capsys.readouterr()
    assert run(gallery_copy, "import", str(GALLERY)) == 0
    out = capsys.readouterr().out
    assert "nothing new: 9 image(s) already in the gallery" in out and "gallery unchanged" in out
    assert {p.name: p.read_bytes() for p in gallery_copy.iterdir()} == files
    # The same photo under another name is the same fact: refused, whoever it was filed under.
    assert run(gallery_copy, "enrol", "barack", str(GALLERY / "obama" / "img1.jpg")) == 0
    assert "already in the gallery" in capsys.readouterr().out
    assert listed(gallery_copy) == {name: (n, False) for name, n in IMPORTED.items()}


def test_list_writes_the_thumbnails_privately(imported, tmp_path, capsys) -> None:
    folder = tmp_path / "thumbs"
    capsys.readouterr()
    assert run(imported, "list", "--thumbnails", str(folder)) == 0
    assert "9 thumbnail(s) written" in capsys.readouterr().out
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert written == sorted(f"{name}/{i}.png" for name, n in IMPORTED.items() for i in range(1, n + 1))
    stored = GalleryIndex.load(imported).export()
    for path in folder.rglob("*.png"):
        assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
        row = [i for i, name in enumerate(stored.names) if name == path.parent.name][int(path.stem) - 1]
        assert np.array_equal(cv2.imread(str(path))[:, :, ::-1], stored.thumbnails[row])
