"""Fault injection by config: a model entry with `fault = "KIND@N"` loads the real model and makes
its Nth call fail as KIND says, so every failure path of the pipeline can be driven from a test
(or a staging run) without code. With `fault_marker`, a file that the first fault creates, the
fault fires once per run, even across the actor restarts it causes."""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from core.messages import AgeEstimates, ClassScores, Embeddings, FaceBoxes

FAULT_KINDS = ("raise", "hang", "shape", "exit")


class InjectedFault(RuntimeError):
    pass


def parse_fault(text: str) -> tuple[str, int]:
    kind, _, at = text.partition("@")
    if kind not in FAULT_KINDS or not at.isdigit() or int(at) < 1:
        raise ValueError(f"fault {text!r}: expected KIND@N with KIND one of {FAULT_KINDS} and N >= 1")
    return kind, int(at)


def _short(result):
    """The same result with its last row missing: a model that answers the wrong shape."""
    if isinstance(result, FaceBoxes):
        return FaceBoxes(result.boxes[:, :2], result.scores, result.landmarks)
    if isinstance(result, AgeEstimates):
        return AgeEstimates(result.ages[:-1], result.posteriors[:-1])
    if isinstance(result, ClassScores):
        return replace(result, probs=result.probs[:-1])
    if isinstance(result, Embeddings):
        return Embeddings(result.vectors[:-1])
    raise TypeError(f"no wrong shape for {type(result).__name__}")


class FaultyModel:
    """Stands in for a loaded model (detector or recogniser); everything but its calls passes
    through to the real one."""

    def __init__(self, model, fault: str, marker: str | None = None):
        self.model = model
        self.kind, self.at = parse_fault(fault)
        self.marker = Path(marker) if marker else None
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def _fires(self) -> bool:
        self.calls += 1
        if self.calls != self.at or (self.marker is not None and self.marker.exists()):
            return False
        if self.marker is not None:
            self.marker.touch()
        if self.kind == "raise":
            raise InjectedFault(f"injected fault on call {self.calls}")
        if self.kind == "hang":
            time.sleep(3600)
        if self.kind == "exit":
            os._exit(3)
        return True  # "shape": the caller answers with a row missing

    def detect(self, image) -> FaceBoxes:
        return self.detect_batch([image])[0]

    def detect_batch(self, images) -> list[FaceBoxes]:
        wrong = self._fires()
        results = self.model.detect_batch(images)
        return [_short(r) for r in results] if wrong else results

    def __call__(self, chips):
        wrong = self._fires()
        result = self.model(chips)
        return _short(result) if wrong else result
