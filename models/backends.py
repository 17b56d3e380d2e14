"""Inference backends: each runs one model file on a float32 batch and returns its first output.
Sessions are built lazily and dropped when pickled, so a backend can be shipped to a Ray worker
and rebuilt there (insightface's rebuild-on-unpickle idea)."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class Backend(ABC):
    def __init__(self, path: Path, threads: int = 1):
        self.path = Path(path)
        self.threads = threads
        self._session = None

    def __getstate__(self):
        return {"path": self.path, "threads": self.threads, "_session": None}

    def __setstate__(self, state):
        self.__dict__.update(state)

    @property
    def session(self):
        if self._session is None:
            self._session = self._load()
        return self._session

    @abstractmethod
    def _load(self): ...

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray: ...


def without_initializer_inputs(model):
    """The model with its weights no longer listed as graph inputs. Files exported by old PyTorch
    versions (CenterFace among them) list every initializer as an input too; ONNX Runtime must then
    assume a caller may override them and folds nothing: on a 640x480 frame that doubles the time."""
    weights = {i.name for i in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in weights]
    if len(kept) < len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(kept)
    return model


class OnnxRuntimeBackend(Backend):
    def _load(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        providers = [p for p in ort.get_available_providers() if p in ("CUDAExecutionProvider",)]
        return ort.InferenceSession(self._model_bytes(), options, providers=providers + ["CPUExecutionProvider"])

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

        model = keras.models.load_model(str(self.path), compile=False)
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        # one traced graph for every batch size: an eager call per face costs ~7x more
        call = tf.function(lambda x: model(x, training=False), input_signature=[spec], reduce_retracing=True)
        for size in self.BUCKETS[:4]:  # the first run of a batch shape builds its kernels (~0.1 s)
            call(np.zeros((size, *model.input_shape[1:]), np.float32))
        return call

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


BACKENDS = {
    "onnxruntime": OnnxRuntimeBackend,
    "opencv": OpenCVBackend,
    "keras": KerasBackend,
}
