"""core.media on real photos and video, and on a corpus of bad input made here from them."""
from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.media import MediaError, VideoFrames, is_video, iter_image_files, load_image

MEDIA = Path(__file__).parent / "media"
PHOTOS = MEDIA / "photos"
VIDEO = MEDIA / "video" / "crossing_faces.mp4"


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[..., ::-1])


def reference_rgb(name: str) -> np.ndarray:
    return bgr_to_rgb(cv2.imread(str(PHOTOS / name)))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(width: int, height: int, color_type: int, idat: bytes, palette: bytes = b"") -> bytes:
    """A minimal 8-bit PNG written by hand, for what cv2.imwrite cannot make (palette images) or
    should not have to allocate (a header claiming a huge size)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + (png_chunk(b"PLTE", palette) if palette else b"")
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def jpeg_with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Inserts an APP1 EXIF segment holding only the orientation tag, as phone cameras write."""
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def mp4_faststart(mp4: bytes) -> bytes:
    """Moves the 'moov' index in front of the media data, as streaming-friendly encoders do, and
    shifts the chunk offsets by its size: cut short, such a file still opens and plays until the
    cut."""
    boxes, pos = [], 0
    while pos < len(mp4):
        size = struct.unpack(">I", mp4[pos : pos + 4])[0]
        boxes.append(mp4[pos : pos + size])
        pos += size
    moov = bytearray(next(b for b in boxes if b[4:8] == b"moov"))
    containers = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}

    def shift_offsets(start: int, end: int) -> None:
        while start < end:
            size, kind = struct.unpack(">I4s", moov[start : start + 8])
            if kind in containers:
                shift_offsets(start + 8, start + size)
            elif kind == b"stco":
                count = struct.unpack(">I", moov[start + 12 : start + 16])[0]
                for i in range(count):
                    at = start + 16 + 4 * i
                    offset = struct.unpack(">I", moov[at : at + 4])[0]
                    moov[at : at + 4] = struct.pack(">I", offset + len(moov))
            start += size

    shift_offsets(8, len(moov))
    ftyp = boxes[0]
    rest = [b for b in boxes[1:] if b[4:8] != b"moov"]
    return ftyp + bytes(moov) + b"".join(rest)


def expect_error(path: Path, reason: str, **kwargs) -> MediaError:
    with pytest.raises(MediaError) as caught:
        load_image(path, **kwargs)
    err = caught.value
    assert err.path == str(path)
    assert err.reason == reason
    assert str(err) == f"{path}: {reason}"
    return err


# --- good images -------------------------------------------------------------------------------


def test_jpeg_is_rgb_uint8_contiguous():
    image = load_image(PHOTOS / "obama.jpg")
    assert image.shape == (1137, 910, 3) and image.dtype == np.uint8
    assert image.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(image, reference_rgb("obama.jpg"))
    # RGB, not BGR: in a skin-toned face box red outweighs blue.
    face = image[107:417, 374:602].reshape(-1, 3).mean(axis=0)
    assert face[0] > face[2] + 10


def test_alpha_png_drops_alpha():
    image = load_image(PHOTOS / "32bit.png")
    assert image.shape == (1200, 626, 3) and image.dtype == np.uint8
    # 32bit.png is obama2.jpg saved as RGBA: the same picture, apart from JPEG rounding.
    assert np.abs(image.astype(int) - reference_rgb("obama2.jpg")).mean() < 3


def test_transparent_pixels_keep_their_stored_colour(tmp_path):
    bgra = np.zeros((8, 10, 4), np.uint8)
    bgra[..., :3] = (30, 60, 200)
    bgra[:, :5, 3] = 0
    bgra[:, 5:, 3] = 255
    path = tmp_path / "alpha.png"
    cv2.imwrite(str(path), bgra)
    image = load_image(path)
    assert image.shape == (8, 10, 3)
    assert (image == (200, 60, 30)).all()


def test_16_bit_png_scales_to_8_bit(tmp_path):
    rgb8 = cv2.resize(reference_rgb("obama2.jpg"), (313, 600))
    path = tmp_path / "sixteen.png"
    cv2.imwrite(str(path), bgr_to_rgb(rgb8).astype(np.uint16) * 257)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    image = load_image(path)
    assert image.dtype == np.uint8 and image.shape == (600, 313, 3)
    np.testing.assert_array_equal(image, rgb8)


