"""The live web view in a real browser: the sample video runs through the pipeline (with a
watchlist gallery) at its real frame rate while headless Chromium watches the page, hot swaps a
pool and the detector threshold, and checks that the run still accounts for every frame and that
the page lists the run's alarms and enrolments.

Needs Debian's `chromium` (/usr/bin/chromium) and the `playwright` Python package; Playwright's own
browser download is not used. A screenshot lands in artifacts/webview.png."""
import json
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from core.config import DEFAULT_PRIORITY, TASKS, PipelineConfig, PoolSpec
from tests.conftest import GALLERY, VIDEO

pytestmark = pytest.mark.ray

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FRAMES = 300


def api(url: str, path: str) -> str:
    """`path` on the view that printed `url`, with the run's token that URL carries."""
    base, _, query = url.partition("?")
    return f"{base}{path}?{query}"


def _playwright():
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("the browser test needs Playwright: pip install playwright (its browser download is not needed)")
    if not CHROMIUM.exists():
        pytest.fail(f"the browser test needs Chromium at {CHROMIUM}: apt-get install -y chromium")
    return sync_playwright, expect


def _config(**extra) -> PipelineConfig:
    # Quarter-CPU pools leave room on the test's 2-CPU Ray for the actors a hot swap starts
    # beside the old ones; the default half-CPU pools fill it.
    pools = tuple(PoolSpec(task, num_cpus=0.25, priority=DEFAULT_PRIORITY[task]) for task in TASKS)
    return PipelineConfig(sources=(str(VIDEO / "crossing_faces.mp4"),), mode="lossless", realtime=True,
                          pools=pools, **extra).validate()


def _watchlist_gallery(analyzer, directory: Path) -> str:
    """The sample's people, with obama watched: the run raises an alarm and enrols an unknown."""
    from core.gallery import GalleryIndex
    from models.enrolment import embed_largest_face, gallery_config

    index = GalleryIndex(gallery_config(analyzer))
    for person in sorted(p for p in GALLERY.iterdir() if p.is_dir()):
        for image in sorted(person.iterdir()):
            index.add(person.name, embed_largest_face(analyzer, str(image)).vector[None], [str(image)])
    index.set_watch("obama", True)
    index.save(directory)
    return str(directory)


