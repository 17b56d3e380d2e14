"""Inference backends: each runs one model file on a float32 batch and returns its first output.
Sessions are built lazily and dropped when pickled, so a backend can be shipped to a Ray worker
and rebuilt there (insightface's rebuild-on-unpickle idea)."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


DEVICES = ("cpu", "gpu")


class DeviceError(RuntimeError):
    """A model asked for a GPU that it cannot run on. facelive never falls back to the CPU silently:
    a GPU pool running on CPU looks healthy while it is an order of magnitude slower."""


class Backend(ABC):
    def __init__(self, path: Path, threads: int = 1, device: str = "cpu"):
        if device not in DEVICES:
            raise ValueError(f"device {device!r} is not one of {DEVICES}")
        self.path = Path(path)
        self.threads = threads
        self.requested = device
        self._session = None

    def __getstate__(self):
        return {"path": self.path, "threads": self.threads, "requested": self.requested, "_session": None}

    def __setstate__(self, state):
        self.__dict__.update(state)

    @property
    def session(self):
        if self._session is None:
            session = self._load()
            where = self._placement(session)
            if self.requested == "gpu" and not where.startswith("cuda"):
                raise DeviceError(f"{self.path.name}: asked to run on a GPU, but {type(self).__name__} "
                                  f"placed it on {where}{self._why_not_gpu()}")
            self._session = session
        return self._session

    @property
    def device(self) -> str:
        """Where the loaded model really runs: "cpu" or "cuda:N"."""
        return self._placement(self.session)

    def _placement(self, session) -> str:
        return "cpu"

    def _why_not_gpu(self) -> str:
        return " (this backend has no GPU build here)"

    @abstractmethod
    def _load(self): ...

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray: ...


def onnx_providers(device: str, available: list[str]) -> list[str]:
    """ONNX Runtime's execution providers for a requested device, CPU only unless a GPU was asked."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise DeviceError(f"asked to run on a GPU, but this onnxruntime offers only {available}: install "
                          "the onnxruntime-gpu build (`pip install -e .[gpu]`, `make setup` on a machine "
                          "where nvidia-smi works)")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def without_initializer_inputs(model):
    """The model with its weights no longer listed as graph inputs. Files exported by old PyTorch
    versions (CenterFace among them) list every initializer as an input too; ONNX Runtime must then
    assume a caller may override them and folds nothing: on a 640x480 frame that doubles the time."""
    weights = {i.name for i in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in weights]
    if len(kept) < len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(kept)
        # weights no node reads (BatchNorm's num_batches_tracked) now draw a warning each: drop them
        used = {name for node in model.graph.node for name in node.input}
        unused = [i for i in model.graph.initializer if i.name not in used]
        for initializer in unused:
            model.graph.initializer.remove(initializer)
    return model


