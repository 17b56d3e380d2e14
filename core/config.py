"""One config schema for a pipeline run: dataclasses, loaded from TOML and overridden from the
command line. Unknown keys are errors that name the file and the key."""
from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

from core.fusion import FusionConfig
from core.hardware import has_int8_dot_products
from core.motion import MotionConfig
from core.need import NeedConfig
from core.tracking import TrackerConfig
from core.budget import BudgetConfig

TASKS = ("detection", "expression", "age_gender", "identity")
# The TUT system's order: what changes fastest on a face is worth most.
DEFAULT_PRIORITY = {"detection": 40, "expression": 30, "age_gender": 20, "identity": 10}
# the tasks whose default models have a GPU build (expression runs on LiteRT, identity on dlib: CPU)
GPU_TASKS = ("detection", "age_gender")
# live: the shortest time between a track's expression runs: every second detected frame of a
# 25 fps camera, with room for its clock's jitter; the tracks of a stream are brought into step
# so they share one pool call (core/budget.py, JobReason.ALONG). Lossless runs it every frame
LIVE_EXPRESSION_INTERVAL_S = 0.07


def default_detector_model() -> str:
    return "centerface-int8" if has_int8_dot_products() else "centerface"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A pool of actors for one task: how many, what each asks of Ray, how much work per call."""

    task: str
    count: int = 1
    # fractions: the four default pools together ask for 2 CPUs, what the smallest machine has
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    # work items per actor call; None: 16 for recognition, for detection 8 frames on a GPU (one
    # network call for frames of several streams) and 1 on a CPU (a batch only adds latency there)
    batch_size: int | None = None
    # a free actor waits up to this long for a fuller batch while its oldest item is younger
    batch_wait_s: float = 0.0
    priority: int = 0
    model: str | None = None  # None: the registry's default for the task


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    sources: tuple[str, ...] = ()
    mode: str = "lossless"  # "live": newest first, stale frames dropped; "lossless": backpressure
    # frames per stream between admission and output; None: 8 in live mode (with `carry` at most
    # one of them waits for detection; the rest are being recognised or written), 16 in lossless
    # mode (a deep window keeps every pool fed; a file's latency does not matter)
    max_in_flight: int | None = None
    max_age_s: float = 1.0  # live: a frame waiting longer than this for detection is stale
    # live: a frame that a newer one overtakes before a detector is free goes on undetected, with
    # the tracks' predicted boxes (DeepStream's detection interval, chosen by load); off: dropped
    carry: bool = True
    # a pool call not answered within this is given up and its actor restarted
    call_timeout_s: float = 30.0
    retries: int = 2  # lossless: times a failed detection is tried again before the frame is dropped
    # live: the tasks a frame waits for before it is shown; the others' results show from the
    # next frames on (lossless waits for all: a file's output does not depend on timing)
    blocking_tasks: tuple[str, ...] = ("expression",)
    realtime: bool | None = None  # pace file sources at their fps; default: on in live mode
    loop: bool = False
    duration: float | None = None
    # an annotated video per stream; off: events only (as the sequential loop and batch labelling
    # produce), and with no live view either, a tracker never fetches a frame's pixels (nor
    # follows carried faces by their motion, `motion.flow`)
    video: bool = True
    gpu: bool = False
    gpu_fraction: float = 0.25
    threads: int = 1  # per model library in each actor
    # 480: recall 0.971 against 0.961 at 640 on crossing_faces, at 0.58 of the time (BENCHMARKS.md)
    detector_max_side: int = 480
    detector_threshold: float = 0.5
    # the detection pool's model unless a pool names one (chosen on the machine that starts the
    # run): on a CPU with VNNI, int8 keeps 0.994 of fp32's faces at 480 at 0.63 of the time; without,
    # 0.977 at 0.86 of it, so fp32 (tests/test_model_speed.py, core/hardware.py). Batch tools keep
    # fp32 at 640, where int8 keeps 0.986
    detector_model: str = field(default_factory=default_detector_model)
    pools: tuple[PoolSpec, ...] = ()
    tracker: TrackerConfig = TrackerConfig()
    motion: MotionConfig = MotionConfig()
    need: NeedConfig = NeedConfig()
    fusion: FusionConfig = FusionConfig()
    budget: BudgetConfig = BudgetConfig()
    models_file: str | None = None
    gallery: str | None = None  # gallery directory identity actors search
    enrol_unknown: bool = False  # enrol confirmed tracks nobody matches as unknown-N
    enrol_after: int = 3  # identity results without a match before a track is enrolled
    alarm_cooldown_s: float = 30.0  # a watched person raises at most one alarm per this, per stream

    def stream_budget(self) -> BudgetConfig:
        """The budget a stream's tracker plans with: an unset expression interval is every frame in
        lossless mode (a file's labels), LIVE_EXPRESSION_INTERVAL_S live."""
        if self.budget.expression_interval_s is not None:
            return self.budget
        return replace(self.budget, expression_interval_s=LIVE_EXPRESSION_INTERVAL_S if self.mode == "live" else 0.0)

    def in_flight_limit(self) -> int:
        return self.max_in_flight or (8 if self.mode == "live" else 16)

    def pool(self, task: str) -> PoolSpec:
        for spec in self.pools:
            if spec.task == task:
                return spec
        return PoolSpec(task, priority=DEFAULT_PRIORITY[task])

    def all_pools(self) -> tuple[PoolSpec, ...]:
        specs = []
        for task in TASKS:
            spec = self.pool(task)
            if self.gpu and task in GPU_TASKS and spec.num_gpus == 0:
                spec = replace(spec, num_gpus=self.gpu_fraction)
            if spec.batch_size is None:
                spec = replace(spec, batch_size=(8 if spec.num_gpus > 0 else 1) if task == "detection" else 16)
            specs.append(spec)
        return tuple(specs)

    def validate(self) -> PipelineConfig:
        if self.mode not in ("live", "lossless"):
            raise ConfigError(f"mode must be live or lossless, not {self.mode!r}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ConfigError("max_in_flight must be at least 1")
        if self.call_timeout_s <= 0 or self.retries < 0:
            raise ConfigError("call_timeout_s must be > 0 and retries >= 0")
        for spec in self.pools:
            if spec.task not in TASKS:
                raise ConfigError(f"pool for unknown task {spec.task!r}; tasks: {TASKS}")
            if spec.count < 0 or (spec.batch_size is not None and spec.batch_size < 1) or spec.batch_wait_s < 0:
                raise ConfigError(f"pool {spec.task}: count must be >= 0, batch_size >= 1 and batch_wait_s >= 0")
            if spec.count == 0 and spec.task == "detection":
                raise ConfigError("pool detection: count must be at least 1 (every frame is detected or carried)")
        return self


def _default(f):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


# fields whose default is None, and the type a value must have
_OPTIONAL_TYPES = {"max_in_flight": int, "batch_size": int, "realtime": bool, "duration": float, "expression_interval_s": float, "model": str, "models_file": str, "gallery": str}


def _checked(key: str, value, default, where: str):
    """The value converted to the default's type, or a ConfigError naming the file and key."""
    expected = type(default) if default is not None else _OPTIONAL_TYPES.get(key)
    if expected is None or isinstance(value, expected) and not (expected is not bool and isinstance(value, bool)):
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is tuple and isinstance(value, list):
        return tuple(value)
    wanted = {dict: "a table", tuple: "a list", float: "a number", int: "an integer", str: "a string",
              bool: "true or false"}.get(expected, expected.__name__)
    raise ConfigError(f"{where}: {key} must be {wanted}, not {value!r}")


def _build(cls, table, where: str):
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, not {table!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(table) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    values = {}
    for key, value in table.items():
        default = _default(known[key])
        if is_dataclass(default):
            value = _build(type(default), value, f"{where}: {key}")
        else:
            value = _checked(key, value, default, where)
        values[key] = value
    return cls(**values)


def load_config(path: Path | None) -> PipelineConfig:
    """A PipelineConfig from a TOML file (None: the defaults). `[pools.<task>]` tables give pools."""
    if path is None:
        return PipelineConfig()
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: cannot read config: {error}") from error
    pools = data.pop("pools", {})
    data.pop("model", None)  # [[model]] entries belong to the model registry
    if not isinstance(pools, dict) or not all(isinstance(t, dict) for t in pools.values()):
        raise ConfigError(f"{path}: pools must be tables like [pools.identity], not {pools!r}")
    config = _build(PipelineConfig, data, str(path))
    specs = tuple(_build(PoolSpec, {"task": task, "priority": DEFAULT_PRIORITY.get(task, 0)} | table,
                         f"{path}: pools.{task}") for task, table in pools.items())
    try:
        return replace(config, pools=specs).validate()
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def parse_pool(text: str, base: PipelineConfig) -> PoolSpec:
    """`TASK=COUNT[:RESOURCES]`, RESOURCES as `num_cpus=1,num_gpus=0.5,recognition=1`."""
    task, _, rest = text.partition("=")
    count, _, resources = rest.partition(":")
    if task not in TASKS or not count.isdigit():
        raise ConfigError(f"--pool {text!r}: expected TASK=COUNT[:RESOURCES] with TASK one of {TASKS}")
    spec = replace(base.pool(task), count=int(count))
    custom = {}
    for item in filter(None, resources.split(",")):
        key, _, value = item.partition("=")
        try:
            amount = float(value)
        except ValueError:
            raise ConfigError(f"--pool {text!r}: {item!r} is not NAME=NUMBER") from None
        if key == "num_cpus":
            spec = replace(spec, num_cpus=amount)
        elif key == "num_gpus":
            spec = replace(spec, num_gpus=amount)
        elif key == "batch_size":
            spec = replace(spec, batch_size=int(amount))
        else:
            custom[key] = amount
    return replace(spec, resources=custom or spec.resources)
