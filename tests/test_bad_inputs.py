"""The bad input corpus at the command line: what a user gets from analyze.py, demo.py and
gallery.py when handed broken photos and videos, a broken config, a missing file or a dead URL.
Each bad item must give one clear line naming it, the good items must still be done, and the
exit status must say what happened (0 all good, 1 some inputs failed, 2 could not run).
core.media's own handling of each file is in test_media.py; this is what reaches the user."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.config import load_config
from core.gallery import GalleryIndex
from launch.demo import main as demo
from launch.gallery import main as gallery_cli
from tests.conftest import GALLERY, PHOTOS, VIDEO, iou
from tests.test_media import mp4_faststart, png_bytes

ROOT = Path(__file__).resolve().parent.parent
OBAMA_BOX = [374, 107, 602, 417]  # obama.jpg's face, as test_analyze_cli.py has it
DEAD_URL = "http://127.0.0.1:9/nothing.mjpg"  # the discard port on loopback: refused at once


def stderr_lines(err: str) -> list[str]:
    # tqdm redraws its bar with carriage returns; every message line stands on its own.
    return [line for line in re.split(r"[\r\n]+", err) if line.strip()]


def error_lines(err: str, prefix: str = "error: ") -> list[str]:
    return [line for line in stderr_lines(err) if line.startswith(prefix)]


def assert_one_line_each(lines: list[str], expected: dict[str, str]) -> None:
    """Exactly one line per item, naming it and its problem, and no other such line."""
    for item, problem in expected.items():
        naming = [line for line in lines if item in line]
        assert len(naming) == 1 and problem in naming[0], (item, problem, lines)
    assert len(lines) == len(expected), lines


# ---- analyze.py: a folder mixing good photos with the corpus --------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """good/ holds photos that must be analysed, in every pixel format that reaches a user;
    bad/ holds files that must each fail with their own reason; two cut videos sit beside."""
    root = tmp_path_factory.mktemp("corpus")
    good, bad = root / "photos" / "good", root / "photos" / "bad"
    good.mkdir(parents=True)
    bad.mkdir()
    shutil.copy(PHOTOS / "obama.jpg", good / "obama.jpg")
    shutil.copy(PHOTOS / "two_people.jpg", good / "two_people.jpg")
    bgr = cv2.imread(str(PHOTOS / "obama.jpg"))
    cv2.imwrite(str(good / "obama16.png"), bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(good / "obama_gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(good / "obama_alpha.png"), np.dstack([bgr, np.full(bgr.shape[:2], 128, np.uint8)]))
    jpeg = (PHOTOS / "biden.jpg").read_bytes()
    (bad / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.jpg").write_text("this is not a picture\n")
    # A real PNG header claiming 12000x12000: refused from the header, never decoded.
    (bad / "huge.png").write_bytes(png_bytes(12000, 12000, 2, zlib.compress(b"\x00" * 64)))
    mp4 = (VIDEO / "crossing_faces.mp4").read_bytes()
    (root / "no_index.mp4").write_bytes(mp4[: len(mp4) // 2])
    faststart = mp4_faststart(mp4)
    (root / "cut_mid.mp4").write_bytes(faststart[: len(faststart) // 2])
    return root


@pytest.fixture(scope="module")
def analyzed(corpus, tmp_path_factory):
    """One run of the real command, in its own process: the stderr and exit status a user sees."""
    out = tmp_path_factory.mktemp("analyzed")
    done = subprocess.run(
        [sys.executable, "launch/analyze.py", str(corpus / "photos"), str(corpus / "no_index.mp4"),
         str(corpus / "cut_mid.mp4"), str(corpus / "absent.jpg"), "--out", str(out), "--every", "50",
         "--threads", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stderr, out


def test_analyze_names_each_bad_item_once(analyzed):
    status, err, _ = analyzed
    assert status == 1, err
    assert "Traceback" not in err
    assert_one_line_each(error_lines(err), {
        "cut.jpg": "truncated JPEG",
        "empty.jpg": "empty file (0 bytes)",
        "notes.jpg": "not an image (unknown file format)",
        "huge.png": "image too large: 12000x12000",
        "no_index.mp4": "truncated video (no 'moov' index box",
        "cut_mid.mp4": "video ends early",
        "absent.jpg": "no such file",
    })


def test_analyze_summary_lists_exactly_the_failures(analyzed):
    _, _, out = analyzed
    summary = json.loads((out / "summary.json").read_text())
    failed = {Path(f["source"]).name for f in summary["failures"]}
    assert failed == {"cut.jpg", "empty.jpg", "notes.jpg", "huge.png", "no_index.mp4", "cut_mid.mp4",
                      "absent.jpg"}
    assert summary["failed"] == len(summary["failures"]) == 7
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.json")} - {"summary.json"}
    frames = {p for p in written if p.startswith("cut_mid/")}
    assert frames and {p for p in written - frames} == {
        f"good/{name}.json" for name in ("obama", "two_people", "obama16", "obama_gray", "obama_alpha")}
    assert summary["images"] == 5 + len(frames)


@pytest.mark.parametrize("name", ["obama", "obama16", "obama_gray", "obama_alpha"])
def test_analyze_finds_the_face_in_every_pixel_format(analyzed, name):
    _, _, out = analyzed
    record = json.loads((out / "good" / f"{name}.json").read_text())
    assert (record["width"], record["height"]) == (910, 1137)
    [face] = record["faces"]
    assert iou(face["box"], OBAMA_BOX) >= 0.7
    assert face["age"] is not None and face["gender"] and face["expression"]
    assert (out / "good" / f"{name}.annotated.jpg").stat().st_size > 10_000


def test_analyze_goes_on_with_the_frames_before_a_cut(analyzed):
    _, _, out = analyzed
    frames = sorted((out / "cut_mid").glob("*.json"))
    assert [f.stem for f in frames][:2] == ["000000", "000050"]
    assert any(json.loads(f.read_text())["faces"] for f in frames)


# ---- demo.py: config and sources ---------------------------------------------------------------


class RayStarted(Exception):
    pass


@pytest.fixture
def no_ray(monkeypatch):
    """A config error must stop demo.py before it joins or starts Ray."""

    def refuse(*args, **kwargs):
        raise RayStarted("demo.py went on to connect to Ray")

    monkeypatch.setattr("actors.cluster.connect", refuse)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_demo_malformed_toml(tmp_path, capsys, no_ray):
    path = write_config(tmp_path, 'mode = "live\n[tracker\n')
    assert demo(["--config", str(path), "--out", str(tmp_path / "out")]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert str(path) in line and "cannot read config" in line and "line 1" in line


def test_demo_missing_config(tmp_path, capsys, no_ray):
    path = tmp_path / "absent.toml"
    assert demo(["--config", str(path)]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert str(path) in line and "No such file" in line


@pytest.mark.parametrize("text, key", [
    ("mode = \"live\"\nbogus_key = 3\n", "bogus_key"),
    ("[tracker]\ncoast_sec = 1.0\n", "coast_sec"),
    ("[pools.detection]\ncuont = 2\n", "cuont"),
])
def test_demo_unknown_config_key(tmp_path, capsys, no_ray, text, key):
    path = write_config(tmp_path, text)
    assert demo(["--config", str(path)]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert str(path) in line and repr(key) in line and "unknown key" in line


def test_demo_config_pool_table_loads(tmp_path):
    config = load_config(write_config(tmp_path, "[pools.detection]\ncount = 2\nnum_cpus = 0.25\n"))
    assert (config.pool("detection").count, config.pool("detection").num_cpus) == (2, 0.25)


def test_demo_video_flag_overrides_the_config(tmp_path):
    from launch.demo import build_config, parse_args

    clip = str(VIDEO / "crossing_faces.mp4")
    off = write_config(tmp_path, "video = false\n")
    assert build_config(parse_args(["--source", clip])).video is True
    assert build_config(parse_args(["--source", clip, "--no-video"])).video is False
    assert build_config(parse_args(["--source", clip, "--config", str(off)])).video is False
    assert build_config(parse_args(["--source", clip, "--config", str(off), "--video"])).video is True


@pytest.mark.parametrize("text, key", [
    ('max_in_flight = "six"\n', "max_in_flight"),
    ("pools = 3\n", "pools"),
    ('duration = "long"\n', "duration"),
    ("tracker = 5\n", "tracker"),
    ('mode = "sometimes"\n', "mode"),
])
def test_demo_config_value_of_wrong_type(tmp_path, capsys, no_ray, text, key):
    path = write_config(tmp_path, text)
    assert demo(["--config", str(path)]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert str(path) in line and key in line


def demo_with_timeout(argv: list[str], seconds: float) -> int:
    """demo.py's main in a thread, so a hang fails the test instead of stalling the suite."""
    outcome: dict = {}

    def target():
        try:
            outcome["status"] = demo(argv)
        except BaseException as error:  # re-raised in the test's thread below
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"launch/demo.py {' '.join(argv)} still running after {seconds:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["status"]



