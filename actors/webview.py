"""`ViewActor`: the live web view of a run. An async Ray actor that serves, with aiohttp, one page
(`webview_page.html`, plain HTML + JS) and a small JSON API:

    GET  /                       the page
    GET  /video/{stream}         the stream's annotated video as MJPEG (multipart/x-mixed-replace)
    GET  /frame/{stream}.jpg     the stream's latest annotated frame
    GET  /api/stats              run totals, per-stage throughput and latency, pools, streams, swaps
    GET  /api/tracks             the tracks of each stream's latest frame, with fused attributes
    GET  /api/events             recent non-frame events (alarms, enrolments, track starts/ends)
    GET  /api/models             registered models per task, the current one, pool sizes
    POST /api/pools/{task}       {"count": n}: resize the task's pool
    POST /api/models/{task}      {"model": name} or, for detection, {"detector_threshold": x}

Other web pages the user visits must not drive or read it (CSRF, DNS rebinding), so every request
needs the run's token (`?token=` or the `X-Facelive-Token` header; the URL `start` returns carries
it, as notebook servers do, and the page passes it on), a `Host` that names the bound address, no
`Origin` but the view's own, and a POST needs `Content-Type: application/json` (which a plain form
or a no-CORS fetch from another site cannot send).

The trackers call `frame` and the event log `events`, without waiting; both only store the newest
state, so memory stays bounded (one JPEG per stream, the last `keep_events` events) and the callers
never block."""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import re
import secrets
import socket
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import ray
from aiohttp import web
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from core.config import TASKS, PipelineConfig
from core.tracking import UNCONFIRMED
from models.registry import DEFAULT_MODELS, ModelRegistry

