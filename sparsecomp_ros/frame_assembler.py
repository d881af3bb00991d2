"""Synchronisation that survives a dead camera.

Every camera's decoded images go into a ``message_filters.Cache`` of their
own (ours from ``message_filters_compat`` where message_filters is not
installed). A frame is assembled around a reference stamp (the LiDAR sweep,
or a reference camera) from each camera's image nearest to it within the
slop; a camera with no such image is reported missing and the frame is
assembled anyway: a dead camera is a fault in cam_mask, never a stall. No
ApproximateTime synchronizer: it emits a set only when every topic has a
message, i.e. it stalls on exactly the fault we must survive.

``settled`` says whether waiting could still improve a camera's pick: the
node waits (bounded) for cameras that fire just after the reference.

Hold: a camera with no image within the slop but one from before the
reference at most ``hold_ns`` old (its previous frame, when this one was lost)
gives that one, listed in ``held``: a frame 0.1 s old, placed where the vehicle
was when it was taken (the node's calibration does that for every image), is
worth more to the model than no camera (docs/ros.md, "Frame hold"). The health
check still sees its offset (OUT_OF_SYNC) and fails the camera when it lasts.
Time going backwards (a bag restarting) clears the caches. Stamps are
integer nanoseconds.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from .message_filters_compat import Cache, SimpleFilter, nearest_in_cache


@dataclass
class CachedImage:
    """What a camera's cache holds: a header (for the stamp) and the decoded image with its verdict."""
    header: Header
    payload: Any


@dataclass
class AssembledFrame:
    reference_ns: int
    reference: Any                               # the reference message's payload (e.g. the cloud)
    images: dict[str, tuple[int, Any] | None]    # camera -> (stamp_ns, payload) or None
    nearest_ns: dict[str, int | None]            # camera -> nearest stamp even outside the slop (None: none cached)
    missing: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)   # cameras whose image is an earlier frame's (hold)


def ns_to_time(stamp_ns: int) -> Time:
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def time_to_ns(stamp) -> int:
    """Nanoseconds of a builtin_interfaces Time or an rclpy Time."""
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class FrameAssembler:
    def __init__(self, cameras: list[str], slop_ns: int = 60_000_000, cache_size: int = 10, hold_ns: int = 0):
        if not cameras:
            raise ValueError("need at least one camera")
        if cache_size < 2:
            raise ValueError(f"cache_size must be at least 2, got {cache_size}")
        if hold_ns < 0:
            raise ValueError(f"hold_ns must not be negative, got {hold_ns}")
        self.cameras, self.slop_ns, self.cache_size = list(cameras), int(slop_ns), int(cache_size)
        self.hold_ns = int(hold_ns)
        self.last_reference_ns: int | None = None
        self.reset()

    def reset(self) -> None:
        self._inputs = {camera: SimpleFilter() for camera in self.cameras}
        self._caches = {camera: Cache(self._inputs[camera], cache_size=self.cache_size) for camera in self.cameras}
        self._stamps: dict[str, list[int]] = {camera: [] for camera in self.cameras}
        self.last_reference_ns = None

    def add_image(self, camera: str, stamp_ns: int, payload: Any) -> None:
        if camera not in self._inputs:
            raise KeyError(f"unknown camera {camera!r}")
        if self.last_reference_ns is not None and stamp_ns < self.last_reference_ns - self.cache_span_ns():
            self.reset()                             # far older than the last frame: a new recording
        self._inputs[camera].signalMessage(CachedImage(Header(stamp=ns_to_time(stamp_ns)), payload))
        stamps = self._stamps[camera]
        stamps.append(stamp_ns)
        stamps.sort()
        del stamps[: -self.cache_size]

    def cache_span_ns(self) -> int:
        return max(1_000_000_000, 4 * self.slop_ns)

    def latest_ns(self, camera: str) -> int | None:
        stamps = self._stamps[camera]
        return stamps[-1] if stamps else None

    def period_ns(self, camera: str) -> int | None:
        """Median interval between the camera's cached stamps."""
        stamps = self._stamps[camera]
        intervals = [b - a for a, b in zip(stamps, stamps[1:]) if b > a]
        return int(statistics.median(intervals)) if intervals else None

    def settled(self, camera: str, reference_ns: int) -> bool:
        """True when no image still to come can be nearer to ``reference_ns`` than what is
        cached: the camera already delivered one at or after the reference, or one so
        close before it that the next (one period later) would be farther away."""
        latest = self.latest_ns(camera)
        if latest is None:
            return False
        if latest >= reference_ns:
            return True
        period = self.period_ns(camera)
        return period is not None and reference_ns - latest <= period // 2

    def assemble(self, reference_ns: int, reference: Any = None) -> AssembledFrame:
        """The frame for a reference message stamped ``reference_ns``."""
        if self.last_reference_ns is not None and reference_ns < self.last_reference_ns:
            self.reset()                             # time went backwards: a new recording
        self.last_reference_ns = reference_ns
        images: dict[str, tuple[int, Any] | None] = {}
        nearest_ns: dict[str, int | None] = {}
        missing, held = [], []
        reference_time = ns_to_time(reference_ns)
        for camera, cache in self._caches.items():
            stamps = self._stamps[camera]
            nearest_ns[camera] = min(stamps, key=lambda stamp: abs(stamp - reference_ns)) if stamps else None
            # Only the slop window is queried from the Cache: its rclpy Time comparisons are slow.
            best = nearest_in_cache(cache, reference_time, self.slop_ns * 1e-9) if stamps else None
            if best is None and self.hold_ns > self.slop_ns:
                earlier = [stamp for stamp in stamps if reference_ns - self.hold_ns <= stamp < reference_ns]
                if earlier:
                    best = nearest_in_cache(cache, ns_to_time(earlier[-1]), 0.0)
                    if best is not None:
                        held.append(camera)
            if best is None:
                images[camera] = None
                missing.append(camera)
            else:
                images[camera] = (time_to_ns(best.header.stamp), best.payload)
        return AssembledFrame(reference_ns, reference, images, nearest_ns, missing, held)