def test_demo_missing_source_file(tmp_path, capsys, no_ray):
    missing = tmp_path / "absent.mp4"
    assert demo_with_timeout(["--source", str(missing), "--out", str(tmp_path / "out")], 300) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert str(missing) in line and "no such file" in line


@pytest.mark.ray
@pytest.mark.parametrize("url, shown", [
    (DEAD_URL, DEAD_URL),
    # a camera's credentials cross the capture actor inside the error, and must not be printed
    ("http://admin:secret@127.0.0.1:9/nothing.mjpg?user=admin&pwd=secret",
     "http://***@127.0.0.1:9/nothing.mjpg?user=admin&pwd=***"),
])
def test_demo_unreachable_url_fails_fast(local_ray, tmp_path, capsys, url, shown):
    assert demo_with_timeout(["--source", url, "--out", str(tmp_path / "out")], 300) == 2
    out, err = capsys.readouterr()
    [line] = error_lines(err)
    assert shown in line and "cannot open" in line and "secret" not in out + err


# ---- gallery.py import: a people folder with non-images -----------------------------------------


def test_gallery_import_names_each_bad_file_and_imports_the_rest(tmp_path, capsys):
    people = tmp_path / "people"
    for person in ("obama", "biden"):
        (people / person).mkdir(parents=True)
        shutil.copy(GALLERY / person / "img1.jpg", people / person / "img1.jpg")
    (people / "obama" / "notes.jpg").write_text("this is not a picture\n")
    (people / "obama" / "empty.png").write_bytes(b"")
    jpeg = (GALLERY / "biden" / "img1.jpg").read_bytes()
    (people / "biden" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (people / "biden" / "huge.png").write_bytes(png_bytes(12000, 12000, 2, zlib.compress(b"\x00" * 64)))
    # Walking a folder takes image extensions only (core/media.py iter_image_files): these are
    # not the user's photos and must pass without a word.
    (people / "biden" / "readme.txt").write_text("source: press office\n")
    (people / "biden" / "Thumbs.db").write_bytes(b"\x00" * 64)
    (people / "nobody").mkdir()
    (people / "nobody" / "readme.txt").write_text("nothing here\n")
    directory = tmp_path / "gallery"
    status = gallery_cli(["--gallery", str(directory), "--threads", "2", "import", str(people)])
    captured = capsys.readouterr()
    assert status == 1
    assert_one_line_each(error_lines(captured.err, "skipped: "), {
        "notes.jpg": "not an image (unknown file format)",
        "empty.png": "empty file (0 bytes)",
        "cut.jpg": "truncated JPEG",
        "huge.png": "image too large: 12000x12000",
    })
    assert "enrolled 2 embedding(s) of 2 person(s), skipped 4 image(s)" in captured.out
    people_found = {p.name: p.embeddings for p in GalleryIndex.load(directory).people()}
    assert people_found == {"obama": 1, "biden": 1}
