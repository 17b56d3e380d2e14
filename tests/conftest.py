import os
import sys
from pathlib import Path

import pytest

from core.geometry import iou  # noqa: F401  (tests import it from here)

MEDIA = Path(__file__).parent / "media"
PHOTOS = MEDIA / "photos"
VIDEO = MEDIA / "video"
GALLERY = MEDIA / "gallery"

# Keep TensorFlow's start-up chatter out of the test log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Ray reads these when it is imported, and test modules import it while being collected: every
# Ray the tests start must stay on 127.0.0.1 (see actors/cluster.py and design.md).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def cut_clip(dst, frames: int, start: int = 0, src=None, fps: float = 25) -> str:
    """The first `frames` frames of a video (default crossing_faces.mp4) from `start`, as a new file
    whose header says `fps`."""
    import cv2

    video, writer = cv2.VideoCapture(str(src or VIDEO / "crossing_faces.mp4")), None
    video.set(cv2.CAP_PROP_POS_FRAMES, start)
    for _ in range(frames):
        ok, image = video.read()
        writer = writer or cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, image.shape[1::-1])
        writer.write(image)
    writer.release()
    return str(dst)


def wait_for_processed(scheduler, count: int, deadline_s: float = 120.0) -> None:
    """Until the run's scheduler has processed `count` frames, or `deadline_s` has passed."""
    import time

    import ray

    deadline = time.monotonic() + deadline_s
    while ray.get(scheduler.summary.remote()).processed < count and time.monotonic() < deadline:
        time.sleep(0.05)


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Every result is counted and printed by now: end the process with the run's own status and
    skip the interpreter's teardown. There the native libraries this process loaded (TensorFlow,
    ONNX Runtime, dlib, Ray's core worker threads) once crashed with SIGSEGV after all 368 tests had
    passed, which made `make test` fail on a clean run."""
    if _EXIT_STATUS in config.stash:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash[_EXIT_STATUS])


_EXIT_STATUS = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def registry():
    from models.registry import ModelRegistry

    return ModelRegistry()


@pytest.fixture(scope="session")
def analyzer(registry):
    from models.analyzer import FaceAnalyzer

    return FaceAnalyzer(registry, threads=2)


@pytest.fixture(scope="session")
def photo():
    from core.media import load_image

    return lambda name: load_image(PHOTOS / name)


@pytest.fixture(scope="session")
def ray_env(tmp_path_factory):
    """Every Ray started by the tests stays on 127.0.0.1, keeps its files in a short temp dir
    (socket paths are limited to 107 bytes) and needs no token."""
    import tempfile

    from actors.cluster import local_only_environment

    local_only_environment()
    tmp = tempfile.mkdtemp(prefix="flray-", dir="/tmp")
    os.makedirs(os.path.join(tmp, "ray"))  # where Cluster writes its address file
    os.environ["RAY_TMPDIR"] = tmp
    yield tmp


@pytest.fixture(scope="module")
def local_ray(ray_env):
    import ray

    ray.init(num_cpus=2, object_store_memory=400 * 2**20, include_dashboard=False,
             _node_ip_address="127.0.0.1", _temp_dir=ray_env, logging_level="warning",
             runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}})
    yield ray
    ray.shutdown()
