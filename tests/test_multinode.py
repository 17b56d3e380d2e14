"""Two Ray nodes on this machine: pools that ask for a custom resource land on the node that has it
(how `ray start --resources='{"recognition": 2}'` workers are used), and the results stay right."""
import pytest

from core.config import PipelineConfig, PoolSpec
from core.events import read_events
from tests.conftest import cut_clip

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def two_nodes(ray_env):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 200 * 2**20, "temp_dir": ray_env,
        "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    # the worker stands for a recognition machine; "gpu_sim" stands for its GPU
    worker = cluster.add_node(num_cpus=2, object_store_memory=200 * 2**20, node_ip_address="127.0.0.1",
                              resources={"recognition": 2, "gpu_sim": 1})
    ray.init(address=cluster.address, logging_level="warning",
             runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}})
    yield cluster, worker.node_id
    ray.shutdown()
    cluster.shutdown()


def test_pools_land_where_their_resources_are(two_nodes, tmp_path):
    from actors.pipeline import Pipeline

    cluster, worker_node = two_nodes
    clip = cut_clip(tmp_path / "clip.mp4", 40, start=100)  # faces enter from frame 52 on
    config = PipelineConfig(sources=(str(clip),), pools=(
        PoolSpec("detection", num_cpus=0.5, resources={"gpu_sim": 0.5}, priority=40),
        PoolSpec("expression", num_cpus=0.25, priority=30),
        PoolSpec("age_gender", num_cpus=0.25, resources={"recognition": 1}, priority=20),
        PoolSpec("identity", count=2, num_cpus=0.5, resources={"recognition": 0.5}, priority=10)))
    pipeline = Pipeline(config, tmp_path / "out")
    pipeline.start()
    import ray

    nodes = {task: [node for node, _ in places]
             for task, places in ray.get(pipeline.scheduler.pool_places.remote()).items()}
    assert nodes["detection"] == [worker_node]
    assert nodes["age_gender"] == [worker_node]
    assert nodes["identity"] == [worker_node, worker_node]
    result = pipeline.run()
    assert (result.summary.captured, result.summary.processed) == (40, 40)
    faces = [f for e in read_events(tmp_path / "out" / "events.msgpack") if e["type"] == "frame"
             for f in e["faces"] if f["track_id"] >= 0]
    assert faces and all(f["gender"] in ("male", "female") and f["age"] is not None for f in faces[-20:])
