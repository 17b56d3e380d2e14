"""What is installed is exactly a committed lock: the one `make setup` installed (its path is in
the venv's stamp), and every pin in it carries hashes."""
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# installed by the venv itself or by the editable install of the project, not from the lock
NOT_LOCKED = {"facelive", "pip"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lock: Path) -> dict[str, str]:
    return {_normal(m[1]): m[2] for line in lock.read_text().splitlines() if (m := PIN.match(line))}


def _this_machines_lock() -> Path:
    """The lock the Makefile picks for this interpreter: its stamp where make installed it."""
    stamp = Path(sys.prefix) / ".facelive-installed"
    if stamp.is_file():
        return ROOT / stamp.read_text().strip()
    gpu = shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0
    return ROOT / "locks" / f"py{sys.version_info[0]}.{sys.version_info[1]}-{'gpu' if gpu else 'cpu'}.txt"


def test_installed_packages_are_the_lock():
    lock = _this_machines_lock()
    assert lock.is_file(), f"no lock {lock.name} for this Python; locks: {sorted(p.name for p in lock.parent.glob('py*.txt'))}"
    # the venv's own folders only: Ray puts its vendored packages (colorama among them) on sys.path
    venv = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    installed = {_normal(d.metadata["Name"]): d.version for d in metadata.distributions(path=sorted(venv))}
    wanted = _pins(lock)
    extra = {n: v for n, v in installed.items() if n not in wanted and n not in NOT_LOCKED}
    missing = {n: v for n, v in wanted.items() if n not in installed}
    other = {n: (installed[n], v) for n, v in wanted.items() if n in installed and installed[n] != v}
    assert not (extra or missing or other), (
        f"installed set differs from {lock.relative_to(ROOT)}: not in the lock {extra}; missing {missing}; "
        f"other versions (installed, locked) {other}. Run `make setup` (it makes the venv anew from the lock)")


def test_every_lock_pins_every_package_with_hashes():
    locks = sorted((ROOT / "locks").glob("py*.txt"))
    assert {p.name for p in locks} >= {f"py{v}-{a}.txt" for v in ("3.11", "3.12") for a in ("cpu", "gpu")}
    for lock in locks:
        lines = lock.read_text().splitlines()
        pins = [i for i, line in enumerate(lines) if PIN.match(line)]
        assert len(pins) > 50, lock.name
        unhashed = [lines[i] for i in pins if i + 1 >= len(lines) or "--hash=sha256:" not in lines[i + 1]]
        assert not unhashed, f"{lock.name}: pins without hashes: {unhashed}"
        names = _pins(lock)
        accel = "gpu" if lock.stem.endswith("gpu") else "cpu"
        assert ("onnxruntime-gpu" in names) == (accel == "gpu") and ("onnxruntime" in names) == (accel == "cpu")
        assert {"ray", "pytest", "setuptools"} <= set(names), lock.name
