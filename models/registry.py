"""The one model registry: name -> `ModelEntry`, and one loader per task. The built-in zoo comes
from `zoo.toml`; users add entries with `[[model]]` tables in their own TOML config."""
from __future__ import annotations

import tomllib
from pathlib import Path

from models.backends import BACKENDS, DlibEmbeddingBackend
from models.detector import DetectorConfig, FaceDetector
from models.entry import ModelEntry, ModelEntryError
from models.faults import FaultyModel
from models.files import model_path
from models.landmarks import LandmarkRefiner
from models.recognisers import AgeEstimator, Classifier, FaceEmbedder

ZOO = Path(__file__).with_name("zoo.toml")

# the models each recognition task runs unless the config names others
DEFAULT_MODELS = {
    # fp32 for batch work at 640; the pipeline detects at 480 with int8 (PipelineConfig.detector_model)
    "detection": "centerface",
    "landmarks": "dlib-5pt",
    "age": "cydral-age-v1",
    "gender": "cydral-gender-v1",
    # the Keras file converted at set-up: same outputs (to 1e-6), no TensorFlow in the actor
    "expression": "fer-mini-xception-tflite",
    # dlib's network converted to ONNX at set-up: dlib's embeddings (to 1e-6) for 1/11 of the CPU;
    # "dlib-resnet-v1" runs the same network on dlib itself
    "identity": "dlib-resnet-v1-onnx",
}


def _read_entries(path: Path) -> list[ModelEntry]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ModelEntryError(f"{path}: cannot read model entries: {error}") from error
    return [ModelEntry.from_table(t, str(path), Path(path).parent) for t in data.get("model", [])]


class ModelRegistry:
    def __init__(self, entries: list[ModelEntry] | None = None):
        self.entries: dict[str, ModelEntry] = {}
        for entry in _read_entries(ZOO) if entries is None else entries:
            self.add(entry)

    def add(self, entry: ModelEntry) -> None:
        entry.validate()
        self.entries[entry.name] = entry

    def add_file(self, path: Path) -> list[ModelEntry]:
        """Register every `[[model]]` table of a TOML file; returns what it added."""
        added = _read_entries(path)
        for entry in added:
            self.add(entry)
        return added

    def get(self, name: str) -> ModelEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise ModelEntryError(f"no model named {name!r}; known: {sorted(self.entries)}") from None

    def load(self, name: str, threads: int = 1, device: str = "cpu", **options):
        """A ready model object for the entry: FaceDetector, LandmarkRefiner, AgeEstimator,
        Classifier or FaceEmbedder (behind a FaultyModel where the entry injects a fault). Checks
        the file's sha256 first. With device "gpu" the model is built at once and a DeviceError
        raised unless it really runs on a GPU (`.device` says where)."""
        entry = self.get(name)
        model = self._load(entry, threads, device, **options)
        return FaultyModel(model, entry.fault, entry.fault_marker) if entry.fault else model

    def _load(self, entry: ModelEntry, threads: int, device: str, **options):
        return build_model(entry, model_path(entry), threads, device, **options)


def build_model(entry: ModelEntry, path: Path, threads: int = 1, device: str = "cpu", **options):
    """The model object for `entry` run from the file at `path`, unchecked: the registry checks its
    files first; set-up runs a file it has just built on reference inputs before installing it."""
    name = entry.name
    if entry.task == "detection":
        model = FaceDetector(path, entry.backend, options.get("config", DetectorConfig()), threads, device)
        backend = model.net
    elif entry.task == "landmarks":
        model = backend = LandmarkRefiner(path, threads, device)
    elif entry.task == "identity" and entry.backend == "dlib":
        backend = DlibEmbeddingBackend(path, threads, device)
        model = FaceEmbedder(entry, backend)
    elif entry.backend not in BACKENDS:
        raise ModelEntryError(f"{entry.source}: model {name!r}: backend {entry.backend!r} cannot run a {entry.task} model")
    else:
        backend = BACKENDS[entry.backend](path, threads, device)
        # an identity graph is fed the uint8 chips as they are: dlib-resnet-v1-onnx normalises them itself
        kind = {"identity": FaceEmbedder, "age": AgeEstimator}.get(entry.task, Classifier)
        model = kind(entry, backend)
    if device == "gpu":
        backend.session  # noqa: B018 (builds it: a GPU that cannot be had fails here, not mid-stream)
    return model
