"""Ray 2.60: an owner keeps one entry in its in-memory object store for every object that another
worker borrowed and still held when its call returned, after every reference is gone; an
object passed as a top-level argument (resolved to its value before the call) leaves none.
Run: .venv/bin/python bench/borrow_leak.py [seconds]. Prints, per way of passing, the owner's
memory-store entries, reference-table entries and glibc heap in use as the run goes on."""
from __future__ import annotations

import asyncio
import ctypes
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.cluster import local_only_environment  # noqa: E402


def heap_in_use_mb() -> float:
    """glibc's bytes in use over all arenas (mallinfo2), in MB: native memory Python's tracemalloc
    does not see. The structure is built here: ctypes classes do not pickle into a Ray actor."""

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                           "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2().uordblks / 2**20


@ray.remote(num_cpus=0)
class Holder:
    """Keeps the last few things it was given, as the tracker keeps a frame's crops."""

    def __init__(self):
        self.kept = deque(maxlen=10)

    def keep(self, thing) -> None:
        self.kept.append(thing)


@ray.remote(num_cpus=0)
class Owner:
    def __init__(self, nested: bool):
        self.nested, self.holder = nested, Holder.remote()

    async def run(self, seconds: float, rate: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ref = ray.put(np.zeros(1000, np.float32))
            # nested in a list: the holder gets the ref and keeps it; top level: it gets the array
            self.holder.keep.remote([ref] if self.nested else ref)
            await asyncio.sleep(1 / rate)

    def state(self) -> tuple[int, int, float]:
        worker = ray._private.worker.global_worker.core_worker
        return worker.get_memory_store_size(), len(worker.get_all_reference_counts()), heap_in_use_mb()


def main(seconds: float = 60.0, rate: float = 100.0) -> None:
    local_only_environment()
    ray.init(num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="warning")
    owners = {"ref kept by the holder": Owner.remote(True), "value kept by the holder": Owner.remote(False)}
    runs = [owner.run.remote(seconds, rate) for owner in owners.values()]
    start = time.monotonic()
    while True:
        done, _ = ray.wait(runs, num_returns=len(runs), timeout=10)
        for label, owner in owners.items():
            entries, refs, heap = ray.get(owner.state.remote())
            print(f"{time.monotonic() - start:5.0f} s  {label:26s} memory-store entries {entries:6d}  "
                  f"references {refs:3d}  heap in use {heap:6.2f} MB", flush=True)
        if len(done) == len(runs):
            break
    ray.shutdown()


if __name__ == "__main__":
    main(*(float(a) for a in sys.argv[1:3]))
