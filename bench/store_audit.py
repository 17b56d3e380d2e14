"""What the object store holds over a long live run (issue 12): every `--interval` seconds the
plasma stats the raylet reports and every live object reference Ray knows of, grouped by who owns
it, how it is referenced and where it was created, so a growing store use is either traced to
objects someone still holds or shown to have none behind it.

Run: .venv/bin/python -m bench.store_audit --seconds 600 --enrol-unknown
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

MB = 2**20
GROUPS_SHOWN = 3
FLAT = 0.05  # the target: store use within 5 % from the second minute to the last
# reads of the store's use spread over a little more than the raylet's 1 s cycle of deleting freed objects
BURST_READS = 24
BURST_S = 1.15
# growth below this is a frame or two more in flight at the moment of a read (a frame is 0.9 MB),
# too little to say who holds it
NOISE_MB = 2.0


@dataclass(frozen=True, slots=True)
class LiveRef:
    """One row of `ray.util.state.list_objects`: a reference held by one process."""

    object_id: str
    size: int  # bytes; 0 where Ray does not know it (a borrowed reference not yet resolved)
    owner: str  # the holding process's actor class, "driver", or "pid N"
    reference_type: str
    call_site: str


@dataclass(frozen=True, slots=True)
class StoreStats:
    """The raylet's plasma figures (what `ray memory --stats-only` prints, and more)."""

    used: int  # bytes of the objects in the store: its use as the soak reports it
    objects: int  # objects in the store
    primary: int  # bytes of primary copies (pinned for their owner)


@dataclass(frozen=True, slots=True)
class AuditSample:
    t: float
    store: StoreStats  # one read, as the soak's sampler takes it
    burst: tuple[StoreStats, ...]  # reads over the next second: the raylet deletes freed objects
    # in batches (every `free_objects_period_milliseconds`, 1 s by default), so one read can land
    # anywhere in that cycle
    refs: tuple[LiveRef, ...]

    def burst_mb(self) -> tuple[float, float, float]:
        """Store use over the burst: min, mean, max MB."""
        used = [b.used / MB for b in self.burst] or [self.store.used / MB]
        return min(used), _mean(used), max(used)


@dataclass(frozen=True, slots=True)
class Group:
    key: tuple[str, str, str]  # (owner, reference type, call site)
    refs: int
    objects: int
    bytes: int


def short_call_site(call_site: str) -> str:
    """Ray's call site is a whole stack of absolute paths; the innermost frame of this project's
    code says where the object came from, not site-packages."""
    if not call_site or call_site == "disabled":
        return "(call sites off)"
    frames = [f.strip() for f in call_site.split("|") if f.strip()]
    ours = [f for f in frames if "site-packages" not in f] or frames
    return re.sub(r"\S*/", "", ours[0])


def distinct_bytes(refs: list[LiveRef] | tuple[LiveRef, ...]) -> int:
    """Bytes of the distinct objects: an object borrowed by three processes is listed three times,
    its size stored once."""
    sizes: dict[str, int] = {}
    for ref in refs:
        sizes[ref.object_id] = max(sizes.get(ref.object_id, 0), ref.size)
    return sum(sizes.values())


def group_refs(refs: list[LiveRef] | tuple[LiveRef, ...]) -> list[Group]:
    """References grouped by (owner, reference type, call site), the heaviest first (by bytes,
    then by count: a leak of small objects still shows)."""
    by_key: dict[tuple[str, str, str], list[LiveRef]] = {}
    for ref in refs:
        by_key.setdefault((ref.owner, ref.reference_type, ref.call_site), []).append(ref)
    groups = [Group(key, len(rows), len({r.object_id for r in rows}), distinct_bytes(rows))
              for key, rows in by_key.items()]
    return sorted(groups, key=lambda g: (-g.bytes, -g.refs, g.key))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


