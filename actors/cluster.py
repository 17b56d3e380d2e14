"""Joining a Ray cluster, or starting a local one that listens on 127.0.0.1 only."""
from __future__ import annotations

import os

import ray


def local_only_environment() -> None:
    """Keep a locally started Ray on 127.0.0.1: by default it binds to the machine's interface
    address and rewrites 127.0.0.1 to it (measured here, see design.md). The processes Ray starts
    read the environment; this process read it when it imported Ray, so its copy is set too."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def connect(address: str | None, num_cpus: int | None = None, object_store_mb: int | None = None) -> str:
    """Join `address` (or RAY_ADDRESS, or a cluster `ray start` left running); with none running,
    or with address "local", start a local one. Returns a line that says which happened."""
    if ray.is_initialized():
        return "using the Ray this process is already connected to"
    runtime_env = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2", "RAY_DEDUP_LOGS": "1"}}
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, runtime_env=runtime_env, logging_level="warning")
        return f"joined the Ray cluster at {address}"
    if address != "local":
        try:
            ray.init(address="auto", runtime_env=runtime_env, logging_level="warning")
            return "joined the running Ray cluster (ray start --head)"
        except ConnectionError:
            pass
    local_only_environment()
    ray.init(num_cpus=num_cpus, object_store_memory=object_store_mb and object_store_mb * 2**20,
             include_dashboard=True, dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1",
             runtime_env=runtime_env, logging_level="warning")
    return ("no Ray cluster running: started a local one on 127.0.0.1 "
            "(dashboard http://127.0.0.1:8265; run `ray start --head` first to keep one)")
