"""Which frame the model runs next, and whether it keeps up (no ROS imports).

Sensors never wait for the model: their callbacks only store what arrived
and offer the newest reference (LiDAR sweep or reference camera image) to a
one-slot mailbox. The inference worker takes the newest one when it is free;
an offer that replaces one still waiting is a frame skipped because the model
was busy. ``LoadMonitor`` compares the model's processing time with the
sensor period over a window, as Autoware's processing-time diagnostics do.
The sensor period is the median interval between the references' arrivals
(monotonic time), not between their stamps: on a car both agree, and a bag
replayed at a quarter of its speed gives the node four times as long.
"""
from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

OK, WARN, ERROR = 0, 1, 2        # diagnostic_msgs/DiagnosticStatus levels


@dataclass
class FrameRequest:
    """A reference message that asks for a frame."""
    reference_ns: int            # header stamp of the reference message
    arrived_s: float             # time.monotonic() when it was offered


class LatestFrameMailbox:
    """One slot, newest wins. Not thread-safe by itself: the node uses it under its lock."""

    def __init__(self):
        self.pending: FrameRequest | None = None
        self.skipped = 0

    def offer(self, request: FrameRequest) -> FrameRequest | None:
        """Put ``request`` in the slot; returns the request it replaced (skipped), if any."""
        replaced, self.pending = self.pending, request
        if replaced is not None:
            self.skipped += 1
        return replaced

    def take(self) -> FrameRequest | None:
        request, self.pending = self.pending, None
        return request

    def clear(self) -> None:
        self.pending = None


class LoadMonitor:
    """Processing time per frame against the sensor period, over the last ``window`` frames.

    WARN when the median processing time exceeds ``warn_ratio`` sensor periods, ERROR
    when it exceeds ``error_ratio`` (the node then skips most frames)."""

    def __init__(self, window: int = 20, warn_ratio: float = 1.0, error_ratio: float = 2.0):
        if not 0 < warn_ratio <= error_ratio:
            raise ValueError(f"need 0 < warn_ratio <= error_ratio, got {warn_ratio}, {error_ratio}")
        self.warn_ratio, self.error_ratio = warn_ratio, error_ratio
        self._processing_s: deque[float] = deque(maxlen=window)
        self._reference_s: deque[float] = deque(maxlen=window + 1)
        self._outcomes: deque[bool] = deque(maxlen=window * 4)    # per offered reference: processed?

    def reference_offered(self, arrived_s: float) -> None:
        """A reference arrived at ``arrived_s`` (time.monotonic())."""
        self._reference_s.append(arrived_s)

    def frame_skipped(self) -> None:
        self._outcomes.append(False)

    def frame_processed(self, processing_s: float) -> None:
        self._processing_s.append(processing_s)
        self._outcomes.append(True)

    def sensor_period_s(self) -> float | None:
        stamps = list(self._reference_s)
        intervals = [b - a for a, b in zip(stamps, stamps[1:]) if b > a]
        return statistics.median(intervals) if intervals else None

    def status(self) -> dict:
        """level (OK/WARN/ERROR), message, and the figures behind it."""
        period = self.sensor_period_s()
        processing = sorted(self._processing_s)
        median = statistics.median(processing) if processing else None
        skipped = self._outcomes.count(False)
        figures = {"sensor_period_ms": None if period is None else period * 1e3,
                   "processing_p50_ms": None if median is None else median * 1e3,
                   "processing_max_ms": processing[-1] * 1e3 if processing else None,
                   "skipped_in_window": skipped, "offered_in_window": len(self._outcomes)}
        if period is None or median is None:
            return {"level": OK, "message": "measuring", "load_ratio": None, **figures}
        ratio = median / period
        if ratio >= self.error_ratio:
            level, message = ERROR, f"overloaded: far behind the sensors ({ratio:.1f} x the sensor period per frame)"
        elif ratio >= self.warn_ratio:
            level, message = WARN, f"overloaded: {ratio:.1f} x the sensor period per frame"
        else:
            level, message = OK, f"keeping up ({ratio:.2f} x the sensor period per frame)"
        return {"level": level, "message": message, "load_ratio": ratio, **figures}
