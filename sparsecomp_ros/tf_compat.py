"""tf2_ros when importable; otherwise a small API-compatible fallback.

The ROS 2 PyPI wheels have no tf2_ros (see docs/decisions.md). The fallback
offers exactly these tf2_ros names, with tf2_ros's signatures and semantics:

- ``Buffer(cache_time=None, node=None)``: ``set_transform`` /
  ``set_transform_static`` (return None), ``lookup_transform(target_frame,
  source_frame, time, timeout=None)``, ``lookup_transform_full(target_frame,
  target_time, source_frame, source_time, fixed_frame, timeout=None)``,
  ``can_transform`` / ``can_transform_full`` (same arguments, plus
  ``return_debug_tuple``) and ``clear``. Lookups chain through the tree,
  interpolate between stamps (linear translation, slerp rotation), take
  ``Time()`` as the latest common time, and take rclpy ``Time`` or
  builtin_interfaces ``Time`` at full nanosecond precision. A non-zero
  ``timeout`` (rclpy ``Duration``) waits, bounded, until ``set_transform``
  from another thread makes the transform available. Thread-safe.
- The exceptions ``TransformException`` and its subclasses
  ``LookupException``, ``ConnectivityException``, ``ExtrapolationException``,
  with tf2's messages.
- ``TransformListener(buffer, node, *, qos=None, static_qos=None,
  tf_topic='/tf', tf_static_topic='/tf_static')``: fills the buffer from
  tf2_msgs/TFMessage, its subscriptions in a reentrant callback group.
  ``spin_thread=True`` is not offered (raises NotImplementedError).
- ``TransformBroadcaster(node, qos=None)`` (/tf) and
  ``StaticTransformBroadcaster(node, qos=None)`` (/tf_static,
  transient-local, re-publishes every static transform it was given, one per
  child frame), both with ``sendTransform(transform_or_list)``.

Not offered: the async lookups (``lookup_transform_async``,
``wait_for_transform_async``), ``transform()`` of stamped messages, the
tf2_frames service, clearing on a time jump, ``BufferClient``.
The ``tf2_msgs`` message type (TFMessage only) is ours where no ROS
installation provides it (``third_party/tf2_msgs``).
"""
from __future__ import annotations

try:  # pragma: no cover - depends on the installation
    from tf2_ros import (Buffer, ConnectivityException, ExtrapolationException,  # noqa: F401
                         LookupException, StaticTransformBroadcaster, TransformBroadcaster,
                         TransformException, TransformListener)
    USING_TF2_ROS = True
except ImportError:
    USING_TF2_ROS = False

