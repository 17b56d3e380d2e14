"""The model-side speed levers keep the models' outcomes: weights folded as constants, int8
detection, TensorFlow Lite expression, and the execution device each model really runs on."""
import numpy as np
import pytest

from models.detector import FaceDetector
from models.files import model_path

ONNX_MODELS = ("centerface", "cydral-age-v1", "cydral-gender-v1")


@pytest.mark.parametrize("name", ONNX_MODELS)
def test_loaded_onnx_graph_lists_no_weights_as_inputs(registry, name):
    model = registry.load(name)
    backend = model.net if isinstance(model, FaceDetector) else model.backend
    # ONNX Runtime exposes initializers that are also graph inputs as overridable: those it never folds
    assert backend.session.get_overridable_initializers() == []


def test_centerface_boxes_match_the_file_as_shipped(registry, photo):
    import onnx
    import onnxruntime as ort
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    path = model_path(registry.get("centerface"))
    shipped = onnx.load(str(path))
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in shipped.graph.input}
    shipped = update_inputs_outputs_dims(
        shipped, dims | {"input.1": ["B", 3, "H", "W"]},
        {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"], "540": ["B", 10, "h", "w"]})
    detector = FaceDetector(path)
    as_shipped = FaceDetector(path)
    as_shipped.net._session = ort.InferenceSession(shipped.SerializeToString(), providers=["CPUExecutionProvider"])
    assert as_shipped.net.session.get_overridable_initializers()  # the old path really is the slow one
    for name in ("two_people.jpg", "messi5.jpg"):
        image = photo(name)
        new, old = detector.detect(image), as_shipped.detect(image)
        assert len(new) == len(old) >= 1
        np.testing.assert_allclose(new.boxes, old.boxes, atol=0.01)
        np.testing.assert_allclose(new.landmarks, old.landmarks, atol=0.01)
        np.testing.assert_allclose(new.scores, old.scores, atol=1e-4)
