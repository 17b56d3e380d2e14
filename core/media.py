"""Reading images and video frames, with one clear `MediaError` per bad file.

Everything returned is HxWx3 RGB uint8, C-contiguous: the colour order every model entry is
written against. OpenCV alone would accept many broken files silently (a truncated JPEG decodes
to a half-grey picture, a truncated MP4 just "has no frames"), so the checks here run before and
after decoding and name the problem in words a user can act on.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

import cv2
import numpy as np

from core.private import redact

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"})
DEFAULT_MAX_PIXELS = 40_000_000

# IMREAD_COLOR_RGB always yields 8-bit, 3-channel RGB: OpenCV keeps the high byte of 16-bit
# samples (exact for 8-bit values stored as v*257), expands gray and palette images, and applies
# the EXIF orientation (IMREAD_UNCHANGED would skip it, and phone photos would reach the detector
# on their side). Alpha is dropped rather than composited: the colour under transparent pixels is
# whatever the image was made from (usually the opaque photo or black), faces are never
# translucent, and compositing would need IMREAD_UNCHANGED and so lose the orientation.
_IMREAD_FLAGS = cv2.IMREAD_COLOR_RGB

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
# Start-of-frame markers that carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) share the
# range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length field after them.
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}
_JPEG_SOS = 0xDA


class MediaError(Exception):
    """A file or stream that cannot be used as an image or video, with the reason in one line.
    A URL's credentials are redacted here, so no message built from the error can show them."""

    def __init__(self, path: str | os.PathLike, reason: str):
        path = redact(os.fspath(path))
        # Both go to Exception.args so the error pickles (Ray ships it between processes).
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def is_video(path: str | os.PathLike) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


def is_image(path: str | os.PathLike) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def iter_image_files(paths: list[str]) -> Iterator[tuple[str, str]]:
    """(path, relative path) for every input: a file is yielded as given, named by its base name,
    whatever its extension (the user asked for it, so a non-image must fail loudly in
    `load_image` rather than vanish; route videos away first with `is_video`). A folder is walked
    recursively for image extensions only, in sorted order of relative path, which uses "/" on
    every platform so that output names do not depend on the machine. A path that does not exist
    is yielded as a file, so that it too fails with a clear error where it is loaded."""
    for given in paths:
        given = os.fspath(given)
        if not os.path.isdir(given):
            yield given, os.path.basename(os.path.normpath(given))
            continue
        found = []
        for folder, dirnames, filenames in os.walk(given):
            # Hidden entries are skipped: macOS copies leave "._photo.jpg" resource forks next
            # to every photo, and those are not images.
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith(".") or not is_image(name):
                    continue
                full = os.path.join(folder, name)
                found.append((os.path.relpath(full, given).replace(os.sep, "/"), full))
        for rel, full in sorted(found):
            yield full, rel


