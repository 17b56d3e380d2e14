"""How much a stream needs its next detection, against the other streams on the same detectors
(live): the scheduler serves the stream whose wait, weighed by its need, is longest. A stream
with nobody in view is still looked at, less often; one whose faces move fast, or whose tracks
are new or were missed (a face entering, leaving or going behind another), more often."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NeedConfig:
    # off: every stream's need is 1, and streams are served in turn
    enabled: bool = True
    # a stream with no face in view, against one with steady faces: how soon a face walking in
    # is found (one camera with people among 3 empty ones here: confirmed 0.16-0.48 s after it
    # came into view, against 0.60-0.68 s with the cameras served in turn)
    idle: float = 0.35
    # a face moving this many of its own widths a second adds `fast` (more, up to 2x`fast`)
    fast_widths_per_s: float = 1.0
    fast: float = 0.5
    # added while any track in view is not yet confirmed, or was missed at the last detection
    unsure: float = 0.5


@dataclass(frozen=True, slots=True)
class TrackMotion:
    speed: float  # widths of its face box a second
    settled: bool  # confirmed, and seen at its last update


def detection_need(tracks: tuple[TrackMotion, ...], config: NeedConfig = NeedConfig()) -> float:
    if not config.enabled:
        return 1.0
    if not tracks:
        return config.idle
    fastest = max(t.speed for t in tracks)
    need = 1.0 + config.fast * min(fastest / config.fast_widths_per_s, 2.0)
    if not all(t.settled for t in tracks):
        need += config.unsure
    return need
