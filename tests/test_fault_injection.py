"""Fault injection by config (models/faults.py): a model that raises, hangs, answers the wrong
shape or kills its process, in each stage and each mode. Every run ends in bounded time with every
frame accounted for by reason, and lossless loses no frame to a single fault."""
import json
import time
from dataclasses import asdict, replace

import pytest

from core.config import PipelineConfig, PoolSpec
from core.events import read_events
from models.files import model_dir
from models.registry import DEFAULT_MODELS, ModelRegistry
from tests.conftest import cut_clip

pytestmark = pytest.mark.ray

FRAMES = 40
# (task, model role, fault, mode): each stage and each kind of fault at least once, both modes
CASES = [
    ("detection", "detection", "raise@6", "lossless"),
    ("detection", "detection", "exit@6", "lossless"),
    ("detection", "detection", "hang@6", "live"),
    ("expression", "expression", "hang@4", "lossless"),
    ("age_gender", "age", "shape@4", "lossless"),
    # live on a busy machine asks identity for few faces (new tracks only): the first call must do
    ("identity", "identity", "exit@1", "live"),
    ("expression", "expression", "raise@4", "live"),
]


def faulty_models_file(tmp_path, role: str, fault: str) -> tuple[str, str]:
    """A config with one [[model]] entry: the real model of `role` with a fault, fired once a run."""
    entry = ModelRegistry().get(DEFAULT_MODELS[role])
    table = {k: v for k, v in asdict(entry).items() if v is not None and k not in ("source", "package", "member")}
    table |= {"name": f"{entry.name}-faulty", "file": str(model_dir() / entry.file), "fault": fault,
              "fault_marker": str(tmp_path / "fault-fired")}
    lines = ["[[model]]"] + [f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in table.items()]
    path = tmp_path / "faulty.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path), table["name"]


@pytest.mark.parametrize("task,role,fault,mode", CASES, ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in CASES])
def test_a_fault_ends_the_run_with_every_frame_accounted_for(local_ray, tmp_path, task, role, fault, mode):
    from actors.pipeline import Pipeline

    clip = cut_clip(tmp_path / "clip.mp4", FRAMES, start=40)
    models_file, name = faulty_models_file(tmp_path, role, fault)
    config = PipelineConfig(sources=(clip,), mode=mode, realtime=mode == "live", models_file=models_file,
                            call_timeout_s=8.0, pools=(replace(PipelineConfig().pool(task), model=name),))
    pipeline = Pipeline(config, tmp_path / "out")
    pipeline.start()
    started = time.monotonic()
    result = pipeline.run()
    assert time.monotonic() - started < 240
    assert (tmp_path / "fault-fired").exists(), "the fault never fired: the test proves nothing"
    s = result.summary
    assert s.captured == FRAMES
    assert s.captured == s.processed + sum(s.dropped.values())
    frames = [e["seq"] for e in read_events(tmp_path / "out" / "events.msgpack") if e["type"] == "frame"]
    assert len(frames) == s.processed and frames == sorted(frames)
    if mode == "lossless":
        assert (s.processed, s.dropped) == (FRAMES, {}), s.dropped
    else:
        assert set(s.dropped) <= {"stale", "actor_failure", "timeout"}


def test_a_pool_of_zero_is_never_asked(local_ray, tmp_path):
    """`--pool identity=0`: no identity jobs are planned, so lossless cannot wait for them."""
    from actors.pipeline import Pipeline

    clip = cut_clip(tmp_path / "clip.mp4", 20, start=40)
    config = PipelineConfig(sources=(clip,), mode="lossless", pools=(PoolSpec("identity", count=0, priority=10),))
    pipeline = Pipeline(config, tmp_path / "out")
    pipeline.start()
    s = pipeline.run().summary
    assert (s.processed, s.dropped) == (20, {})
    assert "identity" not in s.stages


def test_a_pool_actor_that_never_gets_ready_is_killed_not_given_work(local_ray):
    """Start-up past its deadline: a clear error, and the actor is neither registered nor left."""
    import asyncio

    import ray

    from core.config import ConfigError
    from schedulers.policy import SchedulingPolicy
    from schedulers.pools import PoolManager

    @ray.remote(num_cpus=0)
    class NeverReady:
        def __init__(self, marker):
            import time as t

            t.sleep(3600)

        def devices(self):
            return {}

    handles = []

    def factory(spec, config, name):
        handles.append(NeverReady.options(name=f"never-{name}").remote(name))
        return handles[-1]

    config = PipelineConfig(pools=(PoolSpec("identity", count=1, num_cpus=0, priority=10),))
    policy = SchedulingPolicy({"identity": 10})
    pools = PoolManager(config, policy, factory)
    with pytest.raises(ConfigError, match="identity-1 not running after 2 s"):
        asyncio.run(pools._start([config.pool("identity")], 2.0))
    assert policy.workers == {}
    with pytest.raises(ray.exceptions.RayActorError):  # killed: a call fails instead of waiting for ever
        ray.get(handles[0].__ray_ready__.remote(), timeout=60)


def test_an_unwritable_video_ends_the_run_with_an_error_naming_it(local_ray, tmp_path):
    from actors.pipeline import Pipeline
    from core.media import MediaError

    clip = cut_clip(tmp_path / "clip.mp4", 10, start=40)
    out = tmp_path / "out"
    (out / "annotated.mp4").mkdir(parents=True)  # a folder where the video should go
    pipeline = Pipeline(PipelineConfig(sources=(clip,), mode="lossless"), out)
    pipeline.start()
    with pytest.raises(MediaError, match="annotated.mp4: cannot write video"):
        pipeline.run()
