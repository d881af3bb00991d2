"""Synchronisation that survives a dead camera (no ROS imports).

Images are buffered per camera (a short time window). When the reference
message arrives (the LiDAR sweep, or a reference camera), a frame is
assembled from each camera's image nearest to the reference time within the
slop; a camera with no such image is reported missing, and the frame is
assembled anyway: a dead camera is a fault in cam_mask, never a stall.
Messages older than the newest assembled frame minus the buffer window are
dropped; time going backwards (a bag restarting) clears the buffers.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AssembledFrame:
    reference_us: int
    reference: Any                               # the reference message's payload (e.g. the cloud)
    images: dict[str, tuple[int, Any] | None]    # camera -> (stamp_us, payload) or None
    missing: list[str] = field(default_factory=list)


class FrameAssembler:
    def __init__(self, cameras: list[str], slop_us: int = 50_000, buffer_us: int = 1_000_000):
        if not cameras:
            raise ValueError("need at least one camera")
        self.cameras, self.slop_us, self.buffer_us = list(cameras), slop_us, buffer_us
        self._buffers: dict[str, deque] = {c: deque() for c in self.cameras}
        self.last_reference_us: int | None = None

    def add_image(self, camera: str, stamp_us: int, payload: Any) -> None:
        if camera not in self._buffers:
            raise KeyError(f"unknown camera {camera!r}")
        if self.last_reference_us is not None and stamp_us < self.last_reference_us - self.buffer_us:
            self.reset()                             # far older than the last frame: a new recording
        buffer = self._buffers[camera]
        buffer.append((stamp_us, payload))
        while buffer and buffer[0][0] < stamp_us - self.buffer_us:
            buffer.popleft()

    def assemble(self, reference_us: int, reference: Any = None) -> AssembledFrame:
        """The frame for a reference message stamped ``reference_us``."""
        if self.last_reference_us is not None and reference_us < self.last_reference_us:
            self.reset()                             # time went backwards: a new recording
        self.last_reference_us = reference_us
        images: dict[str, tuple[int, Any] | None] = {}
        missing = []
        for camera, buffer in self._buffers.items():
            best = min(buffer, key=lambda item: abs(item[0] - reference_us), default=None)
            if best is None or abs(best[0] - reference_us) > self.slop_us:
                images[camera] = None
                missing.append(camera)
            else:
                images[camera] = best
            while buffer and buffer[0][0] < reference_us - self.buffer_us:
                buffer.popleft()
        return AssembledFrame(reference_us, reference, images, missing)

    def reset(self) -> None:
        for buffer in self._buffers.values():
            buffer.clear()
        self.last_reference_us = None