def test_live_view_in_a_browser(local_ray, analyzer, tmp_path):
    sync_playwright, expect = _playwright()
    import ray

    from actors.pipeline import Pipeline
    from actors.webview import start_view
    from core.events import read_events

    config = _config(gallery=_watchlist_gallery(analyzer, tmp_path / "gallery"), enrol_unknown=True)
    view, url = start_view(config, "127.0.0.1:0")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[\w-]{40,}", url) and ray.get(view.url.remote()) == url
    pipeline = Pipeline(config, tmp_path / "out", view=view)
    view.attach.remote(pipeline.scheduler)
    pipeline.start()
    outcome = {}

    def run():
        try:
            outcome["result"] = pipeline.run()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = error

    runner = threading.Thread(target=run, daemon=True)
    ARTIFACTS.mkdir(exist_ok=True)
    profile = tempfile.mkdtemp(prefix="flchrome-")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                           args=FLAGS, viewport={"width": 1400, "height": 900})
            page = browser.new_page()
            # the MJPEG image never finishes loading, so the page's load event is not awaited
            page.goto(url, wait_until="domcontentloaded")
            expect(page.locator("#pool-expression-set")).to_be_visible()
            runner.start()

            deadline = time.monotonic() + 120
            while not page.locator("figure img").count():
                if "error" in outcome:
                    raise outcome["error"]
                assert time.monotonic() < deadline, \
                    f"no video on the page after 120 s; the view says {page.request.get(api(url, 'api/stats')).text()}"
                time.sleep(0.2)
            video = page.locator("figure img").first
            seq = page.locator(".frame-seq").first
            expect(seq).to_have_text(re.compile(r"frame \d+"), timeout=10_000)
            first_seq, first_shot = seq.inner_text(), video.screenshot()
            tick = int(page.inner_text("#tick"))
            expect(seq).not_to_have_text(first_seq, timeout=30_000)
            page.wait_for_function("tick => Number(document.getElementById('tick').textContent) > tick", arg=tick,
                                   timeout=30_000)
            deadline = time.monotonic() + 30
            while video.screenshot() == first_shot:
                assert time.monotonic() < deadline, "the video did not change"
                time.sleep(0.2)
            assert int(page.inner_text("#processed")) > 0

            # both swaps at once, while frames flow: a pool grows and the detector pool is replaced
            page.fill("#pool-expression-count", "2")
            page.click("#pool-expression-set")
            page.fill("#threshold", "0.6")
            page.click("#threshold-apply")
            expect(page.locator("#pool-expression-size")).to_have_text("×2", timeout=60_000)
            expect(page.locator("#threshold-now")).to_have_text("now 0.6", timeout=60_000)
            swaps = page.locator("#swaps")
            expect(swaps).to_contain_text("expression pool → 2 done", timeout=60_000)
            expect(swaps).to_contain_text("detector threshold → 0.6 done", timeout=60_000)
            assert page.inner_text("#status") == "running", "the run ended before the swaps were shown"
            # the screenshot is worth more with a recognised face in it
            page.wait_for_function("document.querySelector('#tracks .who') || "
                                   "document.getElementById('status').textContent !== 'running'", timeout=120_000)
            page.screenshot(path=str(ARTIFACTS / "webview.png"))

            runner.join(120)
            assert not runner.is_alive(), "the run did not end"
            if "error" in outcome:
                raise outcome["error"]
            s = outcome["result"].summary
            assert s.captured == s.processed + sum(s.dropped.values())
            assert (s.captured, s.processed, s.dropped) == (FRAMES, FRAMES, {})

            ray.get(view.finish.remote(s))
            expect(page.locator("#status")).to_have_text("finished", timeout=5_000)
            for field, value in [("#captured", FRAMES), ("#processed", FRAMES), ("#dropped", 0)]:
                expect(page.locator(field)).to_have_text(str(value), timeout=5_000)
            # the sinks' calls to the view may still be on their way when the run returns
            expect(seq).to_have_text(f"frame {FRAMES - 1}", timeout=10_000)
            stats = json.loads(page.request.get(api(url, "api/stats")).text())
            assert [v["frames"] for v in stats["streams"].values()] == [FRAMES], "the view missed frames"
            logged = [e for e in read_events(Path(outcome["result"].events)) if e["type"] in ("alarm", "enrol")]
            assert {e["type"] for e in logged} == {"alarm", "enrol"}, "the sample should raise an alarm and enrol someone"
            alarms = page.locator("#alarms")
            for event in logged:
                expect(alarms).to_contain_text(event["name"])
            expect(alarms).to_contain_text("ALARM")
            page.screenshot(path=str(ARTIFACTS / "webview-final.png"))
            browser.close()
    finally:
        if runner.is_alive():
            pipeline.stop()
            runner.join(60)
        ray.kill(view)
        shutil.rmtree(profile, ignore_errors=True)


