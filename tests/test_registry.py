"""The model registry: user models by config, and clear errors for missing or corrupt files."""
import numpy as np
import pytest

from models.entry import ModelEntryError
from models.files import ModelFileError, sha256_of
from models.registry import ModelRegistry


def test_user_keras_attribute_model_by_config_only(tmp_path, analyzer, photo):
    import keras

    # a tiny "smiling" head: the mean brightness of the mouth region decides, so the outcome is
    # known without training
    inputs = keras.Input((48, 48, 3))
    x = keras.layers.Cropping2D(((30, 6), (12, 12)))(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(2, activation="softmax", kernel_initializer="ones")(x)
    path = tmp_path / "smile.keras"
    keras.Model(inputs, x).save(path)
    config = tmp_path / "models.toml"
    config.write_text(f'''
[[model]]
name = "my-smile"
task = "attribute"
backend = "keras"
file = "smile.keras"
sha256 = "{sha256_of(path)}"
input_size = 48
color = "rgb"
layout = "nhwc"
crop_padding = 0.1
mean = [0.0]
scale = 0.00392156862745098
labels = ["not_smiling", "smiling"]
''')
    registry = ModelRegistry()
    added = registry.add_file(config)
    assert [e.name for e in added] == ["my-smile"]
    from models.analyzer import FaceAnalyzer

    custom = FaceAnalyzer(registry, tasks=("gender",), attributes=("my-smile",))
    result = custom.analyze(photo("obama.jpg"))
    scores = result.attributes["my-smile"]
    assert scores.labels == ("not_smiling", "smiling")
    assert scores.probs.shape == (1, 2)
    np.testing.assert_allclose(scores.probs.sum(1), 1, atol=1e-5)
    assert result.gender.best(0)[0] == "male"


def test_missing_file_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FACELIVE_MODEL_DIR", str(tmp_path))
    with pytest.raises(ModelFileError, match=r"centerface.onnx is missing; run `make setup`"):
        ModelRegistry().load("centerface")


def test_corrupt_file_is_refused(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("FACELIVE_MODEL_DIR", str(tmp_path))
    (tmp_path / "gender-v1.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="corrupt"):
        ModelRegistry().load("cydral-gender-v1")


def test_bad_entry_names_the_file_and_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[[model]]\nname = "x"\ntask = "age"\nbackend = "tensorrt"\nfile = "x.onnx"\n')
    with pytest.raises(ModelEntryError, match=r"bad.toml: model 'x': backend 'tensorrt'"):
        ModelRegistry().add_file(config)


def test_malformed_toml_names_the_file(tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text("[[model]\nname = ")
    with pytest.raises(ModelEntryError, match="broken.toml: cannot read model entries"):
        ModelRegistry().add_file(config)