class OnnxRuntimeBackend(Backend):
    def _load(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        providers = onnx_providers(self.requested, ort.get_available_providers())
        return ort.InferenceSession(self._model_bytes(), options, providers=providers)

    def _placement(self, session) -> str:
        # ONNX Runtime drops a provider that fails to start (no cuDNN, no driver) with only a log line
        if session.get_providers()[0] == "CUDAExecutionProvider":
            return f"cuda:{session.get_provider_options()['CUDAExecutionProvider'].get('device_id', 0)}"
        return "cpu"

    def _why_not_gpu(self) -> str:
        return " (the CUDA provider did not start: check the CUDA and cuDNN libraries onnxruntime-gpu needs)"

    def _model_bytes(self) -> bytes:
        return self._onnx_model().SerializeToString()

    def _onnx_model(self):
        import onnx

        return without_initializer_inputs(onnx.load(str(self.path)))

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        name = self.session.get_inputs()[0].name
        return self.session.run(None, {name: batch})

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_all(batch)[0]


class OpenCVBackend(Backend):
    def _load(self):
        import cv2

        cv2.setNumThreads(self.threads)
        return cv2.dnn.readNet(str(self.path))

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        self.session.setInput(batch)
        return list(self.session.forward(self.session.getUnconnectedOutLayersNames()))

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_all(batch)[0]


def configure_tensorflow(threads: int) -> None:
    """TensorFlow's thread pools can only be sized before its first op runs; later calls fail, which
    is harmless here because the first caller in a process already sized them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass


class KerasBackend(Backend):
    def _load(self):
        configure_tensorflow(self.threads)
        import keras
        import tensorflow as tf

        if self.requested == "gpu" and not tf.config.list_logical_devices("GPU"):
            raise DeviceError(f"{self.path.name}: asked to run on a GPU, but TensorFlow sees none "
                              "(tensorflow-cpu, or no CUDA libraries: install facelive[gpu])")
        with tf.device("/GPU:0" if self.requested == "gpu" else "/CPU:0"):
            model = keras.models.load_model(str(self.path), compile=False)
            spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
            # one traced graph for every batch size: an eager call per face costs ~7x more
            call = tf.function(lambda x: model(x, training=False), input_signature=[spec], reduce_retracing=True)
            for size in self.BUCKETS[:4]:  # the first run of a batch shape builds its kernels (~0.1 s)
                call(np.zeros((size, *model.input_shape[1:]), np.float32))
        return call

    def _placement(self, session) -> str:
        return "cuda:0" if self.requested == "gpu" else "cpu"

    # batches are padded up to one of these sizes, so only a handful of shapes ever run
    BUCKETS = (1, 2, 4, 8, 16, 32)

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        size = next((b for b in self.BUCKETS if b >= n), n)
        if size > n:
            batch = np.concatenate([batch, np.zeros((size - n, *batch.shape[1:]), batch.dtype)])
        return self.session(batch).numpy()[:n]


class DlibEmbeddingBackend(Backend):
    """dlib's ResNet face descriptor on already-aligned 150x150 RGB chips."""

    def _load(self):
        import dlib

        return dlib.face_recognition_model_v1(str(self.path))

    def run(self, batch: np.ndarray) -> np.ndarray:
        chips = [np.ascontiguousarray(c) for c in batch]
        return np.asarray(self.session.compute_face_descriptor(chips), dtype=np.float32)


class TFLiteBackend(Backend):
    """A TensorFlow Lite flatbuffer on LiteRT's interpreter (XNNPACK): the `ai-edge-litert` wheel
    carries no TensorFlow, so a process that runs only this never pays TensorFlow's import and memory."""

    # batches are padded up to one of these sizes, so the interpreter is re-planned only rarely.
    # Larger batches run in parts: the interpreter's memory keeps the size of the largest batch it
    # ever ran (mini-Xception: +18 MB after 32 faces, +5 MB after 8, at the same ms a face), so the
    # largest is run once at load and the process does not grow the first time a backlog comes
    BUCKETS = (1, 2, 4, 8)

    def _load(self):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
        source = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(source["index"], [self.BUCKETS[-1], *source["shape"][1:]])
        interpreter.allocate_tensors()
        interpreter.invoke()
        return interpreter

    def run(self, batch: np.ndarray) -> np.ndarray:
        largest = self.BUCKETS[-1]
        if len(batch) > largest:
            return np.concatenate([self.run(batch[i:i + largest]) for i in range(0, len(batch), largest)])
        interpreter = self.session
        n = len(batch)
        size = next((b for b in self.BUCKETS if b >= n), n)
        if size > n:
            batch = np.concatenate([batch, np.zeros((size - n, *batch.shape[1:]), batch.dtype)])
        source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        if source["shape"][0] != size:
            interpreter.resize_tensor_input(source["index"], [size, *batch.shape[1:]])
            interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], np.ascontiguousarray(batch, np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])[:n].copy()


BACKENDS = {
    "onnxruntime": OnnxRuntimeBackend,
    "opencv": OpenCVBackend,
    "keras": KerasBackend,
    "tflite": TFLiteBackend,
}
