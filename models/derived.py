"""Files derived at set-up from shipped model files: CenterFace quantized to int8, calibrated on
facelive's own test media only (no download, no user data)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from models.detector import FaceDetector

MEDIA = Path(__file__).resolve().parent.parent / "tests" / "media"


def folded_centerface(path: Path):
    """CenterFace as ONNX Runtime runs it (weights folded, any input size), at opset 13, the
    lowest opset with per-channel QDQ, with every node named so calibration can exclude some."""
    import onnx
    from onnx import version_converter

    model = version_converter.convert_version(FaceDetector(path).net._onnx_model(), 13)
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{i}"
    return model


def calibration_images(media: Path = MEDIA, every: int = 3, offset: int = 1) -> list[np.ndarray]:
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


def detector_blobs(images, max_sides=(640,)) -> list[np.ndarray]:
    """Each image as the detector would feed it at each of the given longest sides."""
    import cv2

    from models.detector import DetectorConfig

    blobs = []
    for side in max_sides:
        sizer = FaceDetector.__new__(FaceDetector)
        sizer.config = DetectorConfig(max_side=side)
        for image in images:
            size = sizer.input_size(image.shape[1], image.shape[0])
            blobs.append(cv2.dnn.blobFromImage(image, 1.0, size, (0, 0, 0), swapRB=False, crop=False))
    return blobs


def quantize_centerface(source: Path, target: Path, method: str = "Percentile", images=None,
                        max_sides=(640,), exclude=(), extra_options=None) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        folded, prepared = Path(tmp) / "folded.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(folded_centerface(source), folded)
        quant_pre_process(str(folded), str(prepared), skip_symbolic_shape=True)
        blobs = detector_blobs(calibration_images() if images is None else images, max_sides)
        quantize_static(
            str(prepared), str(target), _Blobs(blobs), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, method), nodes_to_exclude=list(exclude),
            extra_options=extra_options or {})
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
}