PAGE = Path(__file__).with_name("webview_page.html")
DEFAULT_ADDRESS = "127.0.0.1:8080"
BOUNDARY = "faceliveframe"
TOKEN_HEADER = "X-Facelive-Token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
# a host name or IP literal and a port: nothing urlsplit would read past, such as userinfo
HOST_CHARS = re.compile(r"[A-Za-z0-9.\-]+(:\d+)?|\[[0-9A-Fa-f:.]+\](:\d+)?")
# the token rides in the page's URL: no referrer may carry it off, and no other site may frame the controls
SECURITY_HEADERS = {"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    "Content-Security-Policy": "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff"}
# the registry task whose model a pool's `model` names (age_gender runs an age and a gender model)
MODEL_TASK = {"detection": "detection", "expression": "expression", "age_gender": "age", "identity": "identity"}
MAX_POOL = 16
# an idle MJPEG response wakes this often to notice a client that went away
IDLE_CHECK_S = 5.0
_dumps = partial(json.dumps, default=str)


class ViewError(RuntimeError):
    pass


@dataclass
class StreamView:
    jpeg: bytes = b""
    seq: int = -1
    t_capture: float = 0.0
    frames: int = 0
    latency_ms: float = 0.0
    arrivals: deque = field(default_factory=lambda: deque(maxlen=50))
    # replaced on every frame; waiting MJPEG responses wake when the old one is set
    updated: asyncio.Event = field(default_factory=asyncio.Event)
    tracks: list = field(default_factory=list)
    tracks_seq: int = -1

    def fps(self, now: float) -> float:
        recent = [t for t in self.arrivals if now - t < 2.0]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0


def summary_json(summary) -> dict:
    return {"captured": summary.captured, "processed": summary.processed, "dropped": dict(summary.dropped),
            "faces": summary.faces, "seconds": round(summary.seconds, 2), "carried": summary.carried,
            "devices": summary.devices or {},
            "stages": {name: {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(f).items()}
                       for name, f in summary.stages.items()}}


@ray.remote(num_cpus=0)
class ViewActor:
    def __init__(self, config: PipelineConfig, host: str = "127.0.0.1", port: int = 8080, keep_events: int = 100):
        self.host, self.port = host, port
        self.specs = {s.task: s for s in config.all_pools()}
        self.threshold = config.detector_threshold
        self.registry = ModelRegistry()
        if config.models_file:
            self.registry.add_file(config.models_file)
        self.current = {t: self.specs[t].model or (config.detector_model if t == "detection"
                                                    else DEFAULT_MODELS[MODEL_TASK[t]]) for t in TASKS}
        self.streams: dict[str, StreamView] = {}
        self.recent: deque[dict] = deque(maxlen=keep_events)
        self.swaps: deque[dict] = deque(maxlen=20)
        self.scheduler = None
        self.run: dict | None = None
        self.pools: dict[str, int] = {t: self.specs[t].count for t in TASKS}
        self.running = False
        self.tick = 0
        self._url: str | None = None
        self.token = secrets.token_urlsafe(32)

    # ---- lifecycle
    async def start(self) -> str:
        """Bind and serve; returns the page's URL with the run's token (port 0 picks a free port)."""
        app = web.Application(middlewares=[self._guard])
        app.on_response_prepare.append(_secure_headers)
        app.add_routes([web.get("/", self._page), web.get("/video/{stream}", self._mjpeg),
                        web.get("/frame/{stream}.jpg", self._jpeg), web.get("/api/stats", self._stats),
                        web.get("/api/tracks", self._tracks), web.get("/api/events", self._events),
                        web.get("/api/models", self._models), web.post("/api/pools/{task}", self._resize),
                        web.post("/api/models/{task}", self._swap)])
        self.page = PAGE.read_bytes()
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()
        self.bound_port = self.runner.addresses[0][1]
        self._url = f"http://{_url_host(self.host)}:{self.bound_port}/?token={self.token}"
        self._poller = asyncio.create_task(self._poll())
        return self._url

    def url(self) -> str | None:
        return self._url

    def attach(self, scheduler) -> None:
        """The run's scheduler: its summary feeds the stats, and hot swaps go to it."""
        self.scheduler, self.running = scheduler, True

    def finish(self, summary) -> None:
        """The run is over: show its final summary; the page stays up without a scheduler."""
        self.scheduler, self.running = None, False
        self.run = summary_json(summary)
        self.tick += 1

    # ---- called by the trackers and the event log
    async def frame(self, stream: str, seq: int, t_capture: float, jpeg: bytes) -> None:
        view = self.streams.setdefault(stream, StreamView())
        now = time.time()
        view.frames += 1
        view.arrivals.append(now)
        # an async actor runs calls in no set order: an older frame arriving late must not replace a newer one
        if seq <= view.seq:
            return
        view.jpeg, view.seq, view.t_capture = jpeg, seq, t_capture
        view.latency_ms = (now - t_capture) * 1000
        updated, view.updated = view.updated, asyncio.Event()
        updated.set()

    async def events(self, events: list[dict]) -> None:
        for event in events:
            if event.get("type") != "frame":
                self.recent.append(event)
                continue
            view = self.streams.setdefault(event["stream"], StreamView())
            # events of one stream come in order, but a late batch must not roll the tracks back
            if event["seq"] > view.tracks_seq:
                view.tracks_seq = event["seq"]
                view.tracks = [{k: v for k, v in face.items() if k != "landmarks"}
                               for face in event["faces"] if face.get("track_id", UNCONFIRMED) != UNCONFIRMED]

    # ---- who may ask
    @web.middleware
    async def _guard(self, request, handler):
        # the header itself: aiohttp's request.host makes up the machine's name when it is missing
        host = request.headers.get("Host", "")
        if not host_allowed(host, self.host, self.bound_port):
            raise _bad(f"Host {host!r} is not this view's address", 403)
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_ok(origin):
            raise _bad(f"requests from {origin!r} are refused", 403)
        given = request.query.get("token") or request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise _bad("open the view with the URL it printed at start: it carries the run's token", 403)
        if request.method == "POST" and request.content_type != "application/json":
            raise _bad("the body must be sent as Content-Type: application/json", 415)
        return await handler(request)

    def _origin_ok(self, origin: str) -> bool:
        scheme, _, host = origin.partition("://")
        return scheme == "http" and "/" not in host and host_allowed(host, self.host, self.bound_port)

    # ---- stats
    async def _poll(self) -> None:
        while True:
            scheduler = self.scheduler
            if scheduler is not None:
                try:
                    summary, pools = await asyncio.wait_for(
                        asyncio.gather(scheduler.summary.remote(), scheduler.pool_sizes.remote()), 5.0)
                    if self.scheduler is scheduler:  # `finish` may have come while we waited
                        self.run, self.pools = summary_json(summary), pools
                        self.tick += 1
                except (ray.exceptions.RayError, asyncio.TimeoutError):
                    pass  # the run ended and took its scheduler with it; `finish` brings the final figures
            await asyncio.sleep(1.0)

    def _stream_stats(self) -> dict:
        now = time.time()
        return {name: {"frames": v.frames, "seq": v.seq, "fps": round(v.fps(now), 1),
                       "latency_ms": round(v.latency_ms, 1), "tracks": len(v.tracks)}
                for name, v in self.streams.items()}

    # ---- pages
    async def _page(self, request):
        return web.Response(body=self.page, content_type="text/html", charset="utf-8")

    def _stream(self, request) -> StreamView:
        view = self.streams.get(request.match_info["stream"])
        if view is None or not view.jpeg:
            raise web.HTTPNotFound(text=f"no frames from stream {request.match_info['stream']!r} yet")
        return view

    async def _jpeg(self, request):
        return web.Response(body=self._stream(request).jpeg, content_type="image/jpeg",
                            headers={"Cache-Control": "no-store"})

    async def _mjpeg(self, request):
        view = self._stream(request)
        response = web.StreamResponse(headers={"Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        sent = None
        try:
            while request.transport is not None and not request.transport.is_closing():
                if view.jpeg is sent:
                    try:
                        await asyncio.wait_for(view.updated.wait(), IDLE_CHECK_S)
                    except asyncio.TimeoutError:
                        pass
                    continue
                # a slow client skips frames: it always gets the newest one
                sent = view.jpeg
                await response.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(sent)}"
                                     f"\r\n\r\n".encode() + sent + b"\r\n")
        except ConnectionError:
            pass  # the client went away mid-frame
        return response

    async def _stats(self, request):
        return web.json_response({"running": self.running, "tick": self.tick, "run": self.run, "pools": self.pools,
                                  "models": self.current, "detector_threshold": self.threshold,
                                  "streams": self._stream_stats(), "swaps": list(self.swaps)[::-1]}, dumps=_dumps)

    async def _tracks(self, request):
        return web.json_response({name: {"seq": v.tracks_seq, "tracks": v.tracks} for name, v in self.streams.items()},
                                 dumps=_dumps)

    async def _events(self, request):
        return web.json_response(list(self.recent)[::-1], dumps=_dumps)

    async def _models(self, request):
        return web.json_response({"tasks": {t: {"current": self.current[t], "count": self.pools.get(t, 0),
                                                "models": sorted(e.name for e in self.registry.entries.values()
                                                                 if e.task == MODEL_TASK[t])} for t in TASKS},
                                  "detector_threshold": self.threshold})

    # ---- hot swap
    async def _resize(self, request):
        task, body = await self._request(request)
        count = body.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_POOL:
            raise _bad(f"count must be a whole number from 1 to {MAX_POOL}")
        self._need_room(task, count - self.pools.get(task, 0))
        return await self._change(f"{task} pool → {count}", self.scheduler.resize_pool.remote(task, count))

    async def _swap(self, request):
        task, body = await self._request(request)
        model, threshold = body.get("model"), body.get("detector_threshold")
        if (model is None) == (threshold is None):
            raise _bad('give either "model" or "detector_threshold"')
        if model is not None:
            entry = self.registry.entries.get(model)
            if entry is None or entry.task != MODEL_TASK[task]:
                known = sorted(e.name for e in self.registry.entries.values() if e.task == MODEL_TASK[task])
                raise _bad(f"no {MODEL_TASK[task]} model named {model!r}; registered: {known}")
            what = f"{task} model → {model}"
        else:
            if task != "detection":
                raise _bad("detector_threshold applies to the detection task only")
            if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold < 1:
                raise _bad("detector_threshold must be a number between 0 and 1")
            threshold = float(threshold)
            what = f"detector threshold → {threshold:g}"
        response = await self._change(what, self.scheduler.swap_model.remote(task, model, threshold))
        if response.status == 200:
            if model is not None:
                self.current[task] = model
            else:
                self.threshold = threshold
        return response

    async def _request(self, request) -> tuple[str, dict]:
        task = request.match_info["task"]
        if task not in TASKS:
            raise _bad(f"unknown task {task!r}; tasks: {list(TASKS)}", 404)
        if self.scheduler is None:
            raise _bad("no run is in progress", 409)
        try:
            body = await request.json()
        except ValueError:
            raise _bad("the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object")
        return task, body

    def _need_room(self, task: str, actors: int) -> None:
        """Refuse up front what the cluster cannot place: Ray would leave the new actors pending and
        the scheduler would wait minutes for them."""
        if actors <= 0:
            return
        spec = self.specs[task]
        wants = {"CPU": spec.num_cpus * actors, "GPU": spec.num_gpus * actors,
                 **{k: v * actors for k, v in spec.resources.items()}}
        free = ray.available_resources()
        short = [f"{name} {amount:g} (free: {free.get(name, 0):g})" for name, amount in wants.items()
                 if amount > 0 and free.get(name, 0) + 1e-9 < amount]
        if short:
            raise _bad(f"{actors} more {task} actor(s) need {', '.join(short)}; start Ray with more CPUs or give "
                       f"the pool a smaller share (--pool {task}=N:num_cpus=0.25)", 409)

    async def _change(self, what: str, call) -> web.Response:
        record = {"t": time.time(), "what": what, "state": "pending"}
        self.swaps.append(record)
        started = time.monotonic()
        try:
            self.pools = await call
        except ray.exceptions.RayError as error:
            cause = getattr(error, "cause", None) or error
            record.update(state="failed", error=str(cause).splitlines()[-1][:300])
            return web.json_response({"error": record["error"]}, status=500)
        finally:
            record["seconds"] = round(time.monotonic() - started, 2)
        record["state"] = "done"
        self.tick += 1
        return web.json_response({"pools": self.pools, "seconds": record["seconds"]})


def _bad(message: str, status: int = 400) -> web.HTTPException:
    kind = {400: web.HTTPBadRequest, 403: web.HTTPForbidden, 404: web.HTTPNotFound, 409: web.HTTPConflict,
            415: web.HTTPUnsupportedMediaType}[status]
    return kind(text=json.dumps({"error": message}), content_type="application/json")


async def _secure_headers(request, response) -> None:
    response.headers.update(SECURITY_HEADERS)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def host_allowed(host_header: str, bound: str, port: int) -> bool:
    """Whether a request's Host names the view bound at `bound`:`port`. DNS rebinding sends the
    attacker's own name, so a name is accepted only where it is the bound one, localhost on a
    loopback or wildcard bind, or this machine's name on a wildcard bind; an IP literal only if it
    is the bound one, or any on a wildcard bind (no rebinding can make a browser send it)."""
    if not HOST_CHARS.fullmatch(host_header):
        return False
    try:
        parts = urlsplit(f"//{host_header}")
        host, given_port = (parts.hostname or "").lower(), parts.port or 80
    except ValueError:
        return False
    if given_port != port:
        return False
    bound = bound.lower()
    if host == bound or (bound in LOOPBACK_NAMES | WILDCARDS and host in LOOPBACK_NAMES):
        return True
    if bound not in WILDCARDS:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host == socket.gethostname().lower()


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT', 'HOST' or ':PORT' -> (host, port); the defaults are 127.0.0.1 and 8080."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        number = int(port) if port else 8080
    except ValueError:
        raise ViewError(f"--view wants HOST:PORT, not {text!r}") from None
    if not 0 <= number <= 65535:
        raise ViewError(f"--view: port {number} is out of range")
    return host or "127.0.0.1", number


def start_view(config: PipelineConfig, address: str = DEFAULT_ADDRESS):
    """Start the view on the driver's node (so its URL is the one this machine reaches) and bind it.
    Returns (actor handle, URL)."""
    host, port = parse_address(address)
    node = ray.get_runtime_context().get_node_id()
    view = ViewActor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
        config, host, port)
    try:
        return view, ray.get(view.start.remote())
    except ray.exceptions.RayTaskError as error:
        ray.kill(view)
        raise ViewError(f"cannot serve the live view on {host}:{port}: {error.cause}") from None
