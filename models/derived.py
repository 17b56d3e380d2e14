"""Files derived at set-up from shipped model files: CenterFace quantized to int8, calibrated on
facelive's own test media only (no download, no user data)."""
from __future__ import annotations

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


class _Blobs:
    """onnxruntime.quantization's calibration reader over detector input blobs."""

    def __init__(self, blobs):
        self._blobs = iter(blobs)

    def get_next(self):
        blob = next(self._blobs, None)
        return None if blob is None else {"input.1": blob}


def detector_blobs(images) -> list[np.ndarray]:
    """Each image as the detector feeds it by default."""
    import cv2

    config = DetectorConfig()
    return [cv2.dnn.blobFromImage(image, 1.0, config.input_size(image.shape[1], image.shape[0]), (0, 0, 0),
                                  swapRB=False, crop=False) for image in images]


# CenterFace's nodes (in file order) that run in int8. Fraction of fp32's faces kept on 201 shared
# images at IoU 0.5 (2026-11-27, MinMax): every node in int8 0.75 (landmarks within 3 px); the FPN
# neck and heads (nodes 100 on) in float 0.77 (3 px); the stem and first blocks (nodes 0-15) in float
# too 0.978 (landmarks within 3 px or 5 % of the face's width); the last backbone stage (73-99) in
# float too 0.988 (0.990 by IoU alone). Dark frames (hamilton_clip) lose most: their small early
# activations fall under the int8 step that bright frames set.
INT8_NODES = range(16, 73)


def quantize_centerface(source: Path, target: Path) -> Path:
    """Static int8 (QDQ, per-channel weights, MinMax ranges) of INT8_NODES, calibrated on
    calibration_images(); deterministic for a given onnxruntime, so its sha256 can be recorded."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = folded_centerface(source)
    in_float = [n.name for i, n in enumerate(model.graph.node) if i not in INT8_NODES]
    with tempfile.TemporaryDirectory() as tmp:
        folded, prepared = Path(tmp) / "folded.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(model, folded)
        quant_pre_process(str(folded), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(target), _Blobs(detector_blobs(calibration_images())), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=in_float)
    return target


def keras_to_tflite(source: Path, target: Path) -> Path:
    """A Keras model as a float32 TensorFlow Lite flatbuffer with a free batch dimension."""
    from models.backends import configure_tensorflow

    configure_tensorflow(1)
    import keras
    import tensorflow as tf

    model = keras.models.load_model(str(source), compile=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    target.write_bytes(converter.convert())
    return target


RECIPES = {
    "int8-static": quantize_centerface,
    "tflite": keras_to_tflite,
    "dlib-onnx": dlib_resnet_to_onnx,
}
