"""GPU pools without a GPU: Ray is told it has one (Ray places by what it is told), so a pool that
asks for a GPU is placed, and must refuse to start rather than run on the CPU unnoticed."""
import os
import time

import pytest

from core.config import ConfigError, PipelineConfig, PoolSpec
from tests.conftest import cut_clip

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_with_a_gpu(ray_env):
    import ray

    ray.init(num_cpus=2, num_gpus=1, object_store_memory=400 * 2**20, include_dashboard=False,
             _node_ip_address="127.0.0.1", _temp_dir=ray_env, logging_level="warning",
             runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}})
    yield ray
    ray.shutdown()


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="a real GPU is here: the pool would start")
def test_a_gpu_pool_that_would_run_on_the_cpu_refuses_to_start(ray_with_a_gpu, tmp_path):
    from actors.pipeline import Pipeline

    config = PipelineConfig(sources=("unused.mp4",), pools=(PoolSpec("detection", num_cpus=0.5, num_gpus=1,
                                                                     priority=40),))
    pipeline = Pipeline(config, tmp_path)
    with pytest.raises(ConfigError, match="asked to run on a GPU"):
        pipeline.start()
    # a failed start leaves no actor of the run behind; ray.kill is asynchronous, so a call sent at
    # once may still be answered: ask until the scheduler is gone, or fail after a generous deadline
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ray_with_a_gpu.get(pipeline.scheduler.summary.remote(), timeout=30)
        except ray_with_a_gpu.exceptions.RayActorError:
            return
        time.sleep(0.2)
    pytest.fail("the scheduler of a run whose start failed still answers after 60 s")


def test_cpu_pools_report_where_each_model_runs(ray_with_a_gpu, tmp_path):
    from actors.pipeline import Pipeline

    pipeline = Pipeline(PipelineConfig(sources=(cut_clip(tmp_path / "clip.mp4", 2),)), tmp_path / "out")
    pipeline.start()
    try:
        devices = ray_with_a_gpu.get(pipeline.scheduler.summary.remote()).devices
    finally:
        pipeline.shutdown()
    assert devices == {"detection": {PipelineConfig().detector_model: "cpu", "dlib-5pt": "cpu"},
                       "expression": {"fer-mini-xception-tflite": "cpu"},
                       "age_gender": {"cydral-age-v1": "cpu", "cydral-gender-v1": "cpu"},
                       "identity": {"dlib-resnet-v1-onnx": "cpu"}}
