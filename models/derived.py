"""Files derived at set-up from shipped model files: CenterFace quantized to int8, calibrated on
facelive's own test media only (no download, no user data); mini-Xception as TensorFlow Lite;
dlib's ResNet as ONNX. Each is installed only once it computes its reference outputs
(models/checks.py)."""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

from models.detector import DetectorConfig, FaceDetector
from models.dlib_onnx import dlib_resnet_to_onnx

MEDIA = Path(__file__).resolve().parent.parent / "tests" / "media"


def folded_centerface(path: Path):
    """CenterFace as ONNX Runtime runs it (weights folded, any input size), at opset 13, the
    lowest opset with per-channel QDQ, with every node named so calibration can exclude some."""
    from onnx import version_converter

    model = version_converter.convert_version(FaceDetector(path).net._onnx_model(), 13)
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{i}"
    return model


def calibration_images(media: Path = MEDIA, every: int = 9, offset: int = 1) -> list[np.ndarray]:
    """Frames of the shared videos that the detector checks do not use (offset from their every-third
    frames), and the gallery photos: RGB uint8, in a fixed order."""
    from core.media import VideoFrames, load_image

    images = []
    for video in sorted((media / "video").glob("*.mp4")):
        with VideoFrames(video) as frames:
            images += [image for index, _, image in frames if index % every == offset]
    images += [load_image(p) for p in sorted((media / "gallery").glob("*/*")) if p.suffix in (".jpg", ".png")]
    return images


class _CalibrationBlobs:
    """onnxruntime.quantization's calibration reader: each image as the pipeline's detector feeds
    it, made only when asked for, so that calibrating one image at a time holds one blob at once.
    set_range and len are what quantize_static's CalibStridedMinMax uses to feed it in slices."""

    def __init__(self, images, max_side: int):
        self._images = images
        self._config = DetectorConfig(max_side=max_side)
        self.set_range(0, len(images))

    def __len__(self) -> int:
        return len(self._images)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self._images[start_index:end_index])

    def get_next(self):
        image = next(self._next, None)
        return None if image is None else {"input.1": self._blob(image)}

    def _blob(self, image: np.ndarray) -> np.ndarray:
        import cv2

        size = self._config.input_size(image.shape[1], image.shape[0])
        return cv2.dnn.blobFromImage(image, 1.0, size, (0, 0, 0), swapRB=False, crop=False)


def pipeline_max_side() -> int:
    """The detector input size the pipeline runs at: the one to calibrate at."""
    from core.config import PipelineConfig

    return PipelineConfig().detector_max_side


# CenterFace's nodes (in file order) that stay in float; every other node runs in int8. Its input is
# raw 0-255 pixels, so the stem's activations scale with the frame's brightness, and the int8 step
# that bright frames set swallows dark frames' faces (hamilton_clip). Fraction of fp32's faces kept
# at 480 on the 201 shared images (2026-11-27, these ranges), nodes 16 on in int8 and also: no other
# 0.992; node 9 0.994 (this choice); 10-15 0.986; 7-8 0.973; 5-6 0.965; 4 0.967; 0-3 0.82, as low as
# every node in int8.
FLOAT_NODES = (*range(0, 9), *range(10, 16))
# Ranges cut at the 99.999th percentile of |activation|: MinMax ranges, which the brightest pixels
# of any frame set, kept 0.986 with only nodes 16-72 in int8, where these ranges keep 0.994.
CALIBRATION = {"CalibPercentile": 99.999, "CalibTensorRangeSymmetric": True,
               # histograms gathered one image at a time: all images' activations at once need GBs
               "CalibStridedMinMax": 1}


def quantize_centerface(source: Path, target: Path) -> Path:
    """Static int8 (QDQ, per-channel weights, percentile ranges) of all but FLOAT_NODES, calibrated
    on calibration_images() at the pipeline's detector size."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = folded_centerface(source)
    in_float = [model.graph.node[i].name for i in FLOAT_NODES]
    with tempfile.TemporaryDirectory() as tmp:
        folded, prepared = Path(tmp) / "folded.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(model, folded)
        quant_pre_process(str(folded), str(prepared), skip_symbolic_shape=True)
        # onnxruntime's calibrator prints a line per calibration batch into `make setup`'s output
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepared), str(target), _CalibrationBlobs(calibration_images(), pipeline_max_side()),
                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile,
                nodes_to_exclude=in_float, extra_options=CALIBRATION)
    return target


def keras_to_tflite(source: Path, target: Path) -> Path:
    """A Keras model as a float32 TensorFlow Lite flatbuffer with a free batch dimension."""
    from models.backends import configure_tensorflow

    configure_tensorflow(1)
    import keras
    import tensorflow as tf

    model = keras.models.load_model(str(source), compile=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    # the converter prints the saved graph's signature, a line per weight, into `make setup`'s output
    with contextlib.redirect_stdout(io.StringIO()):
        target.write_bytes(converter.convert())
    return target


RECIPES = {
    "int8-static": quantize_centerface,
    "tflite": keras_to_tflite,
    "dlib-onnx": dlib_resnet_to_onnx,
}
