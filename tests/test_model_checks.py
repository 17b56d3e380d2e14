"""Files built at set-up are installed only when they compute their reference outputs (made from
the pinned source models) within their tolerance; the file that passed is the one that loads."""
import json
import shutil

import numpy as np
import pytest

from models.checks import REFERENCE_DIR, check_built, reference_path
from models.files import ModelFileError, derive, model_dir, model_path, sha256_of
from models.registry import ModelRegistry

BUILT = ("centerface-int8", "fer-mini-xception-tflite", "dlib-resnet-v1-onnx")


@pytest.fixture(scope="module")
def registry():
    return ModelRegistry()


@pytest.fixture
def installed_dir():
    """The model folder set-up installed into (ask for it before own_model_dir)."""
    return model_dir()


@pytest.fixture
def own_model_dir(registry, tmp_path, monkeypatch):
    """A model folder holding only the fetched source of the TFLite expression model."""
    source = registry.get("fer-mini-xception")
    (tmp_path / source.file).symlink_to(model_dir() / source.file)
    monkeypatch.setenv("FACELIVE_MODEL_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", BUILT)
def test_installed_built_file_computes_its_reference(registry, name):
    entry = registry.get(name)
    result = check_built(entry, model_path(entry))
    assert result.passed, result.describe()
    assert len(np.load(reference_path(entry))["images" if entry.task == "detection" else "chips"]) >= 5


def test_every_built_entry_has_a_reference_and_a_tolerance(registry):
    built = sorted(e.name for e in registry.entries.values() if e.made_from)
    assert built == sorted(BUILT)
    assert sorted(p.stem for p in REFERENCE_DIR.glob("*.npz")) == sorted(BUILT)


def test_a_detector_that_moves_or_loses_faces_fails_its_check(registry):
    """The fp32 source passes the int8 file's check; the same network at a quarter of the input size
    finds the faces elsewhere or not at all."""
    import dataclasses

    entry = registry.get("centerface-int8")
    fp32 = model_path(registry.get("centerface"))
    assert check_built(entry, fp32).largest_difference < 0.01
    reference = np.load(reference_path(entry))
    small = dataclasses.replace(entry, name="centerface-int8-small")
    shrunk = {k: reference[k] for k in reference.files} | {"max_side": 96}
    target = reference_path(small)
    try:
        np.savez(target, **shrunk)
        result = check_built(small, fp32)
    finally:
        target.unlink()
    assert not result.passed and "centerface-int8-small" in result.describe()


def test_built_file_passes_and_its_check_is_recorded(registry, own_model_dir):
    entry = registry.get("fer-mini-xception-tflite")
    [built] = derive([registry.get("fer-mini-xception"), entry])
    record = json.loads((own_model_dir / f"{entry.file}.check.json").read_text())
    assert record["sha256"] == sha256_of(built) and record["largest_difference"] <= 1e-4
    assert model_path(entry) == built


def test_built_file_that_computes_otherwise_is_refused(registry, own_model_dir, monkeypatch):
    """A converter whose output is 1e-3 off (what a drifted TensorFlow could write) is not installed,
    and the message names the model, the difference and what to do."""
    entry = registry.get("fer-mini-xception-tflite")
    reference = np.load(reference_path(entry))
    shifted = own_model_dir / "reference"
    shifted.mkdir()
    np.savez(shifted / f"{entry.name}.npz", chips=reference["chips"], outputs=reference["outputs"] + 1e-3)
    monkeypatch.setattr("models.checks.REFERENCE_DIR", shifted)
    with pytest.raises(ModelFileError, match=r"fer-mini-xception-tflite': largest difference of its probabilities "
                                             r"from the reference outputs: 0.001, over the tolerance 0.0001.*make setup"):
        derive([registry.get("fer-mini-xception"), entry])
    assert not (own_model_dir / entry.file).exists()


def test_built_file_changed_after_its_check_is_refused_at_load(registry, installed_dir, own_model_dir):
    entry = registry.get("dlib-resnet-v1-onnx")
    installed = installed_dir / entry.file
    copy = own_model_dir / entry.file
    shutil.copy(installed, copy)
    with pytest.raises(ModelFileError, match="never checked against its reference outputs"):
        model_path(entry)
    shutil.copy(installed.with_name(installed.name + ".check.json"), own_model_dir)
    assert model_path(entry) == copy
    with open(copy, "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    with pytest.raises(ModelFileError, match="corrupt .*sha256 of the file that passed its check"):
        model_path(entry)
