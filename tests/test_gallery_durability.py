"""A gallery writer SIGKILLed at random points, 50 times: after every kill the directory loads,
holds exactly the state before or after the save that was cut, and searches right.

Each trial is a real process (no mocks: the kill can land inside any syscall of `save`). It loads
the gallery, then again and again adds a person, saves and pauses, printing a line before and
after each save. The test kills it a seeded random delay (log-uniform from 0.1 ms to two measured
saves and the pause) after a "saving" or a "saved" line chosen at random, so kills land inside
saves, before and after their commit, and between saves. Trials are chained on one directory per
chain, so the temp files and orphaned generations that a kill leaves behind meet the next load
and the next save. SIGKILL loses no page cache: this proves crash
safety of the process, not of the machine losing power (that rests on the fsyncs in `save`).

Vectors are synthetic (no models): one person "base" with a few thousand embeddings, so each save
writes megabytes and takes milliseconds, then person pNNN with a few embeddings per step."""
from __future__ import annotations

import inspect
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from core.gallery import MANIFEST, GalleryIndex

ROOT = Path(__file__).resolve().parent.parent
CHAINS = 5
TRIALS_PER_CHAIN = 10
BASE = 4000
PER_STEP = 8
SEED = 20240608
# Between saves the child sleeps, as enrolment spends its time analysing photos: some kills must
# land outside a save, not only in one.
PAUSE = 0.03


def step_vectors(step: int, n: int) -> np.ndarray:
    """Step 0 is the base person; step k >= 1 adds person pNNN. Shared with the child by source."""
    return np.random.default_rng(step).standard_normal((n, 128), dtype=np.float32)


CHILD = "\n".join(["import sys", "import time", "import numpy as np",
                   "from core.gallery import GalleryIndex", inspect.getsource(step_vectors)]) + textwrap.dedent(f"""
    directory = sys.argv[1]
    gallery = GalleryIndex.load(directory)
    step = len(gallery.names()) - 1
    while True:
        step += 1
        gallery.add_many([f"p{{step:03d}}"] * {PER_STEP}, step_vectors(step, {PER_STEP}),
                         [f"step {{step}}"] * {PER_STEP})
        print(f"saving {{step}}", flush=True)
        gallery.save(directory)
        print(f"saved {{step}}", flush=True)
        time.sleep({PAUSE})
""")


def expected_people(step: int) -> dict[str, int]:
    return {"base": BASE} | {f"p{k:03d}": PER_STEP for k in range(1, step + 1)}


def check_state(directory: Path, allowed: set[int]) -> int:
    """Loads the gallery, asserts it is exactly one of the `allowed` steps and that every person's
    stored vectors find them; returns the step."""
    gallery = GalleryIndex.load(directory)
    step = len(gallery.names()) - 1
    assert step in allowed, f"{directory}: step {step} on disk, expected one of {sorted(allowed)}"
    people = expected_people(step)
    assert {p.name: p.embeddings for p in gallery.people()} == people
    assert len(gallery) == sum(people.values()) and not any(p.watch for p in gallery.people())
    queries = np.concatenate([step_vectors(0, BASE)[[0, BASE - 1]]]
                             + [step_vectors(k, PER_STEP)[[k % PER_STEP]] for k in range(1, step + 1)])
    names = ["base", "base"] + [f"p{k:03d}" for k in range(1, step + 1)]
    found = gallery.nearest(queries)
    assert [gallery.entry(int(r)).name for r in found.rows[:, 0]] == names
    # Random 128-D unit vectors lie ~1.41 apart; float32 rounding alone leaves < 1e-3.
    assert float(found.distances.max()) < 1e-2
    assert [m.name if m else None for m in gallery.search(queries)] == names
    return step


def save_seconds(directory: Path) -> float:
    """Median time of a save of the base gallery here: the kill delays scale with this disk."""
    gallery = GalleryIndex()
    gallery.add_many(["base"] * BASE, step_vectors(0, BASE), ["step 0"] * BASE)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        gallery.save(directory)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kill_trial(directory: Path, before: int, rng: random.Random, longest: float) -> tuple[str, int, bool]:
    """One child, started on step `before`, killed after a random delay; returns (outcome, step
    on disk, whether files beyond the committed ones were left)."""
    anchor = f"{rng.choice(['saving', 'saved'])} {before + rng.randint(1, 2)}"
    delay = math.exp(rng.uniform(math.log(1e-4), math.log(longest)))
    # FAISS's OpenMP pool, one thread per core, made at import: on a small machine, children
    # starting side by side spend more time there than in the trial.
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory)], cwd=ROOT, text=True,
                             env=os.environ | {"OMP_NUM_THREADS": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines: list[str] = []
        while anchor not in lines:
            line = child.stdout.readline()
            assert line, f"child ended before {anchor!r}: {child.stderr.read()}"
            lines.append(line.strip())
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        lines += child.stdout.read().splitlines()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL, child.returncode
    started = max(int(line.split()[1]) for line in lines if line.startswith("saving "))
    finished = f"saved {started}" in lines
    step = check_state(directory, {started} if finished else {started - 1, started})
    outcome = "between saves" if finished else "in save, new" if step == started else "in save, old"
    # Beyond the manifest and the two files it names: temp files or an orphaned generation.
    leftovers = len(os.listdir(directory)) > 3
    return outcome, step, leftovers


def run_chain(chain: int, directory: Path, longest: float) -> list[tuple[str, int, bool]]:
    rng = random.Random(SEED + chain)
    gallery = GalleryIndex()
    gallery.add_many(["base"] * BASE, step_vectors(0, BASE), ["step 0"] * BASE)
    gallery.save(directory)
    trials = []
    for _ in range(TRIALS_PER_CHAIN):
        trials.append(kill_trial(directory, trials[-1][1] if trials else 0, rng, longest))
    return trials


def test_gallery_survives_fifty_random_kills(tmp_path) -> None:
    started = time.monotonic()
    # Measured where the chains write, so the delays fit this disk's fsync.
    longest = 2 * save_seconds(tmp_path / "calibrate") + PAUSE
    directories = [tmp_path / f"chain{c}" for c in range(CHAINS)]
    with ThreadPoolExecutor(max_workers=min(CHAINS, os.cpu_count() or 1)) as pool:
        chains = list(pool.map(run_chain, range(CHAINS), directories, [longest] * CHAINS))
    trials = [t for chain in chains for t in chain]
    assert len(trials) == CHAINS * TRIALS_PER_CHAIN
    outcomes = Counter(outcome for outcome, _, _ in trials)
    print(f"\n{len(trials)} kills in {time.monotonic() - started:.1f} s, delays up to "
          f"{longest * 1000:.1f} ms: {dict(outcomes)}; leftover files after "
          f"{sum(left for _, _, left in trials)} kills")
    # Kills must have landed both inside saves and between them, or the test proved little.
    assert outcomes["in save, old"] >= 10 and outcomes["between saves"] >= 10, outcomes
    for directory, chain in zip(directories, chains):
        # A clean save clears whatever the kills left, and the state survives it.
        step = chain[-1][1]
        GalleryIndex.load(directory).save(directory)
        assert sorted(name.split("-")[0] for name in os.listdir(directory)) == ["index", MANIFEST, "meta"]
        assert check_state(directory, {step}) == step
