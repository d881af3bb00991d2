"""message_filters when importable; otherwise a small API-compatible fallback.

The ROS 2 PyPI wheels have no message_filters. The node keeps, per camera, a
``Cache`` of recent images and takes the one nearest to a frame's reference
stamp (``nearest_in_cache``); it deliberately uses no synchroniser
(docs/ros.md). The fallback offers exactly these message_filters names:

- ``SimpleFilter``: ``registerCallback(callback, *args)`` (returns a
  connection id), ``unregisterCallback(connection)``, ``signalMessage(*msg)``.
- ``Subscriber(node, msg_type, topic, qos_profile=10, **kwargs)``: a
  ``node.create_subscription`` whose messages go to the registered callbacks;
  ``kwargs`` (``callback_group``, ...) go to ``create_subscription``;
  ``getTopic()``; other attributes are the subscription's.
- ``Cache(f=None, cache_size=1, allow_headerless=False)``: keeps the last
  ``cache_size`` messages added (by ``f``'s signal or ``add(msg)``) and
  signals each one on. Queries take rclpy ``Time`` and are inclusive:
  ``getInterval(from_stamp, to_stamp)`` (a list), ``getElemAfterTime(stamp)``
  (oldest with stamp >= ``stamp``), ``getElemBeforeTime(stamp)`` (newest with
  stamp <= ``stamp``), ``getLatestTime()`` (also under the real package's
  older spelling ``getLastestTime()``), ``getOldestTime()``, ``getLast()``;
  each returns None (or []) when nothing matches. Headerless messages are
  stamped with the ROS clock's now when ``allow_headerless``, else dropped.

Where the fallback differs from message_filters (both differences are
supersets; code written against the fallback's common subset runs on both):
its ``Cache`` keeps messages sorted by stamp (the real Python Cache keeps
arrival order: the same for in-order topics), and it is thread-safe (one
lock), since the node adds from subscription threads and reads from the
frame thread. The real ``Cache`` needs an input filter: pass one
(``Cache(SimpleFilter(), n)``) to run on both. Not offered: ``Chain``,
``TimeSynchronizer``, ``ApproximateTimeSynchronizer``, ``TimeSequencer``.

``nearest_in_cache`` is ours (not message_filters API) and works on either
Cache.
"""
from __future__ import annotations

from rclpy.clock_type import ClockType
from rclpy.duration import Duration
from rclpy.time import Time

try:  # pragma: no cover - depends on the installation
    from message_filters import Cache, SimpleFilter, Subscriber  # noqa: F401
    USING_MESSAGE_FILTERS = True
except ImportError:
    USING_MESSAGE_FILTERS = False


def _as_time(stamp) -> Time:
    """ROS-clock rclpy Time of a builtin_interfaces Time or an rclpy Time: the clock
    type of Cache's stamps (Time.from_msg), as Times of two clock types do not compare."""
    if isinstance(stamp, Time):
        return Time(nanoseconds=stamp.nanoseconds, clock_type=ClockType.ROS_TIME)
    return Time.from_msg(stamp)


def _as_duration(offset) -> Duration:
    if isinstance(offset, Duration):
        return offset
    if hasattr(offset, "sec") and hasattr(offset, "nanosec"):        # builtin_interfaces Duration
        return Duration(seconds=offset.sec, nanoseconds=offset.nanosec)
    return Duration(nanoseconds=int(round(float(offset) * 1e9)))      # seconds


def _stamp_of(msg) -> Time:
    return _as_time(msg.header.stamp)


def nearest_in_cache(cache, stamp, max_offset):
    """The cached message whose header stamp is nearest to ``stamp``, at most
    ``max_offset`` away (inclusive), or None. A tie goes to the older message.

    ``stamp``: rclpy Time or builtin_interfaces Time. ``max_offset``: rclpy
    Duration, builtin_interfaces Duration or seconds. Works on message_filters'
    Cache and ours: it reads ``getInterval`` (which neither orders for us).
    """
    stamp, max_offset = _as_time(stamp), _as_duration(max_offset)
    if max_offset.nanoseconds < 0:
        raise ValueError("max_offset must not be negative")
    earliest_ns = max(0, stamp.nanoseconds - max_offset.nanoseconds)       # rclpy Time cannot be negative
    window = cache.getInterval(Time(nanoseconds=earliest_ns, clock_type=ClockType.ROS_TIME), stamp + max_offset)
    best, best_key = None, None
    for msg in window:
        msg_ns = _stamp_of(msg).nanoseconds
        key = (abs(msg_ns - stamp.nanoseconds), msg_ns)     # nearest, then older
        if best_key is None or key < best_key:
            best, best_key = msg, key
    return best


