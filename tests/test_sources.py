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
from core.private import redact
from core.sources import LiveSource, stream_name

RED, BLUE = (0, 0, 255), (255, 0, 0)  # BGR, as the server encodes them
# Deadlines for conditions, generous for a busy 2-core CI box. HUNG_S stays below the 30 s that
# OpenCV's FFmpeg backend blocks on a silent stream, so a lost read timeout still fails the tests.
WAIT_S = 60
HUNG_S = 25


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
    """The waits `LiveSource` takes between reopen tries (really waited). A test may put a callback
    in `backoffs.on_wait`: called with the number of waits so far, before each wait, so it can
    change the server at a known step of the reconnect sequence instead of at a guessed time."""

    class Waits(list):
        on_wait = None

    waits = Waits()

    def sleep(seconds):
        waits.append(seconds)
        if waits.on_wait:
            waits.on_wait(len(waits))
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
    source = LiveSource(first.url, max_backoff_s=2, give_up_s=60, stall_s=2)
    items = iter(source)
    assert _next_image(items, RED, within_s=WAIT_S) is not None
    first.stop()
    # The first two reopen tries meet a closed port; the server is back before the third.
    backoffs.on_wait = lambda waits: waits == 3 and server(port=first.port, color=BLUE)
    assert _next_image(items, BLUE, within_s=WAIT_S) is not None, "frames did not resume from the restarted server"
    assert source.reconnects == 3 and backoffs == [0.5, 1.0, 2.0]
    assert [image is not None for image in (next(items).image for _ in range(5))] == [True] * 5


def test_server_that_never_returns_ends_with_one_error(server):
    first = server()
    # credentials in the URL must not reach the error that names it
    url = first.url.replace("http://", "http://admin:secret@")
    source = LiveSource(url, max_backoff_s=0.5, give_up_s=3, stall_s=1)
    items = iter(source)
    assert _next_image(items, RED, within_s=WAIT_S) is not None
    first.stop()
    began = time.monotonic()
    rest = []
    for item in items:
        rest.append(item)
        assert len(rest) < 100 and time.monotonic() - began < HUNG_S
    took = time.monotonic() - began
    assert [item.image is None for item in rest].count(True) == 1 and rest[-1].image is None
    assert redact(url) in rest[-1].error and "giving up" in rest[-1].error and "secret" not in rest[-1].error
    # give_up_s is kept, not OpenCV's 30 s stall wait
    assert 3 <= took < HUNG_S, took
    assert source.reconnects >= 3


def test_stalled_server_is_reopened(server, backoffs):
    """A server that keeps the connection but stops sending: found and reopened, rather than left
    to the 30 s OpenCV's FFmpeg backend waits by default."""
    first = server()
    source = LiveSource(first.url, max_backoff_s=0.5, give_up_s=60, stall_s=1)
    items = iter(source)
    assert _next_image(items, RED, within_s=WAIT_S) is not None
    first.stall()
    began, noticed = time.monotonic(), []

    def resume(waits):
        # only once the stall was noticed: resumed earlier, the old connection would carry on
        if waits == 1:
            noticed.append(time.monotonic() - began)
            first.resume(BLUE)

    backoffs.on_wait = resume
    assert _next_image(items, BLUE, within_s=WAIT_S) is not None
    assert source.reconnects >= 1 and noticed[0] < HUNG_S


def test_unreachable_url_fails_at_once():
    # Bound but not listening: connections to it are refused, and no other process can take the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/stream.mjpg"
        began = time.monotonic()
        with pytest.raises(MediaError, match=url.replace(".", r"\.")):
            LiveSource(url)
        # no reconnect loop: a refused first open is an error, not a reason to wait
        assert time.monotonic() - began < HUNG_S


def test_credentials_never_named(capfd):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        url = f"rtsp://admin:secret@127.0.0.1:{port}/stream?token=secret2&channel=1"
        with pytest.raises(MediaError) as raised:
            LiveSource(url)
    error = raised.value
    assert str(error) == f"rtsp://***@127.0.0.1:{port}/stream?token=***&channel=1: cannot open the camera or stream"
    # Ray ships the error to the driver by its constructor arguments
    rebuilt = type(error)(*error.__reduce__()[1])
    assert str(rebuilt) == str(error)
    with pytest.raises(MediaError) as raised:
        sources.open_source("http://user:secret@127.0.0.1:1/video?pwd=secret2")
    assert "secret" not in str(raised.value)
    assert "secret" not in "".join(capfd.readouterr())
    names = [stream_name(u, 0) for u in ("rtsp://admin:secret@cam/", "rtsp://admin:secret@cam:554/live/main",
                                         "rtsp://admin:p@ss:secret@cam", "http://cam/mjpg?user=a&pwd=secret")]
    assert names == ["0:cam", "0:main", "0:cam", "0:mjpg"]
    assert redact("rtsp://admin:secret@cam/s") == "rtsp://***@cam/s"
    assert redact("rtsp://admin:p@ss@cam/s") == "rtsp://***@cam/s"
    assert redact("/videos/clip.mp4") == "/videos/clip.mp4" and redact("0") == "0"
