"""dlib's 5-point shape predictor, run inside each detected box. The age, gender and identity models
were trained on chips cut from these exact points, so facelive aligns with them rather than with
the detector's own landmarks (which mark other spots: eye centres, nose tip, mouth corners)."""
from __future__ import annotations

import numpy as np

from models.backends import Backend


class LandmarkRefiner(Backend):
    def _load(self):
        import dlib

        return dlib.shape_predictor(str(self.path))

    def run(self, batch):
        raise TypeError("LandmarkRefiner takes an image and boxes: call refine()")

    def refine(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, 5, 2) landmarks for the N boxes of one RGB uint8 image."""
        import dlib

        out = np.zeros((len(boxes), 5, 2), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            shape = self.session(image, dlib.rectangle(int(x1), int(y1), int(x2), int(y2)))
            out[i] = [(shape.part(j).x, shape.part(j).y) for j in range(5)]
        return out