def test_gray_png_becomes_three_equal_channels(tmp_path):
    gray = cv2.imread(str(PHOTOS / "obama.jpg"), cv2.IMREAD_GRAYSCALE)
    path = tmp_path / "gray.png"
    cv2.imwrite(str(path), gray)
    image = load_image(path)
    assert image.shape == (*gray.shape, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], gray)


def test_palette_png(tmp_path):
    palette = bytes([255, 0, 0, 0, 0, 255])  # index 0 red, index 1 blue
    rows = b"".join(b"\x00" + bytes([0, 1, 1]) for _ in range(2))  # filter byte, then 3 indices
    path = tmp_path / "palette.png"
    path.write_bytes(png_bytes(3, 2, 3, zlib.compress(rows), palette))
    image = load_image(path)
    assert image.shape == (2, 3, 3)
    assert image[:, 0].tolist() == [[255, 0, 0]] * 2
    assert image[:, 1:].reshape(-1, 3).tolist() == [[0, 0, 255]] * 4


@pytest.mark.parametrize(
    "ext, params",
    [
        (".bmp", []),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless: VP8L header
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 90]),  # lossy: VP8 header
        (".tiff", []),  # no header parser: checked after decoding
        (".png", []),
    ],
)
def test_other_formats_and_their_size_limit(tmp_path, ext, params):
    rgb = cv2.resize(reference_rgb("obama2.jpg"), (157, 300))
    path = tmp_path / f"small{ext}"
    assert cv2.imwrite(str(path), bgr_to_rgb(rgb), params)
    image = load_image(path)
    assert image.shape == (300, 157, 3)
    assert np.abs(image.astype(int) - rgb).mean() < 4
    err = expect_error(path, "image too large: 157x300 = 0.0 MP, over the limit of 0.0 MP "
                             "(raise it with --max-pixels)", max_pixels=157 * 300 - 1)
    assert "157x300" in str(err)


