"""Outputs that show faces or names are owner-only: files 0600, folders 0700, whatever the umask
and also where the path was already there with a wider mode."""
import os
import stat

import cv2
import numpy as np
import pytest

from core.private import open_private, private_dir, write_private
from tests.conftest import PHOTOS


@pytest.fixture
def open_umask():
    """The widest umask, so any mode left to it would show."""
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def modes_under(root) -> dict[str, int]:
    found = {".": mode(root)}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = mode(path)
    return found


def test_new_and_existing_paths_become_owner_only(tmp_path, open_umask):
    created = private_dir(tmp_path / "a" / "b")
    assert mode(tmp_path / "a") == mode(created) == 0o700
    wide = tmp_path / "wide"
    wide.mkdir(mode=0o777)
    (wide / "old.json").write_text("old and much longer")
    os.chmod(wide / "old.json", 0o666)
    write_private(wide / "old.json", "new")
    assert (wide / "old.json").read_text() == "new"
    assert (mode(wide), mode(wide / "old.json")) == (0o700, 0o600)
    write_private(wide / "new" / "x.jpg", b"\xff\xd8")
    assert (mode(wide / "new"), mode(wide / "new" / "x.jpg")) == (0o700, 0o600)


def test_a_symlink_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep")
    (tmp_path / "out.json").symlink_to(target)
    with pytest.raises(OSError):
        write_private(tmp_path / "out.json", "faces")
    assert target.read_text() == "keep"


def test_video_writer_keeps_the_mode_of_the_file_it_is_given(tmp_path, open_umask):
    """How a video sink makes its output owner-only: create the file first, then let OpenCV's
    writer (which opens it with the umask's mode) fill it."""
    path = tmp_path / "out" / "annotated.mp4"
    open_private(path).close()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.full((48, 64, 3), i * 40, np.uint8))
    writer.release()
    assert path.stat().st_size > 1000 and mode(path) == 0o600 and mode(path.parent) == 0o700


def test_analyze_and_cluster_outputs_are_owner_only(tmp_path, capsys):
    from launch import analyze, cluster

    results, report = tmp_path / "results", tmp_path / "report"
    # an earlier run's folders and files, made under a wide umask
    for folder in (results, report):
        folder.mkdir(mode=0o755)
        os.chmod(folder, 0o755)
    for stale in (results / "obama.json", report / "index.html"):
        stale.write_text("{}")
        os.chmod(stale, 0o644)
    inputs = [PHOTOS / "obama.jpg", PHOTOS / "biden.jpg", PHOTOS / "two_people.jpg"]
    assert analyze.main([*map(str, inputs), "--out", str(results), "--threads", "2"]) == 0
    assert cluster.main([str(results), "--out", str(report), "--threads", "2"]) == 0, capsys.readouterr().err
    written = modes_under(results)
    assert {"obama.json", "obama.annotated.jpg", "summary.json"} <= set(written)
    assert "index.html" in modes_under(report) and "clusters.json" in modes_under(report)
    for root in (results, report):
        wrong = {name: oct(m) for name, m in modes_under(root).items()
                 if m != (0o700 if os.path.isdir(root / name) else 0o600)}
        assert not wrong, (root.name, wrong)
