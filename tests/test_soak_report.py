import math
import mmap
import os
import uuid
from pathlib import Path

from bench.overload import MB, Sample, slope_mb_per_min, soak_memory, store_pages
from bench.report import replace_section


def test_store_pages_counts_touched_pages_of_the_plasma_mapping_only(tmp_path):
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    path = shm / f"plasma-test-{uuid.uuid4().hex}"  # named as plasma names the store's file
    private = bytearray(8 * MB)  # the process's own memory: not the store's
    private[::4096] = b"x" * len(private[::4096])
    with open(path, "w+b") as f:
        f.truncate(16 * MB)
        store = mmap.mmap(f.fileno(), 16 * MB)
    try:
        before = store_pages(os.getpid())
        for offset in range(0, 4 * MB, mmap.PAGESIZE):
            store[offset] = 1
        assert store_pages(os.getpid()) - before == 4 * MB
    finally:
        store.close()
        path.unlink()


def _sample(t: float, rss_mb: float, pages_mb: float) -> Sample:
    return Sample(t, None, (), {"IdentityActor": (int(rss_mb * MB),)}, 0, {"IdentityActor": (int(pages_mb * MB),)})


def test_growth_made_of_object_store_pages_is_not_the_actor_s_own():
    # RSS grows 3 MB a minute, all of it object-store pages; before 60 s a start-up jump
    samples = [_sample(t, 100 + (50 if t >= 60 else 0) + 3 * t / 60, 3 * t / 60) for t in range(0, 600, 5)]
    [m] = soak_memory(samples, 60.0)
    assert abs(m.rss_slope - 3.0) < 0.01
    assert abs(m.own_slope) < 0.01
    assert abs(m.own_late_mb - m.own_early_mb) < 0.01
    assert m.rss_late_mb - m.rss_early_mb > 20


def test_slope_needs_two_times():
    assert math.isclose(slope_mb_per_min([(0.0, 0.0), (60.0, 2 * MB)]), 2.0)
    assert math.isnan(slope_mb_per_min([(5.0, MB)]))
    assert math.isnan(slope_mb_per_min([(5.0, MB), (5.0, 2 * MB)]))


REPORT = """# facelive benchmarks

Machine: test.

## Overload: live input 1.5× what is processed, 120 s

overload text

## Soak: 603 s live with `--enrol-unknown`

old soak

| a | b |
|---|---|
| 1 | 2 |

## Gallery (1,000,000 x 128)

gallery text
"""


def test_replace_section_swaps_only_that_section_in_place():
    new = "## Soak: 600 s live with `--enrol-unknown`\n\nnew soak"
    out = replace_section(REPORT, new)
    assert "old soak" not in out and "new soak" in out
    assert out.index("overload text") < out.index("new soak") < out.index("gallery text")
    old = REPORT[REPORT.index("## Soak"):REPORT.index("## Gallery")]
    assert out == REPORT.replace(old, new + "\n\n")  # every other byte as it was
    assert replace_section("# title\n", new) == "# title\n\n" + new + "\n"


def test_soak_table_names_the_class_that_grew_and_shows_its_slope():
    from types import SimpleNamespace

    from bench.cpu import CpuByClass
    from bench.overload import SampledRun, format_soak
    from schedulers.scheduler import RunSummary

    samples = tuple(Sample(t, None, (), {"PriorityScheduler": (int((180 + 5 * t / 60) * MB),),
                                         "TrackerActor": (int(170 * MB),)}, (20 + t // 60) * MB,
                           {"PriorityScheduler": (0,), "TrackerActor": (0,)}, 2 * MB) for t in range(0, 600, 5))
    result = SimpleNamespace(summary=RunSummary(15000, 14990, {"stale": 10}, {}, 0, 600.0), tracks=300)
    table = format_soak(SampledRun(result, 600.0, 5.0, samples, 6000.0, 0.0, CpuByClass({}, {})))
    row = next(line for line in table.splitlines() if line.startswith("| PriorityScheduler"))
    assert "| +5.00 |" in row  # MB/min, RSS and own alike
    # means of 60-120 s and of the last 60 s: 187.3 MB and 227.1 MB
    assert "without object-store pages +21.2% (PriorityScheduler)" in table
    assert "| TrackerActor | 170 | 170 | +0 MB (+0%) | +0.00 | 0 | +0 MB (+0%) | +0.00 |" in table
    # use counts freed objects not yet deleted; the pinned bytes are what live references hold
    assert "| object store use | 21.0 | 28.9 | +8 MB (+38%) | +0.99 |" in table
    assert "| object store pinned (live references) | 2.0 | 2.0 | +0 MB (+0%) | +0.00 |" in table