if not USING_TF2_ROS:
    import bisect
    import threading
    import time as _time

    import numpy as np
    from geometry_msgs.msg import TransformStamped
    from scipy.spatial.transform import Rotation, Slerp

    from .conversions import transform_to_matrix

    _NS_PER_S = 1_000_000_000
    _MAX_GRAPH_DEPTH = 1000                       # tf2's limit on the tree's depth
    _DEFAULT_CACHE_NS = 10 * _NS_PER_S            # tf2::BUFFER_CORE_DEFAULT_CACHE_TIME

    class TransformException(Exception):
        """Base of tf2's lookup errors."""

    class LookupException(TransformException):
        """A frame is unknown (or the tree has a loop)."""

    class ConnectivityException(TransformException):
        """The two frames are not connected in the tree."""

    class ExtrapolationException(TransformException):
        """The requested time is outside the buffered transforms."""

    def _to_ns(stamp) -> int:
        """Nanoseconds of a builtin_interfaces Time/Duration or an rclpy Time/Duration
        (tf2_py accepts the same two forms, sec/nanosec first)."""
        if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
            return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)
        if hasattr(stamp, "nanoseconds"):
            return int(stamp.nanoseconds)
        raise TypeError("time must have sec and nanosec, or nanoseconds.")

    def _display_time(ns: int) -> str:
        """tf2::displayTimePoint: seconds with six decimals."""
        seconds, nanoseconds = divmod(ns, _NS_PER_S)
        return f"{seconds + 1e-9 * nanoseconds:.6f}"

    class Buffer:
        """Transforms between frames over time: one parent <- child edge per child frame.

        One lock guards the tables: TransformListener callbacks (writers) may run on
        another executor thread than the lookups (readers).
        """

        def __init__(self, cache_time=None, node=None):
            self.cache_ns = _to_ns(cache_time) if cache_time is not None else _DEFAULT_CACHE_NS
            self._lock = threading.Lock()
            # Waiting lookups sleep on this; every set_transform wakes them.
            self._new_data = threading.Condition(self._lock)
            self._reset_tables()

        def _reset_tables(self) -> None:
            self._parent: dict[str, str] = {}                 # child -> parent
            self._static: dict[str, np.ndarray] = {}          # child -> parent<-child
            self._times: dict[str, list[int]] = {}            # child -> sorted stamps (ns)
            self._values: dict[str, list[np.ndarray]] = {}    # child -> parent<-child at each stamp

        # --- filling ---------------------------------------------------------------------------
        def set_transform(self, transform: TransformStamped, authority: str) -> None:
            """Add one dynamic parent <- child sample. Like tf2, a sample older than the
            newest minus the cache time is ignored, and a sample at an existing stamp
            replaces it."""
            child, stamp = transform.child_frame_id, _to_ns(transform.header.stamp)
            matrix = transform_to_matrix(transform.transform)
            with self._new_data:
                self._parent[child] = transform.header.frame_id
                self._static.pop(child, None)
                times = self._times.setdefault(child, [])
                values = self._values.setdefault(child, [])
                if times and stamp < times[-1] - self.cache_ns:
                    return
                index = bisect.bisect_left(times, stamp)
                if index < len(times) and times[index] == stamp:
                    values[index] = matrix
                else:
                    times.insert(index, stamp)
                    values.insert(index, matrix)
                oldest_kept = bisect.bisect_left(times, times[-1] - self.cache_ns)
                del times[:oldest_kept], values[:oldest_kept]
                self._new_data.notify_all()

        def set_transform_static(self, transform: TransformStamped, authority: str) -> None:
            """Set a parent <- child edge valid at all times."""
            child = transform.child_frame_id
            matrix = transform_to_matrix(transform.transform)
            with self._new_data:
                self._parent[child] = transform.header.frame_id
                self._static[child] = matrix
                self._times.pop(child, None)
                self._values.pop(child, None)
                self._new_data.notify_all()

        def clear(self) -> None:
            """Forget every transform."""
            with self._lock:
                self._reset_tables()

        # --- lookups ---------------------------------------------------------------------------
        def lookup_transform(self, target_frame: str, source_frame: str, time, timeout=None) -> TransformStamped:
            """target <- source at ``time`` (``Time()``: the latest common time). A non-zero
            ``timeout`` first waits (bounded) for the transform to become available;
            raises tf2's exceptions if it still is not."""
            stamp = _to_ns(time)
            self._wait_until(lambda: self._can_transform_locked(target_frame, source_frame, stamp)[0], timeout)
            with self._lock:
                matrix, stamp = self._lookup_locked(target_frame, source_frame, stamp, "lookupTransform")
            return self._to_message(matrix, target_frame, source_frame, stamp)

        def lookup_transform_full(self, target_frame: str, target_time, source_frame: str, source_time,
                                  fixed_frame: str, timeout=None) -> TransformStamped:
            """target at ``target_time`` <- source at ``source_time``, through ``fixed_frame``
            (the frame assumed constant over time), as tf2's advanced API."""
            self._wait_until(lambda: self._can_transform_full_locked(
                target_frame, target_time, source_frame, source_time, fixed_frame)[0], timeout)
            with self._lock:
                for role, frame in (("target", target_frame), ("source", source_frame), ("fixed", fixed_frame)):
                    self._validate(frame, f"lookupTransform argument {role}_frame")
                fixed_from_source, _ = self._lookup_locked(fixed_frame, source_frame, _to_ns(source_time),
                                                           "lookupTransform")
                target_from_fixed, stamp = self._lookup_locked(target_frame, fixed_frame, _to_ns(target_time),
                                                               "lookupTransform")
            return self._to_message(target_from_fixed @ fixed_from_source, target_frame, source_frame, stamp)

        def can_transform(self, target_frame: str, source_frame: str, time, timeout=None,
                          return_debug_tuple: bool = False):
            """Whether target <- source at ``time`` is available, after waiting up to
            ``timeout`` for it. ``return_debug_tuple``: ``(bool, error message)``."""
            stamp = _to_ns(time)
            self._wait_until(lambda: self._can_transform_locked(target_frame, source_frame, stamp)[0], timeout)
            with self._lock:
                result = self._can_transform_locked(target_frame, source_frame, stamp)
            return result if return_debug_tuple else result[0]

        def can_transform_full(self, target_frame: str, target_time, source_frame: str, source_time,
                               fixed_frame: str, timeout=None, return_debug_tuple: bool = False):
            """``can_transform`` for ``lookup_transform_full``."""
            self._wait_until(lambda: self._can_transform_full_locked(
                target_frame, target_time, source_frame, source_time, fixed_frame)[0], timeout)
            with self._lock:
                result = self._can_transform_full_locked(target_frame, target_time, source_frame, source_time,
                                                         fixed_frame)
            return result if return_debug_tuple else result[0]

        # --- internals (the *_locked ones expect self._lock held) --------------------------------
        def _wait_until(self, available, timeout) -> None:
            """Block until ``available()`` or ``timeout`` (wall clock) has passed; no wait
            for None / zero. Woken by every set_transform."""
            timeout_ns = 0 if timeout is None else _to_ns(timeout)
            if timeout_ns <= 0:
                return
            deadline = _time.monotonic() + timeout_ns * 1e-9
            with self._new_data:
                while not available():
                    remaining = deadline - _time.monotonic()
                    if remaining <= 0:
                        return
                    self._new_data.wait(remaining)

        def _can_transform_locked(self, target_frame: str, source_frame: str, stamp: int) -> tuple[bool, str]:
            try:
                self._lookup_locked(target_frame, source_frame, stamp, "canTransform")
                return True, ""
            except TransformException as exc:
                return False, str(exc)

        def _can_transform_full_locked(self, target_frame, target_time, source_frame, source_time,
                                       fixed_frame) -> tuple[bool, str]:
            ok, error = self._can_transform_locked(fixed_frame, source_frame, _to_ns(source_time))
            if ok:
                ok, error = self._can_transform_locked(target_frame, fixed_frame, _to_ns(target_time))
            return ok, error

        def _known(self, frame: str) -> bool:
            return frame in self._parent or frame in self._parent.values()

        def _validate(self, frame: str, argument: str) -> None:
            if not self._known(frame):
                if argument.startswith("canTransform"):
                    raise LookupException(f'Invalid frame ID "{frame}" passed to {argument} - frame does not exist')
                raise LookupException(f'"{frame}" passed to {argument} does not exist. ')

        def _chain(self, frame: str) -> list[str]:
            """``frame`` and its ancestors up to the root."""
            chain = [frame]
            while chain[-1] in self._parent:
                chain.append(self._parent[chain[-1]])
                if len(chain) > _MAX_GRAPH_DEPTH:
                    raise LookupException("The tf tree is invalid because it contains a loop.")
            return chain

        def _latest_common(self, children: list[str]) -> int:
            """tf2's latest common time: the oldest of the newest stamps of the dynamic
            edges on the path; 0 when the path is all static."""
            newest = [self._times[child][-1] for child in children if child in self._times]
            return min(newest) if newest else 0

        def _edge(self, child: str, stamp: int, source_frame: str, target_frame: str) -> np.ndarray:
            """parent <- child at ``stamp`` (0: the newest)."""
            if child in self._static:
                return self._static[child]
            times, values = self._times[child], self._values[child]
            if stamp == 0:
                return values[-1]
            index = bisect.bisect_left(times, stamp)
            if index < len(times) and times[index] == stamp:
                return values[index]
            if len(times) == 1:
                error = (f"Lookup would require extrapolation at time {_display_time(stamp)}, "
                         f"but only time {_display_time(times[0])} is in the buffer")
            elif stamp > times[-1]:
                error = (f"Lookup would require extrapolation into the future.  Requested time "
                         f"{_display_time(stamp)} but the latest data is at time {_display_time(times[-1])}")
            elif stamp < times[0]:
                error = (f"Lookup would require extrapolation into the past.  Requested time "
                         f"{_display_time(stamp)} but the earliest data is at time {_display_time(times[0])}")
            else:
                return self._interpolate(times, values, index, stamp)
            # tf2 names the frames of the whole lookup, source first
            raise ExtrapolationException(f"{error}, when looking up transform from frame [{source_frame}] "
                                         f"to frame [{target_frame}]")

        @staticmethod
        def _interpolate(times: list[int], values: list[np.ndarray], index: int, stamp: int) -> np.ndarray:
            t0, t1 = times[index - 1], times[index]
            alpha = (stamp - t0) / (t1 - t0)
            m0, m1 = values[index - 1], values[index]
            rotations = Rotation.from_matrix(np.stack([m0[:3, :3], m1[:3, :3]]))
            out = np.eye(4)
            out[:3, :3] = Slerp([0.0, 1.0], rotations)([alpha]).as_matrix()[0]
            out[:3, 3] = (1 - alpha) * m0[:3, 3] + alpha * m1[:3, 3]
            return out

        def _lookup_locked(self, target_frame: str, source_frame: str, stamp: int,
                           function: str) -> tuple[np.ndarray, int]:
            """(target <- source matrix, the stamp used)."""
            if target_frame == source_frame:             # tf2: identity, even for an unknown frame
                if stamp == 0 and target_frame in self._times:
                    stamp = self._times[target_frame][-1]
                return np.eye(4), stamp
            self._validate(target_frame, f"{function} argument target_frame")
            self._validate(source_frame, f"{function} argument source_frame")
            source_chain, target_chain = self._chain(source_frame), self._chain(target_frame)
            common = next((frame for frame in source_chain if frame in target_chain), None)
            if common is None:
                raise ConnectivityException(
                    f"Could not find a connection between '{target_frame}' and '{source_frame}' because they "
                    "are not part of the same tree.Tf has two or more unconnected trees.")
            up = source_chain[: source_chain.index(common)]       # children from source up to common
            down = target_chain[: target_chain.index(common)]     # children from target up to common
            if stamp == 0:
                stamp = self._latest_common(up + down)
            common_from_source, common_from_target = np.eye(4), np.eye(4)
            for child in up:
                common_from_source = self._edge(child, stamp, source_frame, target_frame) @ common_from_source
            for child in down:
                common_from_target = self._edge(child, stamp, source_frame, target_frame) @ common_from_target
            return np.linalg.inv(common_from_target) @ common_from_source, stamp

        @staticmethod
        def _to_message(matrix: np.ndarray, target_frame: str, source_frame: str, stamp: int) -> TransformStamped:
            out = TransformStamped()
            out.header.frame_id, out.child_frame_id = target_frame, source_frame
            out.header.stamp.sec, out.header.stamp.nanosec = divmod(stamp, _NS_PER_S)
            x, y, z, w = Rotation.from_matrix(matrix[:3, :3]).as_quat()
            translation = out.transform.translation
            translation.x, translation.y, translation.z = (float(v) for v in matrix[:3, 3])
            out.transform.rotation.x, out.transform.rotation.y = float(x), float(y)
            out.transform.rotation.z, out.transform.rotation.w = float(z), float(w)
            return out

    def _tf_qos(qos, depth: int, transient_local: bool):
        """tf2_ros's default QoS for /tf (volatile) or /tf_static (transient local)."""
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile
        if qos is not None:
            return qos
        durability = DurabilityPolicy.TRANSIENT_LOCAL if transient_local else DurabilityPolicy.VOLATILE
        return QoSProfile(depth=depth, durability=durability, history=HistoryPolicy.KEEP_LAST)

    def _as_list(transform) -> list:
        """sendTransform's argument: one TransformStamped or an iterable of them."""
        if isinstance(transform, list):
            return transform
        return list(transform) if hasattr(transform, "__iter__") else [transform]

    class TransformListener:
        """Fills a Buffer from /tf and /tf_static (tf2_msgs/TFMessage)."""

        def __init__(self, buffer: Buffer, node, *, spin_thread: bool = False, qos=None, static_qos=None,
                     tf_topic: str = "/tf", tf_static_topic: str = "/tf_static"):
            from rclpy.callback_groups import ReentrantCallbackGroup
            from tf2_msgs.msg import TFMessage
            if spin_thread:
                raise NotImplementedError("the tf2_ros fallback has no spin_thread: spin the node in an executor")
            self.buffer, self.node = buffer, node
            # tf2_ros: reentrant, so a callback waiting on a transform does not block the listener
            self.group = ReentrantCallbackGroup()
            self.tf_sub = node.create_subscription(TFMessage, tf_topic, self.callback,
                                                   _tf_qos(qos, 100, False), callback_group=self.group)
            self.tf_static_sub = node.create_subscription(TFMessage, tf_static_topic, self.static_callback,
                                                          _tf_qos(static_qos, 100, True), callback_group=self.group)

        def unregister(self) -> None:
            """Destroy both subscriptions."""
            self.node.destroy_subscription(self.tf_sub)
            self.node.destroy_subscription(self.tf_static_sub)

        def callback(self, data) -> None:
            for transform in data.transforms:
                self.buffer.set_transform(transform, "default_authority")

        def static_callback(self, data) -> None:
            for transform in data.transforms:
                self.buffer.set_transform_static(transform, "default_authority")

    class TransformBroadcaster:
        """Publishes transforms on /tf."""

        def __init__(self, node, qos=None):
            from tf2_msgs.msg import TFMessage
            self._message_type = TFMessage
            self.pub_tf = node.create_publisher(TFMessage, "/tf", _tf_qos(qos, 100, False))

        def sendTransform(self, transform) -> None:  # noqa: N802 - tf2_ros's name
            """Publish one TransformStamped or a list of them in one TFMessage."""
            self.pub_tf.publish(self._message_type(transforms=_as_list(transform)))

    class StaticTransformBroadcaster:
        """Publishes static transforms on /tf_static (transient local, so late joiners
        get them). Every message carries all the static transforms sent so far, one
        per child frame (a re-sent child replaces its entry, as tf2_ros's C++ does)."""

        def __init__(self, node, qos=None):
            from tf2_msgs.msg import TFMessage
            self.pub_tf = node.create_publisher(TFMessage, "/tf_static", _tf_qos(qos, 1, True))
            self.net_message = TFMessage()
            self._lock = threading.Lock()

        def sendTransform(self, transform) -> None:  # noqa: N802 - tf2_ros's name
            """Add one TransformStamped or a list of them, then publish the whole set."""
            with self._lock:
                for new in _as_list(transform):
                    known = [i for i, t in enumerate(self.net_message.transforms)
                             if t.child_frame_id == new.child_frame_id]
                    if known:
                        self.net_message.transforms[known[0]] = new
                    else:
                        self.net_message.transforms.append(new)
                self.pub_tf.publish(self.net_message)