def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The image at `path` as HxWx3 RGB uint8 (C-contiguous), or MediaError saying why not.
    `max_pixels` (None: no limit) is checked from the file header before decoding where the
    format allows (PNG, JPEG, BMP, WebP), so a huge image is refused without allocating it."""
    with _open_media(path) as f:
        kind = _sniff(f)
        size, jpeg_scan_at = _header_size(path, f, kind)
        if size is not None:
            _check_pixels(path, size, max_pixels)
        f.seek(0)
        data = f.read()
    if kind == "JPEG" and data.find(b"\xff\xd9", jpeg_scan_at) < 0:
        # The scan data escapes every 0xFF byte, so FFD9 after the first SOS can only be the
        # end-of-image marker; libjpeg would merely warn and fill the missing rows with grey.
        raise MediaError(path, "truncated JPEG (no end-of-image marker)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _IMREAD_FLAGS)
    except cv2.error as err:
        detail = " ".join(str(err).split())
        raise MediaError(path, f"cannot decode {kind or 'image'}: {detail}") from None
    if image is None:
        # libpng fails on a cut PNG, so the IEND test only names the cause; testing it before
        # decoding would refuse screenshots that carry data after IEND (cropping tools leave the
        # rest of the uncropped file there).
        if kind == "PNG" and b"IEND" not in data[-1024:]:
            raise MediaError(path, "truncated PNG (no IEND chunk at the end)")
        raise MediaError(path, f"corrupt {kind} (OpenCV cannot decode it)" if kind else
                         "not an image (unknown file format)")
    if size is None:
        _check_pixels(path, (image.shape[1], image.shape[0]), max_pixels)
    return np.ascontiguousarray(image)


class VideoFrames:
    """Frames of a video file as (frame index, seconds, HxWx3 RGB uint8), every `every`-th
    frame, in one pass. Opening a file that cannot be played raises MediaError. A file that stops
    early (cut short, corrupt) ends the iteration cleanly; afterwards `decode_errors` counts the
    frames the container declared but that could not be decoded."""

    def __init__(self, path: str | os.PathLike, every: int = 1):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.path = os.fspath(path)
        self.every = every
        with _open_media(path) as f:
            _check_iso_media(path, f)
        self._cap = cv2.VideoCapture(self.path)
        if not self._cap.isOpened():
            self._cap.release()
            raise MediaError(path, "cannot open as video (not a video, or a codec OpenCV lacks)")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.frame_count = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frames_decoded = 0
        self.decode_errors = 0

    @property
    def decode_error(self) -> bool:
        return self.decode_errors > 0

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        cap = self._cap
        try:
            while True:
                index = self.frames_decoded
                # grab() decodes without the colour conversion and copy; skipped frames still
                # have to be decoded because later frames reference them.
                if index % self.every:
                    if not cap.grab():
                        break
                    self.frames_decoded += 1
                    continue
                ok, bgr = cap.read()
                if not ok:
                    break
                self.frames_decoded += 1
                msec = cap.get(cv2.CAP_PROP_POS_MSEC)
                # The container's timestamp follows variable frame rates; a backend that gives
                # none leaves the nominal rate.
                t = msec / 1000.0 if msec > 0 or index == 0 or self.fps <= 0 else index / self.fps
                yield index, t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            # VideoCapture reports a cut-off file only as an early end of frames.
            self.decode_errors = max(0, self.frame_count - self.frames_decoded)
        finally:
            self.close()

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_media(path: str | os.PathLike) -> BinaryIO:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise MediaError(path, "no such file") from None
    except IsADirectoryError:
        raise MediaError(path, "is a folder, not a file") from None
    except PermissionError:
        raise MediaError(path, "permission denied (cannot read the file)") from None
    except OSError as err:
        raise MediaError(path, f"cannot read the file ({err.strerror or err})") from None
    if os.fstat(f.fileno()).st_size == 0:
        f.close()
        raise MediaError(path, "empty file (0 bytes)")
    return f


def _sniff(f: BinaryIO) -> str | None:
    """The format by content, not by extension (a PNG named .jpg is common)."""
    head = f.read(16)
    if head.startswith(_PNG_SIGNATURE):
        return "PNG"
    if head.startswith(_JPEG_SIGNATURE):
        return "JPEG"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def _header_size(path, f: BinaryIO, kind: str | None) -> tuple[tuple[int, int] | None, int]:
    """(width, height) from the header where we can read it (None elsewhere), and for JPEG the
    offset where the first scan starts (0 for other formats)."""
    f.seek(0)
    if kind == "PNG":
        head = f.read(24)
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise MediaError(path, "corrupt PNG (no IHDR header)")
        return struct.unpack(">II", head[16:24]), 0
    if kind == "JPEG":
        return _jpeg_header(path, f)
    if kind == "BMP":
        head = f.read(26)
        if len(head) < 26:
            raise MediaError(path, "truncated BMP (header incomplete)")
        if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
            return struct.unpack("<HH", head[18:22]), 0
        w, h = struct.unpack("<ii", head[18:26])
        return (abs(w), abs(h)), 0  # negative height marks a top-down bitmap
    if kind == "WebP":
        return _webp_header(f.read(30)), 0
    return None, 0


def _jpeg_header(path, f: BinaryIO) -> tuple[tuple[int, int] | None, int]:
    """Walks the marker segments by their lengths (so thumbnails inside EXIF are skipped) up to
    the first start-of-scan."""
    f.seek(2)
    size = None
    while True:
        byte = f.read(1)
        if byte != b"\xff":
            raise MediaError(path, "truncated JPEG (header incomplete)" if not byte else
                             "corrupt JPEG (bad marker in header)")
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes may pad before a marker
            marker = f.read(1)
        if not marker:
            raise MediaError(path, "truncated JPEG (header incomplete)")
        m = marker[0]
        if m in _JPEG_STANDALONE:
            continue
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            raise MediaError(path, "truncated JPEG (header incomplete)")
        length = struct.unpack(">H", length_bytes)[0]
        if m == _JPEG_SOS:
            return size, f.tell() + length - 2
        if m in _JPEG_SOF:
            sof = f.read(5)
            if len(sof) < 5:
                raise MediaError(path, "truncated JPEG (header incomplete)")
            h, w = struct.unpack(">HH", sof[1:5])
            # Height 0 means "given later in a DNL marker": leave the check to after decoding.
            size = (w, h) if h else None
            f.seek(length - 2 - 5, os.SEEK_CUR)
        else:
            f.seek(length - 2, os.SEEK_CUR)


def _webp_header(head: bytes) -> tuple[int, int] | None:
    chunk, body = head[12:16], head[20:30]
    if chunk == b"VP8X" and len(body) >= 10:
        return (int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1)
    if chunk == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", body[6:10])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _check_pixels(path, size: tuple[int, int], max_pixels: int | None) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise MediaError(
            path,
            f"image too large: {w}x{h} = {w * h / 1e6:.1f} MP, over the limit of "
            f"{max_pixels / 1e6:.1f} MP (raise it with --max-pixels)",
        )


def _check_iso_media(path, f: BinaryIO) -> None:
    """MP4/MOV keep their frame index in a 'moov' box, which most recorders write last: a file
    cut short loses it, and FFmpeg then only logs "moov atom not found". Say so plainly."""
    head = f.read(8)
    if head[4:8] != b"ftyp":
        return
    end = os.fstat(f.fileno()).st_size
    pos = 0
    while pos + 8 <= end:
        f.seek(pos)
        box = f.read(16)
        size, kind = struct.unpack(">I4s", box[:8])
        if kind == b"moov":
            return
        if size == 1 and len(box) == 16:
            size = struct.unpack(">Q", box[8:16])[0]
        elif size == 0:  # box runs to the end of the file
            size = end - pos
        if size < 8:
            break
        pos += size
    raise MediaError(path, "truncated video (no 'moov' index box: the file was cut short or its "
                           "recording never finished)")