def test_exif_orientation_is_applied(tmp_path):
    rgb = cv2.resize(reference_rgb("obama.jpg"), (91, 114))
    jpeg = cv2.imencode(".jpg", bgr_to_rgb(rgb))[1].tobytes()
    path = tmp_path / "phone.jpg"
    path.write_bytes(jpeg_with_exif_orientation(jpeg, 6))  # 6: rotate 90 degrees clockwise
    image = load_image(path)
    assert image.shape == (91, 114, 3)
    upright = bgr_to_rgb(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    np.testing.assert_array_equal(image, np.rot90(upright, -1))


def test_jpeg_with_bytes_after_end_marker_still_loads(tmp_path):
    path = tmp_path / "trailer.jpg"
    path.write_bytes((PHOTOS / "biden.jpg").read_bytes() + b"\x00" * 100 + b"camera maker notes")
    assert load_image(path).shape == reference_rgb("biden.jpg").shape


def test_png_with_data_after_iend_still_loads(tmp_path):
    path = tmp_path / "cropped_screenshot.png"
    path.write_bytes((PHOTOS / "32bit.png").read_bytes() + os.urandom(4096))
    assert load_image(path).shape == (1200, 626, 3)


def test_png_named_jpg_loads_by_content(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes((PHOTOS / "32bit.png").read_bytes())
    assert load_image(path).shape == (1200, 626, 3)


# --- bad images --------------------------------------------------------------------------------


def test_truncated_jpeg(tmp_path):
    data = (PHOTOS / "obama.jpg").read_bytes()
    path = tmp_path / "obama_cut.jpg"
    path.write_bytes(data[: int(len(data) * 0.6)])
    # Plain cv2 would hand back a picture with the lower 40% grey and no error.
    assert cv2.imread(str(path)) is not None
    expect_error(path, "truncated JPEG (no end-of-image marker)")


def test_jpeg_cut_inside_its_header(tmp_path):
    path = tmp_path / "head_only.jpg"
    path.write_bytes((PHOTOS / "obama.jpg").read_bytes()[:100])
    expect_error(path, "truncated JPEG (header incomplete)")


def test_truncated_png(tmp_path):
    data = (PHOTOS / "32bit.png").read_bytes()
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "truncated PNG (no IEND chunk at the end)")


def test_corrupt_png_data(tmp_path):
    path = tmp_path / "garbled.png"
    path.write_bytes(png_bytes(4, 4, 0, b"\x55" * 20))  # IDAT that is not zlib data
    expect_error(path, "corrupt PNG (OpenCV cannot decode it)")


@pytest.mark.parametrize("name", ["empty.jpg", "empty.png", "empty.webp"])
def test_zero_byte_file(tmp_path, name):
    path = tmp_path / name
    path.touch()
    expect_error(path, "empty file (0 bytes)")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: milk, eggs\n")
    expect_error(path, "not an image (unknown file format)")


def test_missing_file_and_folder(tmp_path):
    expect_error(tmp_path / "nowhere.jpg", "no such file")
    expect_error(tmp_path, "is a folder, not a file")


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.jpg"
    path.write_bytes((PHOTOS / "obama.jpg").read_bytes())
    path.chmod(0)
    if os.geteuid() == 0:
        # root reads any file whatever its mode: give it the error the kernel gives everyone else
        import core.media

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(core.media, "open", refuse, raising=False)
    expect_error(path, "permission denied (cannot read the file)")


def test_huge_png_refused_from_header_before_decoding(tmp_path):
    # A valid header claiming 12000x12000 in front of data that is not that image: a loader that
    # decoded first would fail differently (or allocate 432 MB).
    path = tmp_path / "huge.png"
    path.write_bytes(png_bytes(12000, 12000, 2, zlib.compress(b"\x00" * 64)))
    start = time.perf_counter()
    err = expect_error(path, "image too large: 12000x12000 = 144.0 MP, over the limit of 40.0 MP "
                             "(raise it with --max-pixels)")
    assert time.perf_counter() - start < 0.05
    assert "--max-pixels" in str(err)


def test_huge_jpeg_refused_from_header(tmp_path):
    jpeg = bytearray(cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 12000, 12000)
    path = tmp_path / "huge.jpg"
    path.write_bytes(bytes(jpeg))
    expect_error(path, "image too large: 12000x12000 = 144.0 MP, over the limit of 40.0 MP "
                       "(raise it with --max-pixels)")
    expect_error(path, "image too large: 12000x12000 = 144.0 MP, over the limit of 100.0 MP "
                       "(raise it with --max-pixels)", max_pixels=100_000_000)


def test_huge_webp_refused_from_header(tmp_path):
    # VP8X, the extended WebP header that animated and alpha WebPs carry (cv2 never writes it).
    canvas = (12000 - 1).to_bytes(3, "little") * 2
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + canvas
    path = tmp_path / "huge.webp"
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body)
    expect_error(path, "image too large: 12000x12000 = 144.0 MP, over the limit of 40.0 MP "
                       "(raise it with --max-pixels)")


def test_limit_can_be_raised_or_lifted():
    reason = ("image too large: 910x1137 = 1.0 MP, over the limit of 1.0 MP "
              "(raise it with --max-pixels)")
    expect_error(PHOTOS / "obama.jpg", reason, max_pixels=1_000_000)
    assert load_image(PHOTOS / "obama.jpg", max_pixels=910 * 1137).shape == (1137, 910, 3)
    assert load_image(PHOTOS / "obama.jpg", max_pixels=None).shape == (1137, 910, 3)


def test_media_error_survives_pickling():
    # exceptions pickle as type(err)(*err.args): that is how Ray rebuilds it in the driver
    reason = "truncated JPEG (no end-of-image marker)"
    cls, args = MediaError("photos/x.jpg", reason).__reduce__()[:2]
    err = cls(*args)
    assert (err.path, err.reason) == ("photos/x.jpg", reason)
    assert str(err) == "photos/x.jpg: truncated JPEG (no end-of-image marker)"


# --- folders -----------------------------------------------------------------------------------