def test_view_api_checks_requests_and_keeps_only_the_newest(local_ray):
    import urllib.error
    import urllib.request

    import ray

    from actors.webview import ViewError, parse_address, start_view

    assert parse_address("") == ("127.0.0.1", 8080) and parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    with pytest.raises(ViewError):
        parse_address("localhost:http")
    view, url = start_view(_config(), "127.0.0.1:0")
    try:
        # an async actor runs these in no set order: the view must still end on the newest frame
        sent = [view.frame.remote("0:cam", seq, time.time(), bytes([seq]) * 10) for seq in reversed(range(30))]
        sent.append(view.events.remote([{"v": 1, "type": "frame", "stream": "0:cam", "seq": 29, "t_capture": 0.0,
                             "faces": [{"track_id": 4, "landmarks": [[1, 2]]}, {"track_id": -1}]}]
                           + [{"v": 1, "type": "track_start", "stream": "0:cam", "track_id": i, "t": 0.0}
                              for i in range(150)]))
        ray.get(sent)

        def call(path, body=None):
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(api(url, path), data=data, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as error:
                return error.code, error.read()

        assert call("frame/0%3Acam.jpg") == (200, bytes([29]) * 10)
        assert call("frame/other.jpg")[0] == 404
        tracks = json.loads(call("api/tracks")[1])
        assert tracks == {"0:cam": {"seq": 29, "tracks": [{"track_id": 4}]}}
        events = json.loads(call("api/events")[1])
        assert len(events) == 100 and events[0]["track_id"] == 149
        assert json.loads(call("api/stats")[1])["streams"]["0:cam"]["frames"] == 30
        assert "fer-mini-xception" in json.loads(call("api/models")[1])["tasks"]["expression"]["models"]
        # no scheduler attached: nothing to swap
        assert call("api/pools/expression", {"count": 2})[0] == 409
        assert call("api/pools/nosuch", {"count": 2})[0] == 404
        with pytest.raises(ViewError, match="cannot serve"):
            start_view(_config(), urlsplit(url).netloc)
    finally:
        ray.kill(view)


def test_view_refuses_other_sites_and_requests_without_the_token(local_ray):
    """CSRF and DNS rebinding: a POST from another site's page, one without the run's token, one
    whose Host is a rebound name, or one a plain form could send, is refused and changes nothing;
    the page's own requests still work."""
    import http.client

    import ray

    from actors.webview import host_allowed, start_view

    @ray.remote(num_cpus=0)
    class Scheduler:
        """Records the hot swaps that reach it."""

        def __init__(self):
            self.calls = []

        def resize_pool(self, task, count):
            self.calls.append((task, count))
            return {task: count}

        def pool_sizes(self):
            return {}

        def summary(self):
            raise RuntimeError("no run: the view's stats poll ignores a scheduler that fails")

        def recorded(self):
            return self.calls

    view, url = start_view(_config(), "127.0.0.1:0")
    scheduler = Scheduler.remote()
    ray.get(view.attach.remote(scheduler))
    parts = urlsplit(url)
    own, token = parts.netloc, parts.query.removeprefix("token=")
    good = {"Host": own, "Origin": f"http://{own}", "X-Facelive-Token": token, "Content-Type": "application/json"}

    def call(method, path, headers, body=None):
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    resize = json.dumps({"count": 2})
    try:
        refused = {
            "foreign Origin": ({**good, "Origin": "http://attacker.example"}, 403),
            "sandboxed page": ({**good, "Origin": "null"}, 403),
            "no token": ({k: v for k, v in good.items() if k != "X-Facelive-Token"}, 403),
            "wrong token": ({**good, "X-Facelive-Token": token[:-1]}, 403),
            "rebinding Host": ({**good, "Host": f"attacker.example:{parts.port}",
                                "Origin": f"http://attacker.example:{parts.port}"}, 403),
            "Host with another port": ({**good, "Host": "127.0.0.1:1"}, 403),
            "form post": ({**good, "Content-Type": "application/x-www-form-urlencoded"}, 415),
            "text post": ({**good, "Content-Type": "text/plain"}, 415),
        }
        for what, (headers, status) in refused.items():
            assert call("POST", "/api/pools/expression", headers, resize)[0] == status, what
        assert ray.get(scheduler.recorded.remote()) == [], "a refused request reached the scheduler"
        # reading names: a rebound page (no token, its own Host) or any page without the token gets nothing
        for path in ("/api/tracks", "/api/stats", "/", "/frame/0%3Acam.jpg"):
            assert call("GET", path, {"Host": f"attacker.example:{parts.port}"})[0] == 403, path
            assert call("GET", path, {"Host": own})[0] == 403, path
        assert call("GET", f"/api/tracks?token={token}", {"Host": f"attacker.example:{parts.port}"})[0] == 403

        status, headers, body = call("GET", f"/?token={token}", {"Host": own})
        assert status == 200 and b"facelive" in body and headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Frame-Options"] == "DENY"
        assert call("GET", "/api/stats", {"Host": f"localhost:{parts.port}", "X-Facelive-Token": token})[0] == 200
        status, _, body = call("POST", "/api/pools/expression", good, resize)
        assert status == 200 and json.loads(body)["pools"] == {"expression": 2}
        assert ray.get(scheduler.recorded.remote()) == [("expression", 2)]
    finally:
        ray.kill(view)
        ray.kill(scheduler)

    # the view bound to every interface: IP literals and this machine's names, never another name
    assert host_allowed("192.0.2.7:8080", "0.0.0.0", 8080) and host_allowed("[::1]:8080", "::", 8080)
    assert not host_allowed("attacker.example:8080", "0.0.0.0", 8080)
    assert not host_allowed("evil@127.0.0.1:8080", "127.0.0.1", 8080)
    assert not host_allowed("192.0.2.7:8080", "127.0.0.1", 8080)
    assert host_allowed("127.0.0.1:80", "127.0.0.1", 80) and host_allowed("127.0.0.1", "127.0.0.1", 80)
