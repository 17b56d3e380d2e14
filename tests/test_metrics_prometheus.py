"""`make metrics` against a real local Ray: Debian's Prometheus on 127.0.0.1 finds Ray's metrics
export through the service-discovery file, and after a short pipeline run its HTTP API gives a
non-zero frame rate for the stream, raw and through facelive's recording rules and console."""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from core.config import PipelineConfig
from tests.conftest import cut_clip

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()
    except OSError:
        return None


def query(port: int, expr: str) -> list[dict]:
    body = get(f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    return json.loads(body)["data"]["result"] if body else []


@pytest.fixture(scope="module")
def ray_with_metrics(ray_env):
    import ray

    ray.init(num_cpus=2, object_store_memory=400 * 2**20, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=free_port(), _node_ip_address="127.0.0.1", _temp_dir=ray_env,
             _metrics_export_port=free_port(), logging_level="warning",
             # metrics reach the export port every second instead of every 10 s, so a short run shows a rate
             _system_config={"metrics_report_interval_ms": 1000},
             runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}})
    yield os.path.join(ray_env, "prom_metrics_service_discovery.json")
    ray.shutdown()


@pytest.fixture
def prometheus(ray_with_metrics, tmp_path):
    port = free_port()
    log = tmp_path / "make-metrics.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["make", "-s", "metrics", f"METRICS_PORT={port}", f"METRICS_DIR={tmp_path / 'prom'}",
                                 f"RAY_SD_FILE={ray_with_metrics}", "SCRAPE_INTERVAL=1s"],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # includes installing the package where it is missing
        while get(f"http://127.0.0.1:{port}/-/ready") is None:
            if proc.poll() is not None:
                text = log.read_text()
                if "needs Debian's prometheus" in text:
                    pytest.skip(text.strip().splitlines()[-1])
                pytest.fail(f"make metrics exited with {proc.returncode}:\n{text}")
            assert time.monotonic() < deadline, f"Prometheus not ready on 127.0.0.1:{port}:\n{log.read_text()}"
            time.sleep(0.5)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def wait_for(port: int, expr: str, stream: str, deadline_s: float = 90) -> float:
    end = time.monotonic() + deadline_s
    while True:
        rates = {r["metric"].get("stream"): float(r["value"][1]) for r in query(port, expr)}
        if rates.get(stream, 0.0) > 0:
            return rates[stream]
        assert time.monotonic() < end, f"{expr}: {rates} after {deadline_s} s"
        time.sleep(1)


def test_prometheus_sees_the_pipelines_frame_rate(prometheus, tmp_path):
    from actors.pipeline import Pipeline

    # Prometheus scrapes only what Ray's file lists, and Ray lists loopback addresses here
    targets = json.loads(get(f"http://127.0.0.1:{prometheus}/api/v1/targets"))["data"]["activeTargets"]
    end = time.monotonic() + 60
    while not targets:
        assert time.monotonic() < end, "Prometheus found no targets in Ray's service-discovery file"
        time.sleep(1)
        targets = json.loads(get(f"http://127.0.0.1:{prometheus}/api/v1/targets"))["data"]["activeTargets"]
    assert all(t["labels"]["instance"].startswith("127.0.0.1:") for t in targets), targets

    clip = cut_clip(tmp_path / "clip.mp4", 80)
    pipeline = Pipeline(PipelineConfig(sources=(clip,), mode="lossless"), tmp_path / "out")
    pipeline.start()
    result = pipeline.run()
    assert result.summary.processed == 80
    [stream] = result.videos
    rate = wait_for(prometheus, "sum by (stream) (rate(ray_facelive_frames_processed_total[1m]))", stream)
    assert 0 < rate < 100
    assert wait_for(prometheus, "facelive:frames_per_second", stream) > 0
    console = get(f"http://127.0.0.1:{prometheus}/consoles/facelive.html").decode()
    assert stream in console and "Latency per stage, p95" in console