@dataclass(frozen=True, slots=True)
class Verdict:
    """Means over the second window and the last, of: single reads of the store's use (what the
    soak compares), its mean over each sample's burst, the primary copies in it (pinned for a
    live reference), the bytes of every listed live object, and the objects in the store."""

    store: tuple[float, float]  # MB
    averaged: tuple[float, float]  # MB
    primary: tuple[float, float]  # MB
    held: tuple[float, float]  # MB
    objects: tuple[float, float]
    slopes: tuple[float, float]  # MB/min of the averaged use, middle third of the steady part and last third
    growers: tuple[tuple[tuple[str, str, str], float], ...]  # groups whose held MB grew most

    @staticmethod
    def _flat(pair: tuple[float, float]) -> bool:
        return abs(pair[1] - pair[0]) <= FLAT * pair[0]

    def share(self, pair: tuple[float, float]) -> float:
        """How much of the store's growth `pair`'s growth accounts for."""
        grown = self.store[1] - self.store[0]
        return (pair[1] - pair[0]) / grown if grown > 0 else math.nan

    @property
    def kind(self) -> str:
        if self._flat(self.store) or self.store[1] - self.store[0] < NOISE_MB:
            return "flat"
        if self.share(self.held) >= 0.5:
            return "leak"
        if self.share(self.primary) >= 0.5:
            return "pinned"
        return "unpinned"

    @property
    def levels_off(self) -> bool:
        middle, last = self.slopes
        return last <= 0.25 * max(middle, 0.0) or last <= 0.05

    @property
    def trend(self) -> str:
        if any(math.isnan(v) for v in self.slopes):
            return "too few samples to tell"
        return "levels off" if self.levels_off else "still growing"

    def text(self) -> str:
        def change(pair: tuple[float, float]) -> str:
            return f"{pair[0]:.1f} -> {pair[1]:.1f} MB ({(pair[1] - pair[0]) / pair[0]:+.0%})" if pair[0] > 0 else \
                f"{pair[0]:.1f} -> {pair[1]:.1f} MB"

        lines = [f"store use, single reads: {change(self.store)}, {'within' if self._flat(self.store) else 'outside'} "
                 f"the {FLAT:.0%} target; objects in the store {self.objects[0]:.0f} -> {self.objects[1]:.0f}",
                 f"store use averaged over each 1 s burst: {change(self.averaged)}",
                 f"primary copies (pinned for a live reference): {change(self.primary)}; bytes of listed live "
                 f"objects: {change(self.held)}"]
        kind = self.kind
        if kind == "leak":
            lines.append(f"LEAK: held objects account for {self.share(self.held):.0%} of the growth; growing most: "
                         + "; ".join(f"{' / '.join(key)} {mb:+.1f} MB" for key, mb in self.growers))
        elif kind == "pinned":
            lines.append(f"PINNED: primary copies account for {self.share(self.primary):.0%} of the growth but no "
                         "listed reference does: objects pinned for references Ray does not list")
        elif kind == "unpinned":
            lines.append(f"NOT HELD: live references account for {max(self.share(self.held), 0.0):.0%} of the growth, "
                         f"primary copies for {max(self.share(self.primary), 0.0):.0%}; the rest is objects already "
                         "freed, still in the store until the raylet deletes them"
                         + ("; averaged over a second the use does not grow, so the single reads' trend is only "
                            "where they fall in the raylet's delete cycle"
                            if self.averaged[1] <= (1 + FLAT) * self.averaged[0] else ""))
        lines.append(f"averaged use's slope {self.slopes[0]:+.2f} MB/min (middle third) -> {self.slopes[1]:+.2f} "
                     f"MB/min (last third): {self.trend}")
        return "\n".join(lines)


