"""Network source faults against a real MJPEG-over-HTTP server on 127.0.0.1 that the tests stop,
restart and stall: `LiveSource` reconnects with backoff, resumes, gives up with one error, and
refuses an unreachable URL at once."""
import http.server
import socket
import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from core import sources
from core.media import MediaError
from core.sources import LiveSource

RED, BLUE = (0, 0, 255), (255, 0, 0)  # BGR, as the server encodes them


def _jpeg(color) -> bytes:
    return cv2.imencode(".jpg", np.full((120, 160, 3), color, np.uint8))[1].tobytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.connections.add(self.connection)
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            while not server.closing.is_set():
                if not server.stalled.is_set():
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                     % (len(server.jpeg), server.jpeg))
                time.sleep(0.04)
        except OSError:  # the client went away
            pass

    def log_message(self, *args):
        pass


class MjpegServer:
    """25 fps of one solid-colour 160x120 JPEG; the colour tells which server a frame came from."""

    def __init__(self, port: int = 0, color=RED):
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.http.daemon_threads = True
        self.http.connections, self.http.closing, self.http.stalled = set(), threading.Event(), threading.Event()
        self.http.jpeg = _jpeg(color)
        self.port = self.http.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def stall(self):
        """Keep every connection open but send nothing."""
        self.http.stalled.set()

    def resume(self, color):
        self.http.jpeg = _jpeg(color)
        self.http.stalled.clear()

    def stop(self):
        """Like a camera losing power: no more listener, open connections cut."""
        self.http.closing.set()
        self.http.shutdown()
        self.http.server_close()
        for connection in list(self.http.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def server():
    servers = []

    def start(port=0, color=RED):
        servers.append(MjpegServer(port, color))
        return servers[-1]

    yield start
    for s in servers:
        if not s.http.closing.is_set():
            s.stop()


@pytest.fixture
def backoffs(monkeypatch):
    """The waits `LiveSource` takes between reopen tries (really waited)."""
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(sources, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    return waits


def _is(image, color) -> bool:
    """Solid colour up to JPEG error; `color` is BGR, `image` must be RGB."""
    return image.shape == (120, 160, 3) and np.abs(image.astype(int) - color[::-1]).max() < 40


def _next_image(items, color, within_s: float, max_items: int = 200):
    """The first frame of `color`, or None if none came within the bounds."""
    deadline = time.monotonic() + within_s
    for _ in range(max_items):
        item = next(items, None)
        if item is None or item.image is None or time.monotonic() > deadline:
            return None
        if _is(item.image, color):
            return item.image
    return None


def test_frames_are_rgb_of_the_stream_shape(server):
    source = LiveSource(server().url)
    items = iter(source)
    images = [next(items).image for _ in range(5)]
    assert all(image.dtype == np.uint8 and image.flags.c_contiguous and _is(image, RED) for image in images)
    assert source.reconnects == 0 and source.fps > 0


def test_server_killed_and_restarted_frames_resume(server, backoffs):
    first = server()
    source = LiveSource(first.url, max_backoff_s=2, give_up_s=15, stall_s=2)
    items = iter(source)
    assert _next_image(items, RED, within_s=5) is not None
    first.stop()
    threading.Timer(2.0, server, kwargs={"port": first.port, "color": BLUE}).start()
    began = time.monotonic()
    assert _next_image(items, BLUE, within_s=12) is not None, "frames did not resume from the restarted server"
    assert 2.0 <= time.monotonic() - began < 10
    # Tries 0.5 s and 1.5 s after the cut meet a closed port; the one at 3.5 s (or 1.5 s late) gets in.
    assert source.reconnects in (2, 3) and backoffs == [0.5, 1.0, 2.0][: source.reconnects]
    assert [image is not None for image in (next(items).image for _ in range(5))] == [True] * 5


def test_server_that_never_returns_ends_with_one_error(server):
    first = server()
    source = LiveSource(first.url, max_backoff_s=0.5, give_up_s=3, stall_s=1)
    items = iter(source)
    assert _next_image(items, RED, within_s=5) is not None
    first.stop()
    began = time.monotonic()
    rest = []
    for item in items:
        rest.append(item)
        assert len(rest) < 100 and time.monotonic() - began < 10
    took = time.monotonic() - began
    assert [item.image is None for item in rest].count(True) == 1 and rest[-1].image is None
    assert first.url in rest[-1].error and "giving up" in rest[-1].error
    assert 3 <= took < 6, took
    assert source.reconnects >= 3


def test_stalled_server_is_reopened(server, backoffs):
    """A server that keeps the connection but stops sending: found within `stall_s`, not the 30 s
    OpenCV's FFmpeg backend waits by default."""
    first = server()
    source = LiveSource(first.url, max_backoff_s=0.5, give_up_s=15, stall_s=1)
    items = iter(source)
    assert _next_image(items, RED, within_s=5) is not None
    first.stall()
    threading.Timer(3.0, first.resume, args=(BLUE,)).start()
    began = time.monotonic()
    assert _next_image(items, BLUE, within_s=10) is not None
    assert 3.0 <= time.monotonic() - began < 7
    assert source.reconnects >= 1 and backoffs


def test_unreachable_url_fails_at_once():
    # Bound but not listening: connections to it are refused, and no other process can take the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/stream.mjpg"
        began = time.monotonic()
        with pytest.raises(MediaError, match=url.replace(".", r"\.")):
            LiveSource(url)
        assert time.monotonic() - began < 2