if not USING_MESSAGE_FILTERS:
    import bisect
    import threading

    import rclpy.logging
    from rclpy.clock import ROSClock

    class SimpleFilter:
        """A message source: calls every registered callback with each message."""

        def __init__(self):
            self.callbacks: dict[int, tuple] = {}

        def registerCallback(self, callback, *args) -> int:  # noqa: N802 - message_filters' name
            """Call ``callback(*msg, *args)`` for each message; returns the connection id."""
            connection = max(self.callbacks, default=-1) + 1
            self.callbacks[connection] = (callback, args)
            return connection

        def unregisterCallback(self, connection: int) -> None:  # noqa: N802
            self.callbacks.pop(connection, None)

        def signalMessage(self, *msg) -> None:  # noqa: N802
            for callback, args in list(self.callbacks.values()):
                callback(*(msg + args))

    class Subscriber(SimpleFilter):
        """A ROS subscription as the first filter of a chain."""

        def __init__(self, node, msg_type, topic: str, qos_profile=10, **kwargs):
            SimpleFilter.__init__(self)
            self.node, self.topic = node, topic
            self.sub = node.create_subscription(msg_type, topic, self.callback, qos_profile, **kwargs)

        def callback(self, msg) -> None:
            self.signalMessage(msg)

        def getTopic(self) -> str:  # noqa: N802
            return self.topic

        def __getattr__(self, key):
            """Everything else is the subscription's (as message_filters does)."""
            if "sub" not in self.__dict__:
                raise AttributeError(key)
            return getattr(self.__dict__["sub"], key)

    class Cache(SimpleFilter):
        """The last ``cache_size`` messages, sorted by header stamp, queried by time.

        Thread-safe: ``add`` and the queries may run on different threads.
        """

        def __init__(self, f=None, cache_size: int = 1, allow_headerless: bool = False):
            SimpleFilter.__init__(self)
            self.cache_size = cache_size
            self.allow_headerless = allow_headerless
            self.cache_msgs: list = []
            self.cache_times: list[Time] = []
            self._lock = threading.Lock()
            self.incoming_connection = None
            if f is not None:
                self.connectInput(f)

        def connectInput(self, f) -> None:  # noqa: N802
            self.incoming_connection = f.registerCallback(self.add)

        def add(self, msg) -> None:
            """Insert ``msg`` by its header stamp (after equal stamps), drop the oldest
            beyond ``cache_size``, then pass ``msg`` on to the callbacks."""
            if hasattr(msg, "header") and hasattr(msg.header, "stamp"):
                stamp = _as_time(msg.header.stamp)
            elif self.allow_headerless:
                stamp = ROSClock().now()
            else:
                rclpy.logging.get_logger("message_filters_cache").warning(
                    "dropped a message without header.stamp (allow_headerless is False)",
                    throttle_duration_sec=5.0)
                return
            with self._lock:
                # bisect on nanoseconds: one clock type's Times compare, another's raise
                index = bisect.bisect_right([t.nanoseconds for t in self.cache_times], stamp.nanoseconds)
                self.cache_times.insert(index, stamp)
                self.cache_msgs.insert(index, msg)
                excess = len(self.cache_msgs) - self.cache_size
                if excess > 0:
                    del self.cache_msgs[:excess], self.cache_times[:excess]
            self.signalMessage(msg)

        def _snapshot(self) -> list[tuple[Time, object]]:
            with self._lock:
                return list(zip(self.cache_times, self.cache_msgs))

        def getInterval(self, from_stamp: Time, to_stamp: Time) -> list:  # noqa: N802
            """The messages with from_stamp <= stamp <= to_stamp, oldest first."""
            assert from_stamp <= to_stamp
            return [msg for stamp, msg in self._snapshot() if from_stamp <= stamp <= to_stamp]

        def getElemAfterTime(self, stamp: Time):  # noqa: N802
            """The oldest message with a stamp >= ``stamp``, or None."""
            return next((msg for time, msg in self._snapshot() if time >= stamp), None)

        def getElemBeforeTime(self, stamp: Time):  # noqa: N802
            """The newest message with a stamp <= ``stamp``, or None."""
            return next((msg for time, msg in reversed(self._snapshot()) if time <= stamp), None)

        def getLatestTime(self) -> Time | None:  # noqa: N802
            """The newest stamp, or None when empty."""
            with self._lock:
                return self.cache_times[-1] if self.cache_times else None

        getLastestTime = getLatestTime   # noqa: N815 - the real package's older (misspelt) name

        def getOldestTime(self) -> Time | None:  # noqa: N802
            """The oldest stamp, or None when empty."""
            with self._lock:
                return self.cache_times[0] if self.cache_times else None

        def getLast(self):  # noqa: N802
            """The newest message (the first added among equal newest stamps), or None."""
            latest = self.getLatestTime()
            return None if latest is None else self.getElemAfterTime(latest)