def verdict(samples: list[AuditSample], window_s: float) -> Verdict:
    """The second window (start-up and first enrolments done) against the last, as the soak
    compares them, and whether the growth slows down over the steady part."""
    # here, not at the top: bench.overload imports Ray, which main() must configure first
    from bench.overload import slope_mb_per_min

    early = [s for s in samples if window_s <= s.t < 2 * window_s]
    late = [s for s in samples if s.t >= samples[-1].t - window_s]
    steady = [s for s in samples if s.t >= window_s]
    third = len(steady) // 3
    middle, last = steady[third:2 * third], steady[len(steady) - third:]

    def both(value) -> tuple[float, float]:
        return _mean([value(s) for s in early]), _mean([value(s) for s in late])

    def group_mb(group: list[AuditSample]) -> dict[tuple[str, str, str], float]:
        totals: dict[tuple[str, str, str], float] = {}
        for s in group:
            for g in group_refs(s.refs):
                totals[g.key] = totals.get(g.key, 0.0) + g.bytes / MB / len(group)
        return totals

    before, after = group_mb(early), group_mb(late)
    change = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in {*before, *after}}
    growers = tuple(sorted(((k, v) for k, v in change.items() if v > 0), key=lambda kv: -kv[1])[:GROUPS_SHOWN])
    return Verdict(both(lambda s: s.store.used / MB), both(lambda s: s.burst_mb()[1]),
                   both(lambda s: s.store.primary / MB), both(lambda s: distinct_bytes(s.refs) / MB),
                   both(lambda s: s.store.objects),
                   (slope_mb_per_min([(s.t, s.burst_mb()[1] * MB) for s in middle]),
                    slope_mb_per_min([(s.t, s.burst_mb()[1] * MB) for s in last])), growers)


def format_table(samples: list[AuditSample]) -> str:
    rows = ["    t s | store MB | over 1 s min/mean/max | primary MB | in store | refs | objects | held MB "
            "| top groups (owner/ref type/call site: objects, MB)",
            "--------+----------+-----------------------+------------+----------+------+---------+---------+-----"]
    for s in samples:
        top = "; ".join(f"{'/'.join(g.key)}: {g.objects}, {g.bytes / MB:.2f}"
                        for g in group_refs(s.refs)[:GROUPS_SHOWN])
        low, mean, high = s.burst_mb()
        rows.append(f"{s.t:7.0f} | {s.store.used / MB:8.1f} | {low:6.1f} {mean:6.1f} {high:6.1f}   "
                    f"| {s.store.primary / MB:10.1f} | {s.store.objects:8d} | {len(s.refs):4d} "
                    f"| {len({r.object_id for r in s.refs}):7d} | {distinct_bytes(s.refs) / MB:7.1f} | {top}")
    return "\n".join(rows)


# ---- the run (needs Ray); everything above is plain data and runs without it

class _Auditor(threading.Thread):
    def __init__(self, interval_s: float):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.samples: list[AuditSample] = []
        self.stats_text = ""
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        import ray
        from ray._private import internal_api

        try:
            # by address: another Ray may run on this machine
            address = ray.get_runtime_context().gcs_address
            plasma = _Plasma(address)
            while not self.stop.wait(max(0.0, self.started + (len(self.samples) + 1) * self.interval_s
                                         - time.monotonic())):
                t = time.monotonic() - self.started
                reply = plasma.read()
                burst = [_store_stats(reply.store_stats)]
                for _ in range(BURST_READS - 1):
                    time.sleep(BURST_S / (BURST_READS - 1))
                    burst.append(_store_stats(plasma.read().store_stats))
                self.samples.append(AuditSample(t, burst[0], tuple(burst), _live_refs(address)))
                self.stats_text = internal_api.store_stats_summary(reply)
        except Exception as error:  # noqa: BLE001 -- a thread's exception would otherwise only be printed
            self.error = error


class _Plasma:
    """The raylet's plasma figures over one channel: `internal_api.get_memory_info_reply` reads
    the node table and opens a channel on every call, too slow for reads 50 ms apart."""

    def __init__(self, address: str):
        from ray._common.network_utils import build_address
        from ray._private import internal_api
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import node_manager_pb2, node_manager_pb2_grpc

        node = next(n for n in internal_api.get_state_from_address(address).node_table() if n["Alive"])
        channel = init_grpc_channel(build_address(node["NodeManagerAddress"], node["NodeManagerPort"]))
        self._stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
        self._request = node_manager_pb2.FormatGlobalMemoryInfoRequest(include_memory_info=False)

    def read(self):
        return self._stub.FormatGlobalMemoryInfo(self._request, timeout=60)