def test_iter_image_files_walks_folders_for_images_only(tmp_path):
    root = tmp_path / "in"
    (root / "b" / "deep").mkdir(parents=True)
    (root / ".thumbs").mkdir()
    for rel in ["z.png", "a.JPG", "b/c.webp", "b/deep/d.tiff", "b/e.jpeg", "m.bmp", "t.tif"]:
        (root / rel).write_bytes(b"x")
    for rel in ["notes.txt", "clip.mp4", "b/readme.md", "._a.jpg", ".thumbs/a.jpg", "noext"]:
        (root / rel).write_bytes(b"x")
    single = tmp_path / "single.txt"
    single.write_text("given directly")

    got = list(iter_image_files([str(root), str(single), str(tmp_path / "missing.jpg")]))
    expected = ["a.JPG", "b/c.webp", "b/deep/d.tiff", "b/e.jpeg", "m.bmp", "t.tif", "z.png"]
    assert got[: len(expected)] == [(str(root / rel), rel) for rel in expected]
    missing = tmp_path / "missing.jpg"
    assert got[len(expected) :] == [(str(single), "single.txt"), (str(missing), "missing.jpg")]


def test_folder_with_non_images_reports_each_bad_file(tmp_path):
    (tmp_path / "good.jpg").write_bytes((PHOTOS / "messi5.jpg").read_bytes())
    (tmp_path / "bad.png").write_text("not a picture")
    (tmp_path / "skip.txt").write_text("ignored: not an image extension")
    outcomes = {}
    for path, rel in iter_image_files([str(tmp_path)]):
        try:
            outcomes[rel] = load_image(path).shape
        except MediaError as err:
            outcomes[rel] = err.reason
    assert outcomes == {"bad.png": "not an image (unknown file format)", "good.jpg": (342, 548, 3)}


# --- video -------------------------------------------------------------------------------------


def test_is_video():
    assert is_video("a/b.MP4") and is_video("x.webm") and is_video(Path("c.mkv"))
    assert not is_video("a.jpg") and not is_video("mp4")


def test_video_frames_every_n():
    with VideoFrames(VIDEO, every=25) as video:
        assert (video.fps, video.frame_count, video.width, video.height) == (25.0, 300, 640, 480)
        frames = list(video)
    assert [i for i, _, _ in frames] == list(range(0, 300, 25))
    assert [t for _, t, _ in frames] == pytest.approx([i / 25 for i in range(0, 300, 25)])
    for _, _, rgb in frames:
        assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8 and rgb.flags["C_CONTIGUOUS"]
    assert 40 < frames[0][2].mean() < 220
    assert (video.frames_decoded, video.decode_errors, video.decode_error) == (300, 0, False)


def test_truncated_mp4_without_index_is_refused(tmp_path):
    data = VIDEO.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError) as caught:
        VideoFrames(path)
    assert str(caught.value) == (f"{path}: truncated video (no 'moov' index box: the file was cut "
                                 "short or its recording never finished)")


def test_truncated_mp4_mid_stream_ends_cleanly_with_decode_error(tmp_path):
    data = mp4_faststart(VIDEO.read_bytes())
    whole = tmp_path / "faststart.mp4"
    whole.write_bytes(data)
    assert VideoFrames(whole).frame_count == 300
    path = tmp_path / "faststart_cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    video = VideoFrames(path, every=10)
    frames = list(video)
    assert video.frame_count == 300
    assert 50 < video.frames_decoded < 250
    assert [i for i, _, _ in frames] == list(range(0, video.frames_decoded, 10))
    assert video.decode_error and video.decode_errors == 300 - video.frames_decoded


@pytest.mark.parametrize(
    "name, content, reason",
    [("empty.mp4", b"", "empty file (0 bytes)"),
     ("notes.mp4", b"this is not a video\n" * 10,
      "cannot open as video (not a video, or a codec OpenCV lacks)")],
)
def test_bad_video_files(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MediaError) as caught:
        VideoFrames(path)
    assert (caught.value.path, caught.value.reason) == (str(path), reason)


def test_missing_video():
    with pytest.raises(MediaError, match="no such file"):
        VideoFrames(MEDIA / "video" / "absent.mp4")
