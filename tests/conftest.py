import os
from pathlib import Path

import pytest

MEDIA = Path(__file__).parent / "media"
PHOTOS = MEDIA / "photos"
VIDEO = MEDIA / "video"
GALLERY = MEDIA / "gallery"

# Keep TensorFlow's start-up chatter out of the test log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0


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