def _store_stats(s) -> StoreStats:
    return StoreStats(s.object_store_bytes_used, s.num_local_objects, s.object_store_bytes_primary_copy)


def _owners() -> dict[int, str]:
    import psutil

    from bench.cpu import process_class

    owners = {os.getpid(): "driver"}
    for proc in psutil.Process().children(recursive=True):
        owners[proc.pid] = process_class(proc)
    return owners


def _live_refs(address: str) -> tuple[LiveRef, ...]:
    from ray.util.state import list_objects

    owners = _owners()
    return tuple(LiveRef(o.object_id, max(o.object_size or 0, 0), owners.get(o.pid, f"pid {o.pid}"),
                         str(o.reference_type), short_call_site(o.call_site))
                 for o in list_objects(address, limit=10_000, timeout=60, raise_on_missing_output=False))


def _worker_code_root() -> str:
    """Where a worker imports the project from: the run must measure this checkout's code."""
    import ray

    @ray.remote(num_cpus=0)
    def where() -> str:
        import actors.tracker

        return str(Path(actors.tracker.__file__).resolve().parent.parent)

    return ray.get(where.remote())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.store_audit", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600, help="live run length (default 600)")
    p.add_argument("--enrol-unknown", action="store_true",
                   help="enrol unknown faces into a fresh gallery, as the soak does")
    p.add_argument("--interval", type=float, default=20, help="seconds between audits (default 20)")
    p.add_argument("--video", default=None, help="looped as a camera at its own rate (default: the sample video)")
    p.add_argument("--work", type=Path, default=Path("out/bench/store_audit"), help="run outputs (default %(default)s)")
    args = p.parse_args(argv)

    # call sites are recorded by the process that creates a reference: set before Ray starts so
    # every worker inherits it
    os.environ.setdefault("RAY_record_ref_creation_sites", "1")
    import ray

    from actors.cluster import local_only_environment, worker_env
    from bench.overload import SAMPLE, sampled_run
    from core.config import PipelineConfig

    local_only_environment()
    # as launch/bench.py starts it for the soak, plus the dashboard that ray.util.state asks
    ray.init(num_cpus=os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1",
             logging_level="warning", runtime_env={"env_vars": worker_env()})
    try:
        print(f"workers import the project from {_worker_code_root()}", file=sys.stderr)
        gallery = None
        if args.enrol_unknown:
            # a fresh gallery, as the soak's: one left by an earlier audit would change what is enrolled
            gallery = args.work / "gallery"
            shutil.rmtree(gallery, ignore_errors=True)
            gallery.mkdir(parents=True)
        config = PipelineConfig(sources=(args.video or str(SAMPLE),), mode="live", realtime=True, loop=True,
                                duration=args.seconds, gallery=gallery and str(gallery),
                                enrol_unknown=args.enrol_unknown)
        auditor = _Auditor(args.interval)
        auditor.start()
        try:
            run = sampled_run(config, args.work / "run")
        finally:
            ended = time.monotonic()
            auditor.stop.set()
            auditor.join()
        if auditor.error is not None:
            raise auditor.error
    finally:
        ray.shutdown()
    # times from when the pipeline was up, as the soak's sampler counts them (start-up is negative)
    shift = auditor.started - (ended - run.seconds)
    samples = [replace(a, t=a.t + shift) for a in auditor.samples if a.t + shift <= args.seconds]
    window = min(60.0, args.seconds / 4)
    early = [x.store_used / MB for x in run.samples if window <= x.t < 2 * window]
    late = [x.store_used / MB for x in run.samples if x.t >= run.samples[-1].t - window]
    s = run.result.summary
    print(f"captured {s.captured}, processed {s.processed}, dropped {sum(s.dropped.values())}, "
          f"{run.result.tracks} tracks; plasma stats at the last audit:\n{auditor.stats_text}")
    print(format_table(samples))
    print(f"the soak's {run.interval_s:.0f} s sampler: store use {_mean(early):.1f} MB "
          f"({window:.0f}-{2 * window:.0f} s) "
          f"-> {_mean(late):.1f} MB (last {window:.0f} s)")
    print(verdict(samples, window).text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
