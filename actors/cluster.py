"""Joining a Ray cluster, or starting a local one that listens on 127.0.0.1 only."""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path

import ray

# What the workers import. Shipped with the job (py_modules) rather than found on the workers' own
# path: a `ray start` cluster's workers start in the raylet's directory, not the repository, and
# on other machines there is no checkout at all.
PACKAGES = ("core", "models", "schedulers", "actors")
ROOT = Path(__file__).resolve().parent.parent


def local_only_environment() -> None:
    """Keep a locally started Ray on 127.0.0.1: by default it binds to the machine's interface
    address and rewrites 127.0.0.1 to it (measured here, see design.md). The processes Ray starts
    read the environment; this process read it when it imported Ray, so its copy is set too."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


class _MutedImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports one module with file descriptor 2 pointed at /dev/null. TensorFlow's shared
    libraries log "oneDNN custom operations are on" through absl before any log level applies
    (TF_CPP_MIN_LOG_LEVEL does not reach it), so only the descriptor can silence it; the one
    setting that does (TF_ENABLE_ONEDNN_OPTS=0) makes the expression model ~2x slower."""

    def __init__(self, name: str):
        self.name = name
        self.loader = None

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None:
            self.loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        try:
            self.loader.exec_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)


def quiet_tensorflow_import() -> None:
    """Worker set-up hook (runtime_env): TensorFlow's start-up chatter stays out of the console."""
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _MutedImport("tensorflow"))


def worker_env(verbose: bool = False) -> dict[str, str]:
    """Environment variables of every worker of the job. MALLOC_ARENA_MAX: glibc gives each
    thread that allocates its own arena (Ray's gRPC and IO threads, the libraries' pools), and
    memory freed in one stays held there: over a 4-minute live soak (2026-11-27) the scheduler's
    freed-but-held heap (glibc mallinfo2) reached ~15 MB with the default arenas, ~5 MB with two."""
    env = {"RAY_DEDUP_LOGS": "1", "MALLOC_ARENA_MAX": "2"}
    if not verbose:
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def runtime_env(verbose: bool = False) -> dict:
    """The job's code and environment and, unless `verbose`, quiet TensorFlow in every worker."""
    env = {"py_modules": [str(ROOT / name) for name in PACKAGES], "env_vars": worker_env(verbose)}
    if not verbose:
        env["worker_process_setup_hook"] = "actors.cluster.quiet_tensorflow_import"
    return env


def connect(address: str | None, num_cpus: int | None = None, object_store_mb: int | None = None,
            verbose: bool = False) -> str:
    """Join `address` (or RAY_ADDRESS, or a cluster `ray start` left running); with none running,
    or with address "local", start a local one. Returns a line that says which happened."""
    if ray.is_initialized():
        return "using the Ray this process is already connected to"
    env = runtime_env(verbose)
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, runtime_env=env, logging_level="warning")
        return f"joined the Ray cluster at {address}"
    if address != "local":
        try:
            ray.init(address="auto", runtime_env=env, logging_level="warning")
            return "joined the running Ray cluster (ray start --head)"
        except ConnectionError:
            pass
    local_only_environment()
    ray.init(num_cpus=num_cpus, object_store_memory=object_store_mb and object_store_mb * 2**20,
             include_dashboard=True, dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1",
             runtime_env=env, logging_level="warning")
    return ("no Ray cluster running: started a local one on 127.0.0.1 "
            "(dashboard http://127.0.0.1:8265; run `ray start --head` first to keep one)")
