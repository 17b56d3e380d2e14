"""Actor crashes mid-stream: kill -9 a detector and a recognition actor while frames flow."""
import os
import signal
import threading
import time

import pytest

from core.config import PipelineConfig
from core.events import read_events
from tests.conftest import cut_clip, wait_for_processed

pytestmark = pytest.mark.ray


def _run_and_kill(config, out, kill_after: int, tasks=("detection", "identity")):
    import ray

    from actors.pipeline import Pipeline

    pipeline = Pipeline(config, out)
    pipeline.start()
    places = ray.get(pipeline.scheduler.pool_places.remote())
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("r", pipeline.run()))
    runner.start()
    wait_for_processed(pipeline.scheduler, kill_after)
    for task in tasks:
        os.kill(places[task][0][1], signal.SIGKILL)
    killed_at = time.monotonic()
    processed_then = ray.get(pipeline.scheduler.summary.remote()).processed
    resumed = None
    while resumed is None and time.monotonic() - killed_at < 120:
        try:
            if ray.get(pipeline.scheduler.summary.remote(), timeout=30).processed > processed_then + 2:
                resumed = time.monotonic() - killed_at
        except ray.exceptions.RayActorError:
            break  # the run ended and tore the scheduler down: the events below tell the rest
        time.sleep(0.05)
    runner.join(300)
    assert not runner.is_alive(), "the run did not end within 300 s of the kill"
    return result["r"], resumed, processed_then


def test_lossless_loses_no_frame_when_actors_die(local_ray, tmp_path):
    clip = cut_clip(tmp_path / "clip.mp4", 80, start=40)
    config = PipelineConfig(sources=(clip,), mode="lossless")
    result, resumed, _ = _run_and_kill(config, tmp_path / "out", kill_after=15)
    s = result.summary
    assert (s.captured, s.processed, s.dropped) == (80, 80, {})
    assert resumed is not None and resumed < 15  # restarted actors reload their models first
    seqs = [e["seq"] for e in read_events(tmp_path / "out" / "events.msgpack") if e["type"] == "frame"]
    assert seqs == list(range(80))
    # fused state lives in the tracker: tracks carry on with their attributes after the crash
    last = [e for e in read_events(tmp_path / "out" / "events.msgpack") if e["type"] == "frame"][-1]
    assert any(f["track_id"] >= 0 and f["age"] is not None for f in last["faces"])


def test_live_counts_what_a_crash_cost(local_ray, tmp_path):
    # 9.6 s of camera: a restarted detector reloads its models (3 s on a slow 2-core box) and
    # must still find frames to detect before the clip ends
    clip = cut_clip(tmp_path / "clip.mp4", 240, start=40)
    config = PipelineConfig(sources=(clip,), mode="live", realtime=True)
    result, _, processed_then = _run_and_kill(config, tmp_path / "out", kill_after=10, tasks=("detection",))
    s = result.summary
    assert s.captured == 240
    # the frame the detector held dies with it, counted as such; frames that came while it
    # restarted went on with tracked boxes (carried) or were dropped as stale, never lost
    assert s.dropped.get("actor_failure", 0) >= 1
    assert set(s.dropped) <= {"stale", "actor_failure"}
    frames = [e for e in read_events(tmp_path / "out" / "events.msgpack") if e["type"] == "frame"]
    assert len(frames) == s.processed and s.processed > processed_then
    # detection resumed: frames after the kill show detected (not predicted) faces again
    later = frames[processed_then + 5:]
    assert any(f["faces"] and not any(face.get("predicted") for face in f["faces"]) for f in later)
