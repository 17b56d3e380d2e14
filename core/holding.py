"""`PixelHolding`: whether a capture whose frames nobody draws keeps its next frame's pixels to
itself (putting them into the object store only if the scheduler sends the frame to detection)
or puts them at once. Holding saves the put of every carried frame and costs an extra call for
every detected one, so it pays where most frames are carried: at several cameras on a small box,
not at one camera that the detector keeps up with."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PixelHolding:
    # weight of each answered frame in the share detected (about the last 1/weight frames)
    weight: float = 0.1
    # hold below this share of frames detected, put again above `put_above`: apart, so a share
    # near the line does not switch every frame
    hold_below: float = 0.4
    put_above: float = 0.6
    detected_share: float = 1.0  # a new stream is assumed to be detected throughout
    holding: bool = False

    def answered(self, detected: bool) -> None:
        """The scheduler let go of a frame, which it had (or had not) sent to detection."""
        self.detected_share += self.weight * (float(detected) - self.detected_share)
        if self.holding and self.detected_share > self.put_above:
            self.holding = False
        elif not self.holding and self.detected_share < self.hold_below:
            self.holding = True
