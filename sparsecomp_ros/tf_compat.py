"""tf2_ros when importable; otherwise a small API-compatible fallback.

The fallback implements what sparsecomp uses with tf2_ros's names and
semantics: ``Buffer.set_transform`` / ``set_transform_static``,
``Buffer.lookup_transform(target_frame, source_frame, time)`` and
``can_transform`` (chains through the tree, linear/slerp interpolation
between stamps, ``Time()`` = latest common time), the exceptions
``LookupException``, ``ConnectivityException``, ``ExtrapolationException``,
and ``TransformListener(buffer, node)`` on /tf and /tf_static. The ROS 2 PyPI
wheels have no tf2_ros (see docs/decisions.md).
"""
from __future__ import annotations

import bisect
from collections import defaultdict

import numpy as np
from geometry_msgs.msg import TransformStamped
from scipy.spatial.transform import Rotation, Slerp

from .conversions import transform_to_matrix

try:  # pragma: no cover - depends on the installation
    from tf2_ros import (Buffer, ConnectivityException, ExtrapolationException, LookupException,  # noqa: F401
                         TransformListener)
    USING_TF2_ROS = True
except ImportError:
    USING_TF2_ROS = False

    class LookupException(Exception):
        """A frame is unknown."""

    class ConnectivityException(Exception):
        """The two frames are not connected in the tree."""

    class ExtrapolationException(Exception):
        """The requested time is outside the buffered transforms."""

    def _to_ns(time) -> int:
        if hasattr(time, "nanoseconds"):
            return int(time.nanoseconds)
        return int(time.sec) * 1_000_000_000 + int(time.nanosec)

    class Buffer:
        """Transforms between frames over time (parent <- child edges)."""

        def __init__(self, cache_time=None, node=None):
            self.cache_ns = _to_ns(cache_time) if cache_time is not None else 10_000_000_000
            self._parent: dict[str, str] = {}
            self._static: dict[str, np.ndarray] = {}
            self._times: dict[str, list[int]] = defaultdict(list)
            self._values: dict[str, list[np.ndarray]] = defaultdict(list)

        def set_transform(self, transform: TransformStamped, authority: str) -> bool:
            child, stamp = transform.child_frame_id, _to_ns(transform.header.stamp)
            self._parent[child] = transform.header.frame_id
            times, values = self._times[child], self._values[child]
            if times and stamp < times[-1] - self.cache_ns:
                return False
            index = bisect.bisect_left(times, stamp)
            if index < len(times) and times[index] == stamp:
                values[index] = transform_to_matrix(transform.transform)
            else:
                times.insert(index, stamp)
                values.insert(index, transform_to_matrix(transform.transform))
            while times and times[0] < times[-1] - self.cache_ns:
                times.pop(0)
                values.pop(0)
            return True

        def set_transform_static(self, transform: TransformStamped, authority: str) -> bool:
            self._parent[transform.child_frame_id] = transform.header.frame_id
            self._static[transform.child_frame_id] = transform_to_matrix(transform.transform)
            return True

        def clear(self) -> None:
            self.__init__()

        def _chain(self, frame: str) -> list[str]:
            chain = [frame]
            while chain[-1] in self._parent:
                chain.append(self._parent[chain[-1]])
                if len(chain) > 100:
                    raise ConnectivityException("loop in the transform tree")
            return chain

        def _edge(self, child: str, stamp: int | None) -> np.ndarray:
            """parent <- child at stamp (None: latest)."""
            if child in self._static:
                return self._static[child]
            times, values = self._times[child], self._values[child]
            if stamp is None:
                return values[-1]
            if stamp < times[0] or stamp > times[-1]:
                raise ExtrapolationException(f"{child}: time {stamp * 1e-9:.3f} outside "
                                             f"[{times[0] * 1e-9:.3f}, {times[-1] * 1e-9:.3f}]")
            index = bisect.bisect_left(times, stamp)
            if times[index] == stamp:
                return values[index]
            t0, t1 = times[index - 1], times[index]
            alpha = (stamp - t0) / (t1 - t0)
            m0, m1 = values[index - 1], values[index]
            rotations = Rotation.from_matrix(np.stack([m0[:3, :3], m1[:3, :3]]))
            out = np.eye(4)
            out[:3, :3] = Slerp([0.0, 1.0], rotations)([alpha]).as_matrix()[0]
            out[:3, 3] = (1 - alpha) * m0[:3, 3] + alpha * m1[:3, 3]
            return out

        def _latest_common(self, frames: list[str]) -> int | None:
            dynamic = [self._times[f][-1] for f in frames if f not in self._static and self._times[f]]
            return min(dynamic) if dynamic else None

        def lookup_transform(self, target_frame: str, source_frame: str, time, timeout=None) -> TransformStamped:
            """target <- source at ``time`` (``Time()`` / 0: the latest common time)."""
            for frame in (target_frame, source_frame):
                if frame not in self._parent and frame not in self._parent.values():
                    raise LookupException(f'"{frame}" passed to lookup_transform does not exist')
            source_chain, target_chain = self._chain(source_frame), self._chain(target_frame)
            common = next((f for f in source_chain if f in target_chain), None)
            if common is None:
                raise ConnectivityException(f"{source_frame} and {target_frame} are not connected")
            up = source_chain[: source_chain.index(common)]
            down = target_chain[: target_chain.index(common)]
            stamp = _to_ns(time)
            if stamp == 0:
                stamp = self._latest_common(up + down)
            source_to_common, target_to_common = np.eye(4), np.eye(4)
            for child in up:
                source_to_common = self._edge(child, stamp) @ source_to_common
            for child in down:
                target_to_common = self._edge(child, stamp) @ target_to_common
            matrix = np.linalg.inv(target_to_common) @ source_to_common
            out = TransformStamped()
            out.header.frame_id, out.child_frame_id = target_frame, source_frame
            out.header.stamp.sec, out.header.stamp.nanosec = divmod(stamp or 0, 1_000_000_000)
            x, y, z, w = Rotation.from_matrix(matrix[:3, :3]).as_quat()
            out.transform.translation.x, out.transform.translation.y, out.transform.translation.z = matrix[:3, 3]
            out.transform.rotation.x, out.transform.rotation.y = float(x), float(y)
            out.transform.rotation.z, out.transform.rotation.w = float(z), float(w)
            return out

        def can_transform(self, target_frame: str, source_frame: str, time, timeout=None) -> bool:
            try:
                self.lookup_transform(target_frame, source_frame, time)
                return True
            except (LookupException, ConnectivityException, ExtrapolationException):
                return False

    class TransformListener:
        """Fills a Buffer from /tf and /tf_static (needs the tf2_msgs message type)."""

        def __init__(self, buffer: Buffer, node, spin_thread: bool = False, qos=None, static_qos=None):
            from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
            from tf2_msgs.msg import TFMessage
            self.buffer = buffer
            qos = qos or QoSProfile(depth=100)
            static_qos = static_qos or QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                                  history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
            self.tf_sub = node.create_subscription(TFMessage, "/tf", self._on_tf, qos)
            self.tf_static_sub = node.create_subscription(TFMessage, "/tf_static", self._on_tf_static, static_qos)

        def _on_tf(self, msg) -> None:
            for transform in msg.transforms:
                self.buffer.set_transform(transform, "default_authority")

        def _on_tf_static(self, msg) -> None:
            for transform in msg.transforms:
                self.buffer.set_transform_static(transform, "default_authority")
