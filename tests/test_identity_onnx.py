"""dlib's face-recognition ResNet converted to ONNX (models/dlib_onnx.py) against dlib itself, on
every face of the shared photos and gallery: same descriptors, same decisions."""
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from core.gallery import GalleryConfig, GalleryIndex
from core.media import load_image
from models.dlib_onnx import DlibFormatError, dlib_resnet_to_onnx, read_dlib_resnet
from models.files import model_path
from models.registry import DEFAULT_MODELS

MEDIA = Path(__file__).parent / "media"
SAME_PERSON = 0.6  # dlib's own threshold on its raw descriptors


@pytest.fixture(scope="module")
def faces(analyzer):
    """(label, chip) of every face the detector finds in the photos and the gallery; the label is
    the person where the media README knows them from the file alone (one-person files)."""
    found = []
    for path in sorted(MEDIA.glob("photos/*")) + sorted(MEDIA.glob("gallery/*/*")):
        faces, crops = analyzer.stage(load_image(path))
        chips = crops.chips[analyzer.recognisers["identity"].crop.key]
        person = path.parent.name if path.parent.parent.name == "gallery" else None
        found += [(f"{path.relative_to(MEDIA)}#{i}", person, chip) for i, chip in enumerate(chips)]
    return found


@pytest.fixture(scope="module")
def descriptors(registry, faces):
    """Raw descriptors (dlib's scale, norm ~1.4) of each face from dlib and from the ONNX file."""
    chips = np.stack([chip for _, _, chip in faces])
    return {name: registry.load(name).backend.run(chips) for name in ("dlib-resnet-v1", "dlib-resnet-v1-onnx")}


def test_every_shared_face_gets_dlibs_descriptor(faces, descriptors):
    assert len(faces) >= 19  # 9 photos (two_people has 2) and 10 gallery images; messi's small face too
    dlib, onnx = descriptors["dlib-resnet-v1"], descriptors["dlib-resnet-v1-onnx"]
    assert onnx.shape == dlib.shape == (len(faces), 128)
    assert np.abs(onnx - dlib).max() <= 1e-3
    # dlib's descriptors have norm ~1.4: a lost mean subtraction or /256 moves them far from it
    assert np.allclose(np.linalg.norm(onnx, axis=1), np.linalg.norm(dlib, axis=1), atol=1e-3)


def test_same_and_different_person_decisions_match_dlib(faces, descriptors):
    dlib, onnx = descriptors["dlib-resnet-v1"], descriptors["dlib-resnet-v1-onnx"]
    pairs = list(combinations(range(len(faces)), 2))
    same_dlib = [np.linalg.norm(dlib[i] - dlib[j]) < SAME_PERSON for i, j in pairs]
    same_onnx = [np.linalg.norm(onnx[i] - onnx[j]) < SAME_PERSON for i, j in pairs]
    assert same_onnx == same_dlib
    # and the decisions are the right ones where the gallery's folders say who is who
    for (i, j), same in zip(pairs, same_onnx):
        (_, a, _), (_, b, _) = faces[i], faces[j]
        if a and b:
            assert same == (a == b), (faces[i][0], faces[j][0])


def test_a_gallery_saved_from_dlib_answers_onnx_queries_as_it_answers_dlibs(registry, faces, descriptors, tmp_path):
    """Galleries record no model name, only 128-D unit vectors: one enrolled with dlib stays valid."""
    unit = {name: v / np.linalg.norm(v, axis=1, keepdims=True) for name, v in descriptors.items()}
    enrolled = [i for i, (_, person, _) in enumerate(faces) if person]
    queries = [i for i, (_, person, _) in enumerate(faces) if not person]
    config = GalleryConfig(distance_scale=registry.get("dlib-resnet-v1-onnx").distance_scale)
    saved = GalleryIndex(config)
    saved.add_many([faces[i][1] for i in enrolled], unit["dlib-resnet-v1"][enrolled], [faces[i][0] for i in enrolled])
    saved.save(tmp_path / "gallery")
    gallery = GalleryIndex.load(tmp_path / "gallery", config)
    by_dlib = gallery.closest(unit["dlib-resnet-v1"][queries])
    by_onnx = gallery.closest(unit["dlib-resnet-v1-onnx"][queries])
    assert [m.name for m in by_onnx] == [m.name for m in by_dlib]
    assert [m.lookalike for m in by_onnx] == [m.lookalike for m in by_dlib]
    assert np.allclose([m.distance for m in by_onnx], [m.distance for m in by_dlib], atol=1e-3)
    assert {m.name for m in by_onnx if not m.lookalike} == {"obama", "biden"}


def test_default_identity_model_is_the_onnx_one_on_dlibs_distance_scale(registry, analyzer):
    assert DEFAULT_MODELS["identity"] == "dlib-resnet-v1-onnx"
    embedder = analyzer.recognisers["identity"]
    assert embedder.entry.name == "dlib-resnet-v1-onnx"
    assert type(embedder.backend).__name__ == "OnnxRuntimeBackend"
    dlib_entry = registry.get("dlib-resnet-v1")
    assert embedder.crop == dlib_entry.crop and embedder.entry.distance_scale == dlib_entry.distance_scale


def test_the_set_up_build_computes_dlibs_reference_embeddings(registry, tmp_path):
    from models.checks import check_built

    built = dlib_resnet_to_onnx(model_path(registry.get("dlib-resnet-v1")), tmp_path / "resnet.onnx")
    result = check_built(registry.get("dlib-resnet-v1-onnx"), built)
    assert result.largest_difference < 1e-5, result.describe()


def test_other_or_truncated_files_are_refused(registry, tmp_path):
    with pytest.raises(DlibFormatError, match="loss_metric"):
        read_dlib_resnet(model_path(registry.get("dlib-5pt")))
    data = model_path(registry.get("dlib-resnet-v1")).read_bytes()
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DlibFormatError, match="ends"):
        read_dlib_resnet(truncated)
